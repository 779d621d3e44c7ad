DROP INDEX webhook_deliveries_due_by_webhook;
ALTER TABLE webhook_deliveries DROP COLUMN redeliveries;
ALTER TABLE webhook_deliveries DROP COLUMN schedule_from;

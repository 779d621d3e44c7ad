ALTER TABLE webhook_deliveries DROP COLUMN schedule_from;

CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
DROP INDEX IF EXISTS webhook_deliveries_settled;

ALTER TABLE webhooks DROP COLUMN deleted;

-- A webhook whose deletion had begun goes now (its deliveries with it), rather than coming
-- back to life without some of them.
DELETE FROM webhooks WHERE deleted;
ALTER TABLE webhooks DROP COLUMN deleted;

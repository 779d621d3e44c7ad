-- Retention deletes settled deliveries by age, a chunk at a time, and only settled ones: an
-- index of every delivery's age made each chunk step over the pending deliveries older than
-- its cut (a receiver that stays down leaves many), on every chunk. This one holds the settled
-- deliveries alone; nothing else reads deliveries by age.
CREATE INDEX webhook_deliveries_settled ON webhook_deliveries (created_at) WHERE status <> 'pending';
DROP INDEX IF EXISTS webhook_deliveries_created;

-- A redelivery starts the retry schedule again while attempts count on: schedule_from is the
-- number of attempts made before the schedule last started (0, or the attempts at the last
-- redelivery, counting one in flight then), so the next delay is the schedule's
-- (attempts - schedule_from)-th. redeliveries counts the redeliveries: an attempt whose
-- delivery was redelivered while it was in flight finds it moved and is stored as counted
-- only, leaving the delivery due for the redelivery.
ALTER TABLE webhook_deliveries ADD COLUMN schedule_from INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhook_deliveries ADD COLUMN redeliveries INTEGER NOT NULL DEFAULT 0;
-- A claim reads each webhook's due deliveries within its share (so one webhook's backlog never
-- hides another's): one index range per webhook.
CREATE INDEX webhook_deliveries_due_by_webhook ON webhook_deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';

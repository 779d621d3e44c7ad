-- A redelivery starts the retry schedule again while attempts count on: schedule_from is the
-- number of attempts made before the schedule last started (0, or the attempts at the last
-- redelivery), so the next delay is the schedule's (attempts - schedule_from)-th. It also
-- tells an attempt that was redelivered while in flight from one that was not: a redelivery
-- during an attempt leaves the attempt's lease alone and sets schedule_from past it.
ALTER TABLE webhook_deliveries ADD COLUMN schedule_from INTEGER NOT NULL DEFAULT 0;

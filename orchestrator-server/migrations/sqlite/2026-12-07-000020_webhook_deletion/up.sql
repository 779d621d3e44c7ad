-- A webhook being deleted: marked first, in a transaction of its own, then its deliveries go a
-- chunk per transaction and the row last. Every read, enqueue and claim passes a marked
-- webhook over, so a deletion cut short (a request that timed out, a database that failed
-- between chunks) leaves no live webhook with part of its deliveries gone; the purge finishes it.
ALTER TABLE webhooks ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT false;

-- Both tables first, in the order a running replica's read of the log locks them (events,
-- then the transitions it joins): taking `transitions` for the new column and `events` only
-- later, for the index, deadlocked with such a read that had `events` and waited for
-- `transitions`, and PostgreSQL ended the migration, every time it was tried. (A replica's
-- advance writes `transitions` before `events`, so a deadlock with one stays possible in a
-- short window; the server tries a migration ended by one again.)
LOCK TABLE events, transitions IN ACCESS EXCLUSIVE MODE;
-- A history entry names the workflow.transitioned event written with it (NULL for entries
-- imported without events). One workflow's events are then found in two places: its
-- transitions' events through its history (a range of the transitions' primary key), its
-- other events through the subject index, which no longer holds transitioned events. An
-- advance thus writes the history row it always wrote and no entry in the subject index:
-- one place fewer at a random point of a growing tree.
ALTER TABLE transitions ADD COLUMN event_id BIGINT;
-- A join, not a subquery per row: `feature_id` compares byte by byte (COLLATE "C") and
-- `subject` by the database's collation, so a subquery could not use `events_subject` and
-- scanned every event for every transition (hours, with millions of each, while the new
-- column's lock held every advance). The join hashes one side once.
UPDATE transitions t SET event_id = e.id
FROM events e
WHERE e.subject = t.feature_id AND e.seq = t.seq;
DROP INDEX events_subject;
CREATE INDEX events_subject ON events (subject, id) WHERE seq IS NULL;

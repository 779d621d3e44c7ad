DROP INDEX events_subject;
CREATE INDEX events_subject ON events (subject, id);
ALTER TABLE transitions DROP COLUMN event_id;

-- A history entry names the workflow.transitioned event written with it (NULL for entries
-- imported without events). One workflow's events are then found in two places: its
-- transitions' events through its history (a range of the transitions' primary key), its
-- other events through the subject index, which no longer holds transitioned events. An
-- advance thus writes the history row it always wrote and no entry in the subject index:
-- one place fewer at a random point of a growing tree.
ALTER TABLE transitions ADD COLUMN event_id BIGINT;
UPDATE transitions SET event_id = (
    SELECT e.id FROM events e WHERE e.subject = transitions.feature_id AND e.seq = transitions.seq
);
DROP INDEX events_subject;
CREATE INDEX events_subject ON events (subject, id) WHERE seq IS NULL;

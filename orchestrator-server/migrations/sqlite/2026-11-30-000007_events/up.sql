-- The event log. Only the writer thread writes, one transaction at a time, so ids taken
-- from the one event_log row commit in id order. A transaction that rolls back gives its ids
-- back. purged_through: every id up to it was deleted by retention.
CREATE TABLE event_log (
    id INTEGER PRIMARY KEY,
    last_id BIGINT NOT NULL,
    purged_through BIGINT NOT NULL
);
INSERT INTO event_log (id, last_id, purged_through) VALUES (1, 0, 0);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    event_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    time BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_subject ON events (subject, id);
CREATE INDEX events_time ON events (time);

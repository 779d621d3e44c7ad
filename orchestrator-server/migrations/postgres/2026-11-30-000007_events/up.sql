-- The event log. Ids are handed out by the one event_log row, updated as the last write of
-- every transaction that records events: its row lock is held until commit, so transactions
-- take ids one after the other and commit in id order, and a reader never sees id N before
-- every id below N is visible (a sequence would hand out ids before commit, out of order).
-- A transaction that rolls back gives its ids back. purged_through: every id up to it was
-- deleted by retention.
CREATE TABLE event_log (
    id INTEGER PRIMARY KEY,
    last_id BIGINT NOT NULL,
    purged_through BIGINT NOT NULL
);
INSERT INTO event_log (id, last_id, purged_through) VALUES (1, 0, 0);
CREATE TABLE events (
    id BIGINT PRIMARY KEY,
    event_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    time BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_subject ON events (subject, id);
CREATE INDEX events_time ON events (time);

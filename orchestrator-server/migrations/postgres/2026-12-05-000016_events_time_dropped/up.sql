-- Retention finds its cut inside the chunk of ids it may delete (the first event made at or
-- after the cut, by the primary key), so nothing reads events by time: the index only cost
-- every event's insert, under the event log's lock.
DROP INDEX IF EXISTS events_time;

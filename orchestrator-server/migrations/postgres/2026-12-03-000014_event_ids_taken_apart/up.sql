-- Hands out the next `n` event ids and returns the last one, under the event log's row lock
-- (held until the calling transaction ends, as before). A statement that writes events calls
-- it as its last write instead of updating `event_log` itself.
--
-- Why a function: a statement that waits for another transaction's lock on the row and then
-- finds the row changed (read committed) re-checks it, and to do so PostgreSQL sets up again
-- every part of the statement's plan: for a batch's statement, its every update and insert.
-- Two batches in flight meet at this lock each time, so each batch paid that set-up while it
-- held the lock everyone else waits for. Inside the function the update is a statement of
-- its own, and its re-check sets up only itself.
CREATE FUNCTION take_event_ids(n BIGINT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    last BIGINT;
BEGIN
    UPDATE event_log SET last_id = last_id + n WHERE id = 1 RETURNING last_id INTO last;
    RETURN last;
END
$$;

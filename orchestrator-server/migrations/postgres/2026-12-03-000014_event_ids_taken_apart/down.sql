DROP FUNCTION take_event_ids(BIGINT);

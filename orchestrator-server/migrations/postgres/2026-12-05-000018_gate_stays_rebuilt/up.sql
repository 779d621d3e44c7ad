-- A workflow that was at GATE_1 when gate stays began to be kept (2026-11-30-000004) has
-- none: nobody was its author, so whoever completed the work could approve it, and its time
-- at the gate was unknown. Its stay is rebuilt from the history entry that entered the gate
-- (the last one: before that migration no entry led from GATE_1 to GATE_1): since then, made
-- by that entry's actor and whom they acted for, approved by nobody yet.
UPDATE workflows w SET gate_stay = (
    SELECT json_build_object(
        'entered_at', to_char(timestamp 'epoch' + t.at * interval '1 microsecond',
            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'authors', to_json(array_remove(ARRAY[t.actor, t.on_behalf_of], NULL)),
        'approvals', json_build_array())::text
    FROM transitions t
    WHERE t.feature_id = w.feature_id AND t.to_state = 'GATE_1'
    ORDER BY t.seq DESC
    LIMIT 1)
WHERE w.state = 'GATE_1' AND w.gate_stay IS NULL;

-- A workflow that was at GATE_1 when gate stays began to be kept (2026-11-30-000004) has
-- none: nobody was its author, so whoever completed the work could approve it, and its time
-- at the gate was unknown. Its stay is rebuilt from the history entry that entered the gate
-- (the last one: before that migration no entry led from GATE_1 to GATE_1): since then, made
-- by that entry's actor and whom they acted for, approved by nobody yet.
UPDATE workflows SET gate_stay = (
    SELECT json_object(
        'entered_at', strftime('%Y-%m-%dT%H:%M:%S', t.at / 1000000, 'unixepoch')
            || printf('.%06dZ', t.at % 1000000),
        'authors', json(CASE
            WHEN t.actor IS NULL AND t.on_behalf_of IS NULL THEN '[]'
            WHEN t.on_behalf_of IS NULL THEN json_array(t.actor)
            WHEN t.actor IS NULL THEN json_array(t.on_behalf_of)
            ELSE json_array(t.actor, t.on_behalf_of)
        END),
        'approvals', json_array())
    FROM transitions t
    WHERE t.feature_id = workflows.feature_id AND t.to_state = 'GATE_1'
    ORDER BY t.seq DESC
    LIMIT 1)
WHERE state = 'GATE_1' AND gate_stay IS NULL;

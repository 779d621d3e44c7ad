-- When a workflow's current stay at GATE_1 is due (Unix microseconds; NULL away from the gate
-- or without a deadline), and one note per stay past its deadline: the first server to see
-- it inserts the row, so every stay is noted once however many servers sweep.
ALTER TABLE workflows ADD COLUMN gate_due_at BIGINT;
CREATE INDEX workflows_gate_due_at ON workflows (gate_due_at) WHERE gate_due_at IS NOT NULL;
CREATE TABLE gate_overdue_notes (
    feature_id TEXT NOT NULL REFERENCES workflows (feature_id),
    due_at BIGINT NOT NULL,
    noted_at BIGINT NOT NULL,
    on_expiry TEXT NOT NULL,
    PRIMARY KEY (feature_id, due_at)
);

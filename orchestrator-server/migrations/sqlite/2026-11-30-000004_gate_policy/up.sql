-- A workflow's gate policy (JSON, fixed at start), its current stay at GATE_1 (JSON: since
-- when, who made the work, who approved so far; NULL elsewhere), and whether a history entry
-- was an admin's override of the gate.
ALTER TABLE workflows ADD COLUMN gate_policy TEXT NOT NULL DEFAULT '{"required_approvals":1,"allow_self_approval":false}';
ALTER TABLE workflows ADD COLUMN gate_stay TEXT;
ALTER TABLE transitions ADD COLUMN gate_override BOOLEAN NOT NULL DEFAULT FALSE;

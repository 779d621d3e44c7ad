ALTER TABLE transitions DROP COLUMN gate_override;
ALTER TABLE workflows DROP COLUMN gate_stay;
ALTER TABLE workflows DROP COLUMN gate_policy;

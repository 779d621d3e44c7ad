DROP TABLE gate_overdue_notes;
DROP INDEX workflows_gate_due_at;
ALTER TABLE workflows DROP COLUMN gate_due_at;

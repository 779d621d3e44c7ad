ALTER TABLE gate_overdue_notes ALTER COLUMN feature_id TYPE TEXT COLLATE "default";
DROP INDEX IF EXISTS consultations_reserved;

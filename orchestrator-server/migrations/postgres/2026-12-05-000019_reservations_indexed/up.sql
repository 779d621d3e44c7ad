-- The minute sweep of reservations left by a stopped server read every consultation, on
-- every replica. The few reservations, by age, in an index of their own; the sweep names its
-- predicate as a literal, so that a prepared statement's generic plan may use the index.
CREATE INDEX consultations_reserved ON consultations (created_at) WHERE visible = false;
-- Every other feature_id compares byte by byte (COLLATE "C"); this one did not, so the
-- per-second overdue sweep's NOT EXISTS against workflows could not use the notes' primary
-- key.
ALTER TABLE gate_overdue_notes ALTER COLUMN feature_id TYPE TEXT COLLATE "C";

-- The minute sweep of reservations left by a stopped server read every consultation, on
-- every replica. The few reservations, by age, in an index of their own; the sweep names its
-- predicate as a literal, so that a prepared statement's generic plan may use the index.
CREATE INDEX consultations_reserved ON consultations (created_at) WHERE visible = false;
-- Every other feature_id compares byte by byte (COLLATE "C"); this one does not, so the
-- per-second overdue sweep's NOT EXISTS against workflows (which compares in "C") could not
-- use the notes' primary key. An index in "C" serves it; altering the column instead would
-- lock `workflows` too (its foreign key's triggers are rebuilt), for every replica.
CREATE INDEX gate_overdue_notes_bytewise ON gate_overdue_notes (feature_id COLLATE "C", due_at);

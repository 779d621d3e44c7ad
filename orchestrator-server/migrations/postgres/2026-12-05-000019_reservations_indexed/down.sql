DROP INDEX IF EXISTS gate_overdue_notes_bytewise;
DROP INDEX IF EXISTS consultations_reserved;

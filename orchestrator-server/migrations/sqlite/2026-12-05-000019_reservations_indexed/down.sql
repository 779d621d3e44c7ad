DROP INDEX IF EXISTS consultations_reserved;

ALTER TABLE consultations DROP COLUMN resolved_at, DROP COLUMN human_responder, DROP COLUMN uncertainty_reasons;

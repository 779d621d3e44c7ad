ALTER TABLE consultations DROP COLUMN resolved_at;
ALTER TABLE consultations DROP COLUMN human_responder;
ALTER TABLE consultations DROP COLUMN uncertainty_reasons;

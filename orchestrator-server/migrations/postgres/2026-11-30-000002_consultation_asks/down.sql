DROP INDEX consultations_asking;
ALTER TABLE consultations DROP COLUMN error_message;
ALTER TABLE consultations DROP COLUMN error_code;
ALTER TABLE consultations DROP COLUMN visible;

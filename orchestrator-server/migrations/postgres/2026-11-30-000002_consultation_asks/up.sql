-- Consultations are stored before the Agent Hub is asked. Until the request's wait window
-- ends, the row is a reservation no reader sees (visible = false). A failed ask says why.
-- While asking and after a failure, answer is '' and confidence 0 (read back as null).
ALTER TABLE consultations ADD COLUMN visible BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE consultations ADD COLUMN error_code TEXT;
ALTER TABLE consultations ADD COLUMN error_message TEXT;
CREATE INDEX consultations_asking ON consultations (created_at) WHERE status = 'asking';

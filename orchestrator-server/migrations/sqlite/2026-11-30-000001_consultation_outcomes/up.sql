-- What the hub says besides the answer: why the expert was unsure (JSON list), who answered
-- the escalation and when (Unix microseconds).
ALTER TABLE consultations ADD COLUMN uncertainty_reasons TEXT NOT NULL DEFAULT '[]';
ALTER TABLE consultations ADD COLUMN human_responder TEXT;
ALTER TABLE consultations ADD COLUMN resolved_at BIGINT;

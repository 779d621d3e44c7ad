-- The Agent Hub session a workflow's consultations share; set by its first consultation.
ALTER TABLE workflows ADD COLUMN hub_session_id TEXT;

-- Questions a workflow asked the Agent Hub, with their answers. Timestamps: Unix microseconds.
CREATE TABLE consultations (
    id             TEXT   NOT NULL PRIMARY KEY,
    feature_id     TEXT   COLLATE "C" NOT NULL REFERENCES workflows (feature_id),
    topic          TEXT   NOT NULL,
    question       TEXT   NOT NULL,
    context        TEXT,
    answer         TEXT   NOT NULL,
    rationale      TEXT,
    confidence     BIGINT NOT NULL,
    status         TEXT   NOT NULL,        -- resolved | pending_human | needs_reroute
    escalation_id  TEXT,
    final_answer   TEXT,
    human_action   TEXT,                   -- confirm | correct | add_context
    human_response TEXT,
    asked_in_state TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE INDEX consultations_feature_id_created_at ON consultations (feature_id, created_at);

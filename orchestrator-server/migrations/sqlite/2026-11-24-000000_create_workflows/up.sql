-- Workflows: one row per feature, the current snapshot. Timestamps are Unix microseconds (UTC).
-- WITHOUT ROWID: the rows live in the primary key's B-tree, so a lookup by feature id is one
-- descent and a history insert updates one tree, not a rowid table plus an index.
CREATE TABLE workflows (
    feature_id    TEXT    NOT NULL PRIMARY KEY,
    description   TEXT    NOT NULL,
    metadata      TEXT    NOT NULL,          -- JSON object
    state         TEXT    NOT NULL,
    version       BIGINT  NOT NULL,
    rework_count  BIGINT  NOT NULL,
    time_in_state TEXT    NOT NULL,          -- JSON object: state -> whole seconds in closed stays
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    completed_at  BIGINT
) WITHOUT ROWID;

-- Listing by state in feature_id order reads this index only.
CREATE INDEX workflows_state_feature_id ON workflows (state, feature_id);

-- History: one row per accepted transition; (feature_id, seq) is unique, so a second writer
-- of the same seq cannot slip in even past the version check.
CREATE TABLE transitions (
    feature_id TEXT   NOT NULL REFERENCES workflows (feature_id),
    seq        BIGINT NOT NULL,
    from_state TEXT   NOT NULL,
    to_state   TEXT   NOT NULL,
    trigger    TEXT   NOT NULL,
    actor      TEXT,
    reason     TEXT,
    metadata   TEXT   NOT NULL,              -- JSON object
    at         BIGINT NOT NULL,
    PRIMARY KEY (feature_id, seq)
) WITHOUT ROWID;

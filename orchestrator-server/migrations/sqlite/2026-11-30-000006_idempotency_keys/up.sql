-- Idempotency keys: one row per key and scope (a principal, or '*' without principals). The
-- answer is NULL while the first request with the key is being answered (until lease_until);
-- it is stored with the change the request made, in the same transaction. Rows are purged a
-- day after created_at.
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    answer TEXT,
    created_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

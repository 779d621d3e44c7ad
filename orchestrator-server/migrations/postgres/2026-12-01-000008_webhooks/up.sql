-- Webhooks. The event log is their queue: enqueued_through is the last event a replica
-- turned into this webhook's deliveries (under the webhook row's lock), so every event
-- committed after the webhook was created becomes exactly one delivery, even across
-- restarts. event_types: space-separated type names; empty: every type.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,
    description TEXT,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    enqueued_through BIGINT NOT NULL
);
-- One event sent to one webhook. payload: the CloudEvent JSON, kept so retries do not
-- depend on the event's retention. lease_until: a replica is attempting it until then.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_status_code INTEGER,
    last_error TEXT,
    next_attempt_at BIGINT,
    delivered_at BIGINT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);

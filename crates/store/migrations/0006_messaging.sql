-- Message push: topics (event types in the catalog), subscriptions, events, and the
-- deliveries table, which is the queue itself (an outbox): ingress commits an event and
-- its deliveries in one transaction, and workers claim due deliveries with a lease.

CREATE TABLE topics (
    name                    TEXT PRIMARY KEY,
    group_name              TEXT NOT NULL REFERENCES api_groups (name),
    description             TEXT NOT NULL,
    payload_schema          TEXT,
    max_payload_bytes       BIGINT NOT NULL,
    retry_schedule          TEXT,
    state                   TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);

CREATE TABLE subscriptions (
    id                      TEXT PRIMARY KEY,
    merchant_id             TEXT NOT NULL REFERENCES merchants (id),
    app_id                  TEXT NOT NULL REFERENCES apps (id),
    topic                   TEXT NOT NULL REFERENCES topics (name),
    callback_url            TEXT,
    secret_sealed           TEXT NOT NULL,
    previous_secret_sealed  TEXT,
    previous_secret_until   BIGINT,
    strict_order            BIGINT NOT NULL,
    max_in_flight           BIGINT NOT NULL,
    timeout_ms              BIGINT NOT NULL,
    retry_schedule          TEXT,
    state                   TEXT NOT NULL,
    disabled_reason         TEXT,
    failing_since           BIGINT,
    last_success_at         BIGINT,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE INDEX subscriptions_topic ON subscriptions (topic, state);
CREATE INDEX subscriptions_merchant ON subscriptions (merchant_id, app_id);

CREATE TABLE events (
    id                      TEXT PRIMARY KEY,
    topic                   TEXT NOT NULL,
    target_merchant_id      TEXT,
    target_app_id           TEXT,
    business_key            TEXT,
    seq                     BIGINT,
    payload                 TEXT NOT NULL,
    idempotency_key         TEXT,
    source                  TEXT NOT NULL,
    created_at              BIGINT NOT NULL
);
CREATE UNIQUE INDEX events_idempotency ON events (idempotency_key);

-- The last sequence number given to each business key.
CREATE TABLE event_keys (
    business_key            TEXT PRIMARY KEY,
    seq                     BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id                      TEXT PRIMARY KEY,
    event_id                TEXT NOT NULL,
    subscription_id         TEXT NOT NULL,
    merchant_id             TEXT NOT NULL,
    app_id                  TEXT NOT NULL,
    topic                   TEXT NOT NULL,
    business_key            TEXT,
    seq                     BIGINT,
    ordered                 BIGINT NOT NULL,
    status                  TEXT NOT NULL,
    attempts                BIGINT NOT NULL,
    retry_index             BIGINT NOT NULL,
    next_at                 BIGINT,
    lease_until             BIGINT,
    last_attempt_at         BIGINT,
    last_status             BIGINT,
    last_error              TEXT,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status = 'queued';
CREATE INDEX deliveries_leased ON deliveries (lease_until, subscription_id) WHERE status = 'sending';
CREATE INDEX deliveries_app ON deliveries (app_id, id);
CREATE INDEX deliveries_merchant ON deliveries (merchant_id, created_at);
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, business_key, seq);
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE delivery_attempts (
    id                      TEXT PRIMARY KEY,
    delivery_id             TEXT NOT NULL,
    merchant_id             TEXT NOT NULL,
    at                      BIGINT NOT NULL,
    outcome                 TEXT NOT NULL,
    status_code             BIGINT,
    latency_ms              BIGINT NOT NULL,
    response                TEXT,
    error                   TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, at);

-- Mail to merchants (e.g. "your subscription was disabled"), sent by the mailer when
-- one is configured; kept either way as the record of what was said.
CREATE TABLE outbound_emails (
    id                      TEXT PRIMARY KEY,
    merchant_id             TEXT NOT NULL,
    to_address              TEXT NOT NULL,
    subject                 TEXT NOT NULL,
    body                    TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    sent_at                 BIGINT
);

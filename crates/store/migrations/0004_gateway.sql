-- The gateway: API groups and APIs (the catalog), service instances (the registry),
-- grant requests, per-call records (analytics) and business keys (data closure).

CREATE TABLE api_groups (
    name                    TEXT PRIMARY KEY,
    title                   TEXT NOT NULL,
    description             TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);

CREATE TABLE apis (
    id                      TEXT PRIMARY KEY,
    name                    TEXT NOT NULL,
    version                 TEXT NOT NULL,
    group_name              TEXT NOT NULL REFERENCES api_groups (name),
    service                 TEXT NOT NULL,
    upstream_path           TEXT NOT NULL,
    http_method             TEXT NOT NULL,
    description             TEXT NOT NULL,
    request_schema          TEXT,
    response_schema         TEXT,
    timeout_ms              BIGINT NOT NULL,
    rate_limit_per_second   BIGINT,
    needs_user              BIGINT NOT NULL,
    business_key_pointer    TEXT,
    state                   TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE grant_requests (
    id                      TEXT PRIMARY KEY,
    app_id                  TEXT NOT NULL REFERENCES apps (id),
    merchant_id             TEXT NOT NULL REFERENCES merchants (id),
    group_name              TEXT NOT NULL REFERENCES api_groups (name),
    state                   TEXT NOT NULL,
    reason                  TEXT,
    decided_by              TEXT,
    created_at              BIGINT NOT NULL,
    decided_at              BIGINT
);
CREATE INDEX grant_requests_state ON grant_requests (state, id);
CREATE INDEX grant_requests_merchant ON grant_requests (merchant_id, id);

CREATE TABLE service_instances (
    id                      TEXT PRIMARY KEY,
    service                 TEXT NOT NULL,
    version                 TEXT NOT NULL,
    host                    TEXT NOT NULL,
    port                    BIGINT NOT NULL,
    base_path               TEXT NOT NULL,
    weight                  BIGINT NOT NULL,
    metadata                TEXT NOT NULL,
    health_path             TEXT,
    registered_at           BIGINT NOT NULL,
    last_beat_at            BIGINT NOT NULL
);
CREATE INDEX service_instances_service ON service_instances (service);

CREATE TABLE api_calls (
    id                      TEXT PRIMARY KEY,
    at                      BIGINT NOT NULL,
    trace_id                TEXT NOT NULL,
    merchant_id             TEXT,
    app_id                  TEXT,
    api                     TEXT,
    status                  BIGINT NOT NULL,
    code                    BIGINT NOT NULL,
    latency_us              BIGINT NOT NULL,
    bytes_in                BIGINT NOT NULL,
    bytes_out               BIGINT NOT NULL,
    client_ip               TEXT NOT NULL
);
CREATE INDEX api_calls_merchant ON api_calls (merchant_id, id);
CREATE INDEX api_calls_trace ON api_calls (trace_id);

CREATE TABLE business_keys (
    id                      TEXT PRIMARY KEY,
    merchant_id             TEXT NOT NULL,
    app_id                  TEXT NOT NULL,
    api                     TEXT NOT NULL,
    business_key            TEXT NOT NULL,
    trace_id                TEXT NOT NULL,
    at                      BIGINT NOT NULL
);
CREATE INDEX business_keys_merchant ON business_keys (merchant_id, api, id);

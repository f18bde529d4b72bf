-- The records' own database (SQLite): the tables of calls.rs, as the main database's
-- migrations 4 and 7 define them (their comments tell the columns).
CREATE TABLE call_segments (
    id                      TEXT PRIMARY KEY,
    merchant_id             TEXT,
    first_id                TEXT NOT NULL,
    last_id                 TEXT NOT NULL,
    first_at                BIGINT NOT NULL,
    last_at                 BIGINT NOT NULL,
    calls                   BIGINT NOT NULL,
    body                    BYTEA NOT NULL
);
CREATE INDEX call_segments_merchant ON call_segments (merchant_id, last_id);
CREATE INDEX call_segments_last ON call_segments (last_id);
CREATE INDEX call_segments_time ON call_segments (first_at);

CREATE TABLE call_traces (
    trace_id                TEXT NOT NULL,
    segment_id              TEXT NOT NULL
);
CREATE INDEX call_traces_trace ON call_traces (trace_id);

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

-- Call records in segments: one row per merchant per batch of the gateway's writer (at
-- most 4,096 calls, spanning at most a minute of call times), the calls packed in `body`
-- (calls.rs tells the layout). Written once, never updated. Rows of api_calls are moved
-- into segments as this migration runs (calls::fold_rows); 0008 drops the table.
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

-- The trace ids that do not tell their own time (any a client brought that is not of the
-- gateway's making), with the segment holding their call.
CREATE TABLE call_traces (
    trace_id                TEXT NOT NULL,
    segment_id              TEXT NOT NULL
);
CREATE INDEX call_traces_trace ON call_traces (trace_id);

-- Portable by construction: only TEXT and BIGINT columns, so the same statements run on
-- SQLite and PostgreSQL. Times are Unix milliseconds; ids sort by creation time.

CREATE TABLE merchants (
    id                      TEXT PRIMARY KEY,
    name                    TEXT NOT NULL,
    state                   TEXT NOT NULL,
    company_name            TEXT,
    licence_number_sealed   TEXT,
    contact_name            TEXT,
    contact_phone_sealed    TEXT,
    business_description    TEXT,
    rejection_reason        TEXT,
    internal_user_id        TEXT,
    submitted_at            BIGINT,
    reviewed_at             BIGINT,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE INDEX merchants_state ON merchants (state, id);

CREATE TABLE accounts (
    id                      TEXT PRIMARY KEY,
    email                   TEXT NOT NULL UNIQUE,
    password_hash           TEXT NOT NULL,
    kind                    TEXT NOT NULL,
    role                    TEXT NOT NULL,
    merchant_id             TEXT REFERENCES merchants (id),
    display_name            TEXT,
    status                  TEXT NOT NULL,
    failed_logins           BIGINT NOT NULL DEFAULT 0,
    locked_until            BIGINT NOT NULL DEFAULT 0,
    password_changed_at     BIGINT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE INDEX accounts_merchant ON accounts (merchant_id, id);

CREATE TABLE sessions (
    id                      TEXT PRIMARY KEY,
    account_id              TEXT NOT NULL REFERENCES accounts (id),
    family_id               TEXT NOT NULL,
    kind                    TEXT NOT NULL,
    token_digest            TEXT NOT NULL UNIQUE,
    expires_at              BIGINT NOT NULL,
    revoked_at              BIGINT,
    created_at              BIGINT NOT NULL
);
CREATE INDEX sessions_account ON sessions (account_id);
CREATE INDEX sessions_family ON sessions (family_id);

CREATE TABLE apps (
    id                      TEXT PRIMARY KEY,
    merchant_id             TEXT NOT NULL REFERENCES merchants (id),
    name                    TEXT NOT NULL,
    integration_mode        TEXT NOT NULL,
    callback_url            TEXT,
    ip_allowlist            TEXT NOT NULL,
    rsa_public_key          TEXT,
    status                  TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE INDEX apps_merchant ON apps (merchant_id, id);

CREATE TABLE app_credentials (
    id                          TEXT PRIMARY KEY,
    app_id                      TEXT NOT NULL REFERENCES apps (id),
    merchant_id                 TEXT NOT NULL REFERENCES merchants (id),
    environment                 TEXT NOT NULL,
    app_key                     TEXT NOT NULL UNIQUE,
    secret_sealed               TEXT NOT NULL,
    secret_created_at           BIGINT NOT NULL,
    previous_secret_sealed      TEXT,
    previous_secret_expires_at  BIGINT,
    created_at                  BIGINT NOT NULL,
    UNIQUE (app_id, environment)
);

CREATE TABLE audit_log (
    id                      TEXT PRIMARY KEY,
    at                      BIGINT NOT NULL,
    actor_kind              TEXT NOT NULL,
    actor_id                TEXT,
    actor_email             TEXT,
    merchant_id             TEXT,
    action                  TEXT NOT NULL,
    target_type             TEXT NOT NULL,
    target_id               TEXT NOT NULL,
    reason                  TEXT,
    detail                  TEXT NOT NULL
);
CREATE INDEX audit_log_merchant ON audit_log (merchant_id, id);

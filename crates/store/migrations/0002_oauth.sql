-- OAuth2: clients (apps), end users, authorization codes, tokens, consents, grants.

ALTER TABLE apps ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE apps ADD COLUMN client_type TEXT NOT NULL DEFAULT 'confidential';

-- The scopes (API groups) an app may ask for. The gateway's catalog (a later issue)
-- names the groups; operators grant them.
CREATE TABLE app_grants (
    app_id                  TEXT NOT NULL REFERENCES apps (id),
    merchant_id             TEXT NOT NULL REFERENCES merchants (id),
    scope                   TEXT NOT NULL,
    granted_at              BIGINT NOT NULL,
    granted_by              TEXT,
    PRIMARY KEY (app_id, scope)
);

CREATE TABLE end_users (
    id                      TEXT PRIMARY KEY,
    email                   TEXT NOT NULL UNIQUE,
    password_hash           TEXT NOT NULL,
    status                  TEXT NOT NULL,
    failed_logins           BIGINT NOT NULL DEFAULT 0,
    locked_until            BIGINT NOT NULL DEFAULT 0,
    password_changed_at     BIGINT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);

-- An end user's sign-in to the platform (consent pages, their own account API).
CREATE TABLE user_sessions (
    id                      TEXT PRIMARY KEY,
    user_id                 TEXT NOT NULL REFERENCES end_users (id),
    token_digest            TEXT NOT NULL UNIQUE,
    expires_at              BIGINT NOT NULL,
    revoked_at              BIGINT,
    created_at              BIGINT NOT NULL
);
CREATE INDEX user_sessions_user ON user_sessions (user_id);

CREATE TABLE oauth_codes (
    id                      TEXT PRIMARY KEY,
    code_digest             TEXT NOT NULL UNIQUE,
    app_id                  TEXT NOT NULL REFERENCES apps (id),
    credential_id           TEXT NOT NULL REFERENCES app_credentials (id),
    user_id                 TEXT NOT NULL REFERENCES end_users (id),
    redirect_uri            TEXT NOT NULL,
    scope                   TEXT NOT NULL,
    code_challenge          TEXT,
    expires_at              BIGINT NOT NULL,
    used_at                 BIGINT,
    created_at              BIGINT NOT NULL
);

-- Access and refresh tokens. A refresh token and the tokens rotated from it share a
-- family; reuse of a rotated refresh token after the grace period revokes the family.
CREATE TABLE oauth_tokens (
    id                      TEXT PRIMARY KEY,
    token_digest            TEXT NOT NULL UNIQUE,
    kind                    TEXT NOT NULL,
    app_id                  TEXT NOT NULL REFERENCES apps (id),
    merchant_id             TEXT NOT NULL REFERENCES merchants (id),
    credential_id           TEXT NOT NULL REFERENCES app_credentials (id),
    environment             TEXT NOT NULL,
    user_id                 TEXT,
    scope                   TEXT NOT NULL,
    family_id               TEXT NOT NULL,
    code_id                 TEXT,
    expires_at              BIGINT NOT NULL,
    rotated_at              BIGINT,
    revoked_at              BIGINT,
    created_at              BIGINT NOT NULL
);
CREATE INDEX oauth_tokens_family ON oauth_tokens (family_id);
CREATE INDEX oauth_tokens_user ON oauth_tokens (user_id);
CREATE INDEX oauth_tokens_code ON oauth_tokens (code_id);
CREATE INDEX oauth_tokens_revoked ON oauth_tokens (revoked_at);

-- What an end user allowed an app to do, remembered so the consent page is asked once.
CREATE TABLE oauth_consents (
    user_id                 TEXT NOT NULL REFERENCES end_users (id),
    app_id                  TEXT NOT NULL REFERENCES apps (id),
    scope                   TEXT NOT NULL,
    granted_at              BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id)
);

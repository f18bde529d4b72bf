-- Signing keys for JWT access tokens (RFC 9068), published as a JWKS. The private key is
-- sealed under the master key; retired keys stay published until their tokens expire.
CREATE TABLE oauth_signing_keys (
    kid                     TEXT PRIMARY KEY,
    private_key_sealed      TEXT NOT NULL,
    public_n                TEXT NOT NULL,
    public_e                TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    retired_at              BIGINT
);

//! The OAuth2 server's tables: `end_users`, `user_sessions`, `oauth_codes`,
//! `oauth_tokens`, `oauth_consents`. Tokens and codes are stored as SHA-256 digests.

use portico_core::Error;
use sqlx::{any::AnyRow, AnyConnection};

use crate::{col, DbResult};

#[derive(Debug, Clone)]
pub struct EndUserRecord {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub status: String,
    pub failed_logins: i64,
    pub locked_until: i64,
    pub password_changed_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl EndUserRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(EndUserRecord {
            id: col(r, "id")?,
            email: col(r, "email")?,
            password_hash: col(r, "password_hash")?,
            status: col(r, "status")?,
            failed_logins: col(r, "failed_logins")?,
            locked_until: col(r, "locked_until")?,
            password_changed_at: col(r, "password_changed_at")?,
            created_at: col(r, "created_at")?,
            updated_at: col(r, "updated_at")?,
        })
    }
}

const USER_COLUMNS: &str = "id, email, password_hash, status, failed_logins, locked_until, password_changed_at, created_at, updated_at";

pub async fn insert_user(conn: &mut AnyConnection, u: &EndUserRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO end_users ({USER_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"))
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(&u.status)
        .bind(u.failed_logins)
        .bind(u.locked_until)
        .bind(u.password_changed_at)
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(conn)
        .await
        .map_err(|e| match crate::map_error(e) {
            Error::Conflict(_) => Error::validation("email", "is already registered"),
            other => other,
        })?;
    Ok(())
}

pub async fn user_by_email(conn: &mut AnyConnection, email: &str) -> Result<Option<EndUserRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM end_users WHERE email = $1")).bind(email).fetch_optional(conn).await.db()?;
    row.as_ref().map(EndUserRecord::from_row).transpose()
}

/// Counts a failed sign-in, locking at `lock_after` in a row; returns the new count.
pub async fn record_failed_user_login(conn: &mut AnyConnection, id: &str, now: i64, lock_after: i64, lock_ms: i64) -> Result<i64, Error> {
    crate::count_failed_sign_in(conn, "end_users", id, now, lock_after, lock_ms).await
}

pub async fn reset_failed_user_logins(conn: &mut AnyConnection, id: &str) -> Result<(), Error> {
    crate::clear_failed_sign_ins(conn, "end_users", id).await
}

pub async fn set_user_password(conn: &mut AnyConnection, id: &str, hash: &str, now: i64) -> Result<(), Error> {
    sqlx::query("UPDATE end_users SET password_hash = $1, password_changed_at = $2, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

pub async fn insert_user_session(conn: &mut AnyConnection, id: &str, user_id: &str, digest: &str, expires_at: i64, now: i64) -> Result<(), Error> {
    sqlx::query("INSERT INTO user_sessions (id, user_id, token_digest, expires_at, revoked_at, created_at) VALUES ($1,$2,$3,$4,NULL,$5)")
        .bind(id)
        .bind(user_id)
        .bind(digest)
        .bind(expires_at)
        .bind(now)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// The live session with this digest and its user.
pub async fn user_session(conn: &mut AnyConnection, digest: &str, now: i64) -> Result<Option<EndUserRecord>, Error> {
    let row = sqlx::query(
        "SELECT u.id, u.email, u.password_hash, u.status, u.failed_logins, u.locked_until, u.password_changed_at, u.created_at, u.updated_at \
         FROM user_sessions s JOIN end_users u ON u.id = s.user_id \
         WHERE s.token_digest = $1 AND s.revoked_at IS NULL AND s.expires_at > $2",
    )
    .bind(digest)
    .bind(now)
    .fetch_optional(conn)
    .await
    .db()?;
    row.as_ref().map(EndUserRecord::from_row).transpose()
}

pub async fn revoke_user_session(conn: &mut AnyConnection, digest: &str, now: i64) -> Result<(), Error> {
    sqlx::query("UPDATE user_sessions SET revoked_at = $1 WHERE token_digest = $2 AND revoked_at IS NULL").bind(now).bind(digest).execute(conn).await.db()?;
    Ok(())
}

/// Ends every session and every OAuth2 token of a user (password change).
pub async fn revoke_everything_of_user(conn: &mut AnyConnection, user_id: &str, now: i64) -> Result<Vec<String>, Error> {
    sqlx::query("UPDATE user_sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL").bind(now).bind(user_id).execute(&mut *conn).await.db()?;
    revoke_tokens_where(conn, "user_id = $2", user_id, now).await
}

#[derive(Debug, Clone)]
pub struct CodeRecord {
    pub id: String,
    pub code_digest: String,
    pub app_id: String,
    pub credential_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub code_challenge: Option<String>,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub created_at: i64,
}

const CODE_COLUMNS: &str = "id, code_digest, app_id, credential_id, user_id, redirect_uri, scope, code_challenge, expires_at, used_at, created_at";

impl CodeRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(CodeRecord {
            id: col(r, "id")?,
            code_digest: col(r, "code_digest")?,
            app_id: col(r, "app_id")?,
            credential_id: col(r, "credential_id")?,
            user_id: col(r, "user_id")?,
            redirect_uri: col(r, "redirect_uri")?,
            scope: col(r, "scope")?,
            code_challenge: col(r, "code_challenge")?,
            expires_at: col(r, "expires_at")?,
            used_at: col(r, "used_at")?,
            created_at: col(r, "created_at")?,
        })
    }
}

pub async fn insert_code(conn: &mut AnyConnection, c: &CodeRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO oauth_codes ({CODE_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"))
        .bind(&c.id)
        .bind(&c.code_digest)
        .bind(&c.app_id)
        .bind(&c.credential_id)
        .bind(&c.user_id)
        .bind(&c.redirect_uri)
        .bind(&c.scope)
        .bind(&c.code_challenge)
        .bind(c.expires_at)
        .bind(c.used_at)
        .bind(c.created_at)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

pub async fn code(conn: &mut AnyConnection, digest: &str) -> Result<Option<CodeRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {CODE_COLUMNS} FROM oauth_codes WHERE code_digest = $1")).bind(digest).fetch_optional(conn).await.db()?;
    row.as_ref().map(CodeRecord::from_row).transpose()
}

/// Marks a code used; true only for the one caller that used it first.
pub async fn use_code(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, Error> {
    let done = sqlx::query("UPDATE oauth_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL").bind(now).bind(id).execute(conn).await.db()?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub token_digest: String,
    /// `access` or `refresh`.
    pub kind: String,
    pub app_id: String,
    pub merchant_id: String,
    pub credential_id: String,
    pub environment: String,
    pub user_id: Option<String>,
    pub scope: String,
    pub family_id: String,
    pub code_id: Option<String>,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

const TOKEN_COLUMNS: &str = "id, token_digest, kind, app_id, merchant_id, credential_id, environment, user_id, scope, family_id, \
    code_id, expires_at, rotated_at, revoked_at, created_at";

impl TokenRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(TokenRecord {
            id: col(r, "id")?,
            token_digest: col(r, "token_digest")?,
            kind: col(r, "kind")?,
            app_id: col(r, "app_id")?,
            merchant_id: col(r, "merchant_id")?,
            credential_id: col(r, "credential_id")?,
            environment: col(r, "environment")?,
            user_id: col(r, "user_id")?,
            scope: col(r, "scope")?,
            family_id: col(r, "family_id")?,
            code_id: col(r, "code_id")?,
            expires_at: col(r, "expires_at")?,
            rotated_at: col(r, "rotated_at")?,
            revoked_at: col(r, "revoked_at")?,
            created_at: col(r, "created_at")?,
        })
    }
}

pub async fn insert_token(conn: &mut AnyConnection, t: &TokenRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO oauth_tokens ({TOKEN_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)"))
        .bind(&t.id)
        .bind(&t.token_digest)
        .bind(&t.kind)
        .bind(&t.app_id)
        .bind(&t.merchant_id)
        .bind(&t.credential_id)
        .bind(&t.environment)
        .bind(&t.user_id)
        .bind(&t.scope)
        .bind(&t.family_id)
        .bind(&t.code_id)
        .bind(t.expires_at)
        .bind(t.rotated_at)
        .bind(t.revoked_at)
        .bind(t.created_at)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

pub async fn token(conn: &mut AnyConnection, digest: &str) -> Result<Option<TokenRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM oauth_tokens WHERE token_digest = $1")).bind(digest).fetch_optional(conn).await.db()?;
    row.as_ref().map(TokenRecord::from_row).transpose()
}

/// Marks a refresh token rotated; true only for the first caller.
pub async fn mark_rotated(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, Error> {
    let done = sqlx::query("UPDATE oauth_tokens SET rotated_at = $1 WHERE id = $2 AND rotated_at IS NULL AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .db()?;
    Ok(done.rows_affected() == 1)
}

/// Revokes one token; returns the digests revoked (for cache eviction).
pub async fn revoke_token(conn: &mut AnyConnection, id: &str, now: i64) -> Result<Vec<String>, Error> {
    revoke_tokens_where(conn, "id = $2", id, now).await
}

/// Revokes every token of a family.
pub async fn revoke_family(conn: &mut AnyConnection, family_id: &str, now: i64) -> Result<Vec<String>, Error> {
    revoke_tokens_where(conn, "family_id = $2", family_id, now).await
}

/// Revokes every token issued from an authorization code (the code was replayed).
pub async fn revoke_by_code(conn: &mut AnyConnection, code_id: &str, now: i64) -> Result<Vec<String>, Error> {
    revoke_tokens_where(conn, "code_id = $2", code_id, now).await
}

/// Revokes every token an end user gave an app.
pub async fn revoke_user_app(conn: &mut AnyConnection, user_id: &str, app_id: &str, now: i64) -> Result<Vec<String>, Error> {
    let rows = sqlx::query("SELECT token_digest FROM oauth_tokens WHERE user_id = $1 AND app_id = $2 AND revoked_at IS NULL")
        .bind(user_id)
        .bind(app_id)
        .fetch_all(&mut *conn)
        .await
        .db()?;
    sqlx::query("UPDATE oauth_tokens SET revoked_at = $1 WHERE user_id = $2 AND app_id = $3 AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .bind(app_id)
        .execute(conn)
        .await
        .db()?;
    rows.iter().map(|r| col(r, "token_digest")).collect()
}

async fn revoke_tokens_where(conn: &mut AnyConnection, condition: &str, value: &str, now: i64) -> Result<Vec<String>, Error> {
    let rows = sqlx::query(&format!("SELECT token_digest FROM oauth_tokens WHERE {condition} AND revoked_at IS NULL AND $1 = $1"))
        .bind(now)
        .bind(value)
        .fetch_all(&mut *conn)
        .await
        .db()?;
    sqlx::query(&format!("UPDATE oauth_tokens SET revoked_at = $1 WHERE {condition} AND revoked_at IS NULL"))
        .bind(now)
        .bind(value)
        .execute(conn)
        .await
        .db()?;
    rows.iter().map(|r| col(r, "token_digest")).collect()
}

/// Digests of tokens revoked at or after `since`, for other instances' caches.
pub async fn revoked_since(conn: &mut AnyConnection, since: i64) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query("SELECT token_digest, revoked_at FROM oauth_tokens WHERE revoked_at >= $1").bind(since).fetch_all(conn).await.db()?;
    rows.iter().map(|r| Ok((col(r, "token_digest")?, col(r, "revoked_at")?))).collect()
}

pub async fn consent(conn: &mut AnyConnection, user_id: &str, app_id: &str) -> Result<Option<String>, Error> {
    let row = sqlx::query("SELECT scope FROM oauth_consents WHERE user_id = $1 AND app_id = $2").bind(user_id).bind(app_id).fetch_optional(conn).await.db()?;
    row.as_ref().map(|r| col(r, "scope")).transpose()
}

/// Remembers (or widens) what a user allowed an app.
pub async fn save_consent(conn: &mut AnyConnection, user_id: &str, app_id: &str, scope: &str, now: i64) -> Result<(), Error> {
    let done = sqlx::query("UPDATE oauth_consents SET scope = $1, granted_at = $2 WHERE user_id = $3 AND app_id = $4")
        .bind(scope)
        .bind(now)
        .bind(user_id)
        .bind(app_id)
        .execute(&mut *conn)
        .await
        .db()?;
    if done.rows_affected() == 0 {
        sqlx::query("INSERT INTO oauth_consents (user_id, app_id, scope, granted_at) VALUES ($1, $2, $3, $4)")
            .bind(user_id)
            .bind(app_id)
            .bind(scope)
            .bind(now)
            .execute(conn)
            .await
            .db()?;
    }
    Ok(())
}

/// A user's consents with each app's name and merchant name.
pub async fn consents_of(conn: &mut AnyConnection, user_id: &str) -> Result<Vec<(String, String, String, String, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT c.app_id, a.name AS app_name, m.name AS merchant_name, c.scope, c.granted_at FROM oauth_consents c \
         JOIN apps a ON a.id = c.app_id JOIN merchants m ON m.id = a.merchant_id WHERE c.user_id = $1 ORDER BY c.granted_at DESC",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter().map(|r| Ok((col(r, "app_id")?, col(r, "app_name")?, col(r, "merchant_name")?, col(r, "scope")?, col(r, "granted_at")?))).collect()
}

pub async fn delete_consent(conn: &mut AnyConnection, user_id: &str, app_id: &str) -> Result<bool, Error> {
    let done = sqlx::query("DELETE FROM oauth_consents WHERE user_id = $1 AND app_id = $2").bind(user_id).bind(app_id).execute(conn).await.db()?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub private_key_sealed: String,
    pub public_n: String,
    pub public_e: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

pub async fn insert_signing_key(conn: &mut AnyConnection, k: &SigningKeyRecord) -> Result<(), Error> {
    sqlx::query("INSERT INTO oauth_signing_keys (kid, private_key_sealed, public_n, public_e, created_at, retired_at) VALUES ($1,$2,$3,$4,$5,$6)")
        .bind(&k.kid)
        .bind(&k.private_key_sealed)
        .bind(&k.public_n)
        .bind(&k.public_e)
        .bind(k.created_at)
        .bind(k.retired_at)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// Keys not retired before `published_after`, newest first.
pub async fn signing_keys(conn: &mut AnyConnection, published_after: i64) -> Result<Vec<SigningKeyRecord>, Error> {
    let rows = sqlx::query(
        "SELECT kid, private_key_sealed, public_n, public_e, created_at, retired_at FROM oauth_signing_keys \
         WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC",
    )
    .bind(published_after)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter()
        .map(|r| {
            Ok(SigningKeyRecord {
                kid: col(r, "kid")?,
                private_key_sealed: col(r, "private_key_sealed")?,
                public_n: col(r, "public_n")?,
                public_e: col(r, "public_e")?,
                created_at: col(r, "created_at")?,
                retired_at: col(r, "retired_at")?,
            })
        })
        .collect()
}

/// Retires every active key but `kid`.
pub async fn retire_signing_keys_except(conn: &mut AnyConnection, kid: &str, now: i64) -> Result<(), Error> {
    sqlx::query("UPDATE oauth_signing_keys SET retired_at = $1 WHERE retired_at IS NULL AND kid <> $2").bind(now).bind(kid).execute(conn).await.db()?;
    Ok(())
}

//! `sessions`: console sign-ins. Each sign-in is a family: an access token, a refresh
//! token and, for browsers, a cookie session. Only SHA-256 digests of the tokens are
//! stored. Refreshing rotates the family's tokens; revoking a family ends all of them.

use portico_core::Error;
use sqlx::{any::AnyRow, AnyConnection};

use crate::{accounts::AccountRecord, col, DbResult};

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub account_id: String,
    pub family_id: String,
    pub kind: String,
    pub token_digest: String,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

impl SessionRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(SessionRecord {
            id: col(r, "s_id")?,
            account_id: col(r, "account_id")?,
            family_id: col(r, "family_id")?,
            kind: col(r, "s_kind")?,
            token_digest: col(r, "token_digest")?,
            expires_at: col(r, "expires_at")?,
            revoked_at: col(r, "revoked_at")?,
            created_at: col(r, "s_created_at")?,
        })
    }
}

pub async fn insert(conn: &mut AnyConnection, s: &SessionRecord) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO sessions (id, account_id, family_id, kind, token_digest, expires_at, revoked_at, created_at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
    )
    .bind(&s.id)
    .bind(&s.account_id)
    .bind(&s.family_id)
    .bind(&s.kind)
    .bind(&s.token_digest)
    .bind(s.expires_at)
    .bind(s.revoked_at)
    .bind(s.created_at)
    .execute(conn)
    .await
    .db()?;
    Ok(())
}

/// The session with this token digest and its account, whatever their state.
pub async fn find(conn: &mut AnyConnection, token_digest: &str) -> Result<Option<(SessionRecord, AccountRecord)>, Error> {
    let row = sqlx::query(
        "SELECT s.id AS s_id, s.account_id, s.family_id, s.kind AS s_kind, s.token_digest, s.expires_at, s.revoked_at, \
         s.created_at AS s_created_at, a.id, a.email, a.password_hash, a.kind, a.role, a.merchant_id, a.display_name, \
         a.status, a.failed_logins, a.locked_until, a.password_changed_at, a.created_at, a.updated_at \
         FROM sessions s JOIN accounts a ON a.id = s.account_id WHERE s.token_digest = $1",
    )
    .bind(token_digest)
    .fetch_optional(conn)
    .await
    .db()?;
    match row {
        Some(r) => Ok(Some((SessionRecord::from_row(&r)?, AccountRecord::from_row(&r)?))),
        None => Ok(None),
    }
}

/// Revokes one session if it is still live; true only for the caller that revoked it,
/// which makes refresh-token rotation atomic under concurrent use.
pub async fn revoke_one(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, Error> {
    let done = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .db()?;
    Ok(done.rows_affected() == 1)
}

pub async fn revoke_family(conn: &mut AnyConnection, family_id: &str, now: i64) -> Result<(), Error> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(family_id)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// Ends every session of an account (password change, account disabled).
pub async fn revoke_account(conn: &mut AnyConnection, account_id: &str, now: i64) -> Result<(), Error> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(account_id)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// Deletes sessions that expired before `before`; returns how many.
pub async fn purge_expired(conn: &mut AnyConnection, before: i64) -> Result<u64, Error> {
    let done = sqlx::query("DELETE FROM sessions WHERE expires_at < $1").bind(before).execute(conn).await.db()?;
    Ok(done.rows_affected())
}

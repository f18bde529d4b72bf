//! `accounts`: everyone who signs in to the console, operators (no merchant) and merchant
//! members (owner, developer) alike. Emails are unique across both.

use portico_core::{page::PageRequest, Error};
use sqlx::{any::AnyRow, AnyConnection};

use crate::{col, DbResult};

#[derive(Debug, Clone)]
pub struct AccountRecord {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub kind: String,
    pub role: String,
    pub merchant_id: Option<String>,
    pub display_name: Option<String>,
    pub status: String,
    pub failed_logins: i64,
    pub locked_until: i64,
    pub password_changed_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, email, password_hash, kind, role, merchant_id, display_name, status, failed_logins, \
    locked_until, password_changed_at, created_at, updated_at";

impl AccountRecord {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(AccountRecord {
            id: col(r, "id")?,
            email: col(r, "email")?,
            password_hash: col(r, "password_hash")?,
            kind: col(r, "kind")?,
            role: col(r, "role")?,
            merchant_id: col(r, "merchant_id")?,
            display_name: col(r, "display_name")?,
            status: col(r, "status")?,
            failed_logins: col(r, "failed_logins")?,
            locked_until: col(r, "locked_until")?,
            password_changed_at: col(r, "password_changed_at")?,
            created_at: col(r, "created_at")?,
            updated_at: col(r, "updated_at")?,
        })
    }
}

pub async fn insert(conn: &mut AnyConnection, a: &AccountRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO accounts ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)"))
        .bind(&a.id)
        .bind(&a.email)
        .bind(&a.password_hash)
        .bind(&a.kind)
        .bind(&a.role)
        .bind(&a.merchant_id)
        .bind(&a.display_name)
        .bind(&a.status)
        .bind(a.failed_logins)
        .bind(a.locked_until)
        .bind(a.password_changed_at)
        .bind(a.created_at)
        .bind(a.updated_at)
        .execute(conn)
        .await
        .map_err(|e| match crate::map_error(e) {
            Error::Conflict(_) => Error::validation("email", "is already registered"),
            other => other,
        })?;
    Ok(())
}

pub async fn find_by_email(conn: &mut AnyConnection, email: &str) -> Result<Option<AccountRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts WHERE email = $1")).bind(email).fetch_optional(conn).await.db()?;
    row.as_ref().map(AccountRecord::from_row).transpose()
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<AccountRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts WHERE id = $1")).bind(id).fetch_optional(conn).await.db()?;
    row.as_ref().map(AccountRecord::from_row).transpose()
}

/// A merchant's members, one page.
pub async fn list_members(conn: &mut AnyConnection, merchant_id: &str, page: &PageRequest) -> Result<Vec<AccountRecord>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE merchant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(merchant_id)
    .bind(page.after.as_deref())
    .bind(page.limit as i64 + 1)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter().map(AccountRecord::from_row).collect()
}

/// Platform operators, one page.
pub async fn list_operators(conn: &mut AnyConnection, page: &PageRequest) -> Result<Vec<AccountRecord>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE kind = 'operator' AND ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
    ))
    .bind(page.after.as_deref())
    .bind(page.limit as i64 + 1)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter().map(AccountRecord::from_row).collect()
}

pub async fn count_by_role(conn: &mut AnyConnection, role: &str) -> Result<i64, Error> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM accounts WHERE role = $1").bind(role).fetch_one(conn).await.db()?;
    col(&row, "n")
}

/// Counts a failed sign-in; at `lock_after` failures in a row the account locks until
/// `now + lock_ms`. Returns the new failure count.
pub async fn record_failed_login(conn: &mut AnyConnection, id: &str, now: i64, lock_after: i64, lock_ms: i64) -> Result<i64, Error> {
    crate::count_failed_sign_in(conn, "accounts", id, now, lock_after, lock_ms).await
}

/// A successful sign-in clears the failure count (and an expired lock).
pub async fn reset_failed_logins(conn: &mut AnyConnection, id: &str) -> Result<(), Error> {
    crate::clear_failed_sign_ins(conn, "accounts", id).await
}

pub async fn set_password(conn: &mut AnyConnection, id: &str, password_hash: &str, now: i64) -> Result<(), Error> {
    sqlx::query("UPDATE accounts SET password_hash = $1, password_changed_at = $2, updated_at = $2 WHERE id = $3")
        .bind(password_hash)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// Enables or disables a member of `merchant_id`; returns whether a row changed.
pub async fn set_member_status(conn: &mut AnyConnection, merchant_id: &str, id: &str, status: &str, now: i64) -> Result<bool, Error> {
    let done = sqlx::query("UPDATE accounts SET status = $1, updated_at = $2 WHERE id = $3 AND merchant_id = $4")
        .bind(status)
        .bind(now)
        .bind(id)
        .bind(merchant_id)
        .execute(conn)
        .await
        .db()?;
    Ok(done.rows_affected() == 1)
}

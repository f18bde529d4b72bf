//! `audit_log`: who did what to which object, when and why. Written in the same
//! transaction as the change it records, so there is never a change without its entry.

use portico_core::{page::PageRequest, Error};
use sqlx::{any::AnyRow, AnyConnection};

use crate::{col, DbResult};

#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: String,
    pub at: i64,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub actor_email: Option<String>,
    pub merchant_id: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub reason: Option<String>,
    /// A JSON object with details of the change (never secrets).
    pub detail: String,
}

const COLUMNS: &str = "id, at, actor_kind, actor_id, actor_email, merchant_id, action, target_type, target_id, reason, detail";

impl AuditRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(AuditRecord {
            id: col(r, "id")?,
            at: col(r, "at")?,
            actor_kind: col(r, "actor_kind")?,
            actor_id: col(r, "actor_id")?,
            actor_email: col(r, "actor_email")?,
            merchant_id: col(r, "merchant_id")?,
            action: col(r, "action")?,
            target_type: col(r, "target_type")?,
            target_id: col(r, "target_id")?,
            reason: col(r, "reason")?,
            detail: col(r, "detail")?,
        })
    }
}

pub async fn insert(conn: &mut AnyConnection, e: &AuditRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO audit_log ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"))
        .bind(&e.id)
        .bind(e.at)
        .bind(&e.actor_kind)
        .bind(&e.actor_id)
        .bind(&e.actor_email)
        .bind(&e.merchant_id)
        .bind(&e.action)
        .bind(&e.target_type)
        .bind(&e.target_id)
        .bind(&e.reason)
        .bind(&e.detail)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// Entries newest first; only one merchant's when `merchant_id` is given.
pub async fn list(conn: &mut AnyConnection, merchant_id: Option<&str>, page: &PageRequest) -> Result<Vec<AuditRecord>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE ($1 IS NULL OR merchant_id = $1) AND ($2 IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(merchant_id)
    .bind(page.after.as_deref())
    .bind(page.limit as i64 + 1)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter().map(AuditRecord::from_row).collect()
}

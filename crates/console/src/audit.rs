//! The audit log: every state change of merchants, members and apps, with actor, time
//! and reason, written in the transaction of the change itself.

use portico_core::{
    id::new_id,
    page::{Page, PageRequest},
    time::{now_ms, rfc3339},
    Error,
};
use portico_store::{audit::AuditRecord, Conn};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{Platform, Principal, Role};

/// One audit entry on the wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub at: String,
    /// `operator`, `member`, `cli` or `system`.
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub actor_email: Option<String>,
    pub merchant_id: Option<String>,
    /// What happened, e.g. `merchant.approved`, `app.secret_rotated`.
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// What an audit entry records, besides who and when.
pub(crate) struct Event<'a> {
    pub merchant_id: Option<&'a str>,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub reason: Option<&'a str>,
    pub detail: Value,
}

pub(crate) async fn record(conn: &mut Conn, actor: &Principal, e: Event<'_>) -> Result<(), Error> {
    let (actor_kind, actor_id, actor_email) = actor.audit_actor();
    portico_store::audit::insert(
        conn,
        &AuditRecord {
            id: new_id("aud"),
            at: now_ms(),
            actor_kind: actor_kind.to_string(),
            actor_id,
            actor_email,
            merchant_id: e.merchant_id.map(str::to_string),
            action: e.action.to_string(),
            target_type: e.target_type.to_string(),
            target_id: e.target_id.to_string(),
            reason: e.reason.map(str::to_string),
            detail: e.detail.to_string(),
        },
    )
    .await
}

impl Platform {
    /// The audit log, newest first: the whole platform's for operators, or one merchant's
    /// (operators, and that merchant's owner).
    pub async fn audit_log(&self, actor: &Principal, merchant_id: Option<&str>, page: &PageRequest) -> Result<Page<AuditEntry>, Error> {
        match merchant_id {
            Some(m) => actor.can_administer(m).or_else(|e| if actor.is_operator() { Ok(()) } else { Err(e) })?,
            None => actor.require(&[Role::BusinessManager, Role::ProductManager], "read the platform audit log")?,
        }
        let mut conn = self.store().read().await?;
        let rows = portico_store::audit::list(&mut conn, merchant_id, page).await?;
        let page = Page::from_rows(rows, page.limit, |r| r.id.clone());
        Ok(page.map(|r| AuditEntry {
            id: r.id,
            at: rfc3339(r.at),
            actor_kind: r.actor_kind,
            actor_id: r.actor_id,
            actor_email: r.actor_email,
            merchant_id: r.merchant_id,
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            reason: r.reason,
            detail: serde_json::from_str(&r.detail).unwrap_or(Value::Null),
        }))
    }
}

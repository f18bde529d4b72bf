//! Merchants (tenants) and their onboarding: sign-up, company documents, review, and the
//! state machine
//!
//! ```text
//! draft ──submit──▶ pending_review ──approve──▶ active ──suspend──▶ suspended
//!   ▲                    │                        ▲                    │
//!   └──(edit, resubmit)◀─┴─reject──▶ rejected     └─────reactivate─────┘
//! ```
//!
//! Every transition is written to the audit log with actor, time and reason. Licence
//! number and contact phone are sealed under the master key and shown masked, except to
//! the merchant's own members and to business managers.

use portico_auth::{master_key::mask, password};
use portico_core::{
    domain::{Email, Password, Text},
    id::new_id,
    page::{Page, PageRequest},
    time::{now_ms, rfc3339},
    Error,
};
use portico_store::{
    accounts::{self, AccountRecord},
    merchants::{self, MerchantRecord, Stamp},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::{
    audit::{self, Event},
    platform::blocking,
    sessions::AccountOut,
    Platform, Principal, Role,
};

/// The onboarding states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MerchantState {
    Draft,
    PendingReview,
    Active,
    Rejected,
    Suspended,
}

impl MerchantState {
    pub fn as_str(self) -> &'static str {
        match self {
            MerchantState::Draft => "draft",
            MerchantState::PendingReview => "pending_review",
            MerchantState::Active => "active",
            MerchantState::Rejected => "rejected",
            MerchantState::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<MerchantState> {
        Some(match s {
            "draft" => MerchantState::Draft,
            "pending_review" => MerchantState::PendingReview,
            "active" => MerchantState::Active,
            "rejected" => MerchantState::Rejected,
            "suspended" => MerchantState::Suspended,
            _ => return None,
        })
    }
}

/// A new merchant and its owner's sign-in.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignUpIn {
    pub email: String,
    pub password: String,
    /// The merchant's display name (the company name comes with the documents).
    pub merchant_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignUpOut {
    pub merchant: MerchantOut,
    pub account: AccountOut,
}

/// Company documents for onboarding review.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DocumentsIn {
    pub company_name: String,
    /// Business licence number (e.g. the 18-character unified social credit code).
    pub licence_number: String,
    pub contact_name: String,
    pub contact_phone: String,
    pub business_description: String,
}

/// A reason for a review decision.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ReasonIn {
    pub reason: Option<String>,
}

/// Binds the merchant to a user id of an internal system (seed 000 `innerId`); `null`
/// removes the binding.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InternalUserIn {
    pub internal_user_id: Option<String>,
}

/// A new member of a merchant.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MemberIn {
    pub email: String,
    /// The member's first password; they can change it after signing in.
    pub password: String,
    /// `owner` or `developer`.
    pub role: Role,
    pub display_name: Option<String>,
}

/// A merchant on the wire. Sensitive fields are masked unless the reader may see them.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantOut {
    pub id: String,
    pub name: String,
    pub state: MerchantState,
    pub company_name: Option<String>,
    pub licence_number: Option<String>,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    pub business_description: Option<String>,
    /// Whether `licence_number` and `contact_phone` are masked for this reader.
    pub sensitive_masked: bool,
    /// Why the last review rejected the documents, or why the merchant was suspended.
    pub rejection_reason: Option<String>,
    pub internal_user_id: Option<String>,
    pub submitted_at: Option<String>,
    pub reviewed_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Platform {
    /// Public sign-up: a draft merchant and its owner account, in one transaction.
    pub async fn sign_up(&self, input: SignUpIn) -> Result<SignUpOut, Error> {
        let email = Email::parse(&input.email)?;
        let password = Password::parse(&input.password)?;
        let name = Text::parse("merchant_name", &input.merchant_name, 100)?;
        let hash = blocking(move || password::hash(password.expose())).await?;
        let now = now_ms();
        let merchant = MerchantRecord {
            id: new_id("mch"),
            name: name.into_string(),
            state: MerchantState::Draft.as_str().into(),
            company_name: None,
            licence_number_sealed: None,
            contact_name: None,
            contact_phone_sealed: None,
            business_description: None,
            rejection_reason: None,
            internal_user_id: None,
            submitted_at: None,
            reviewed_at: None,
            created_at: now,
            updated_at: now,
        };
        let account = new_account(&email, hash, Role::Owner, Some(merchant.id.clone()), None, now);
        let actor = crate::sessions::principal_of(&account)?;
        let mut tx = self.store().begin().await?;
        merchants::insert(&mut tx, &merchant).await?;
        accounts::insert(&mut tx, &account).await?;
        audit::record(&mut tx, &actor, event(&merchant.id, "merchant.signed_up", None, json!({ "owner": account.id }))).await?;
        portico_store::commit(tx).await?;
        Ok(SignUpOut { merchant: self.view(&actor, &merchant)?, account: AccountOut::from(&account) })
    }

    pub async fn merchant(&self, actor: &Principal, id: &str) -> Result<MerchantOut, Error> {
        actor.can_see(id)?;
        let record = self.load(id).await?;
        self.view(actor, &record)
    }

    /// Operators list every merchant (optionally in one state); a member lists its own.
    pub async fn merchants(&self, actor: &Principal, state: Option<MerchantState>, page: &PageRequest) -> Result<Page<MerchantOut>, Error> {
        let rows = if actor.is_operator() {
            let mut conn = self.store().read().await?;
            merchants::list(&mut conn, state.map(MerchantState::as_str), page).await?
        } else {
            let own = actor.merchant_id().ok_or(Error::Unauthenticated)?;
            let record = self.load(own).await?;
            let visible = state.is_none_or(|s| s.as_str() == record.state) && page.after.as_deref().is_none_or(|a| record.id.as_str() > a);
            if visible { vec![record] } else { vec![] }
        };
        let page = Page::from_rows(rows, page.limit, |r| r.id.clone());
        let items = page.items.iter().map(|r| self.view(actor, r)).collect::<Result<_, _>>()?;
        Ok(Page { items, next_cursor: page.next_cursor })
    }

    /// Writes the company documents; allowed while `draft` or `rejected`.
    pub async fn submit_documents(&self, actor: &Principal, id: &str, input: DocumentsIn) -> Result<MerchantOut, Error> {
        actor.can_administer(id)?;
        let company_name = Text::parse("company_name", &input.company_name, 200)?;
        let licence = parse_licence(&input.licence_number)?;
        let contact_name = Text::parse("contact_name", &input.contact_name, 100)?;
        let phone = parse_phone(&input.contact_phone)?;
        let description = Text::parse("business_description", &input.business_description, 2000)?;
        let mut record = self.load(id).await?;
        let state = record.state.clone();
        if state != "draft" && state != "rejected" {
            return Err(Error::InvalidState(format!("documents can be changed only in draft or rejected, not {state}")));
        }
        record.name = company_name.as_str().to_string();
        record.company_name = Some(company_name.into_string());
        record.licence_number_sealed = Some(self.key().seal(&licence, &format!("merchant.licence:{id}")));
        record.contact_name = Some(contact_name.into_string());
        record.contact_phone_sealed = Some(self.key().seal(&phone, &format!("merchant.phone:{id}")));
        record.business_description = Some(description.into_string());
        record.updated_at = now_ms();
        let mut tx = self.store().begin().await?;
        if !merchants::update_documents(&mut tx, &record, &state).await? {
            return Err(Error::Conflict("the merchant changed meanwhile; read it again".into()));
        }
        audit::record(&mut tx, actor, event(id, "merchant.documents_updated", None, json!({}))).await?;
        portico_store::commit(tx).await?;
        self.view(actor, &record)
    }

    /// Sends the documents for review: `draft | rejected → pending_review`.
    pub async fn submit_for_review(&self, actor: &Principal, id: &str) -> Result<MerchantOut, Error> {
        actor.can_administer(id)?;
        let record = self.load(id).await?;
        if record.company_name.is_none() {
            return Err(Error::InvalidState("submit the company documents first".into()));
        }
        self.transition(actor, id, &[MerchantState::Draft, MerchantState::Rejected], MerchantState::PendingReview, None, Stamp::Submitted, "merchant.submitted")
            .await
    }

    /// `pending_review → active`.
    pub async fn approve(&self, actor: &Principal, id: &str, input: ReasonIn) -> Result<MerchantOut, Error> {
        actor.require(&[Role::BusinessManager], "review merchants")?;
        let reason = optional_reason(input.reason)?;
        self.transition(actor, id, &[MerchantState::PendingReview], MerchantState::Active, reason, Stamp::Reviewed, "merchant.approved").await
    }

    /// `pending_review → rejected`, with the reason the merchant reads.
    pub async fn reject(&self, actor: &Principal, id: &str, input: ReasonIn) -> Result<MerchantOut, Error> {
        actor.require(&[Role::BusinessManager], "review merchants")?;
        let reason = required_reason(input.reason)?;
        self.transition(actor, id, &[MerchantState::PendingReview], MerchantState::Rejected, Some(reason), Stamp::Reviewed, "merchant.rejected")
            .await
    }

    /// `active → suspended`: the merchant's apps stop working.
    pub async fn suspend(&self, actor: &Principal, id: &str, input: ReasonIn) -> Result<MerchantOut, Error> {
        actor.require(&[Role::BusinessManager], "suspend merchants")?;
        let reason = required_reason(input.reason)?;
        self.transition(actor, id, &[MerchantState::Active], MerchantState::Suspended, Some(reason), Stamp::None, "merchant.suspended").await
    }

    /// `suspended → active`.
    pub async fn reactivate(&self, actor: &Principal, id: &str, input: ReasonIn) -> Result<MerchantOut, Error> {
        actor.require(&[Role::BusinessManager], "reactivate merchants")?;
        let reason = optional_reason(input.reason)?;
        self.transition(actor, id, &[MerchantState::Suspended], MerchantState::Active, reason, Stamp::None, "merchant.reactivated").await
    }

    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        actor: &Principal,
        id: &str,
        from: &[MerchantState],
        to: MerchantState,
        reason: Option<String>,
        stamp: Stamp,
        action: &str,
    ) -> Result<MerchantOut, Error> {
        actor.can_see(id)?;
        let record = self.load(id).await?;
        let current = MerchantState::parse(&record.state).ok_or_else(|| Error::Internal(format!("bad state {}", record.state)))?;
        if !from.contains(&current) {
            return Err(Error::InvalidState(format!("a merchant in {} cannot become {}", current.as_str(), to.as_str())));
        }
        // The reason shown to the merchant: kept for rejections and suspensions, cleared otherwise.
        let shown_reason = matches!(to, MerchantState::Rejected | MerchantState::Suspended).then(|| reason.clone()).flatten();
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        if !merchants::transition(&mut tx, id, current.as_str(), to.as_str(), shown_reason.as_deref(), now, stamp).await? {
            return Err(Error::Conflict("the merchant changed meanwhile; read it again".into()));
        }
        audit::record(&mut tx, actor, event(id, action, reason.as_deref(), json!({ "from": current.as_str(), "to": to.as_str() }))).await?;
        portico_store::commit(tx).await?;
        tracing::info!(merchant = id, from = current.as_str(), to = to.as_str(), "merchant state changed");
        self.announce(crate::Change::Merchant { merchant_id: id.to_string() });
        let record = self.load(id).await?;
        self.view(actor, &record)
    }

    /// Binds the merchant to an internal system's user id (business managers).
    pub async fn bind_internal_user(&self, actor: &Principal, id: &str, input: InternalUserIn) -> Result<MerchantOut, Error> {
        actor.require(&[Role::BusinessManager], "bind merchants to internal users")?;
        let internal = match input.internal_user_id.as_deref() {
            None => None,
            Some(s) => {
                let t = Text::parse("internal_user_id", s, 128)?;
                if !t.as_str().bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Error::validation("internal_user_id", "must be printable ASCII without spaces"));
                }
                Some(t.into_string())
            }
        };
        self.load(id).await?;
        let mut tx = self.store().begin().await?;
        merchants::set_internal_user(&mut tx, id, internal.as_deref(), now_ms()).await?;
        audit::record(&mut tx, actor, event(id, "merchant.internal_user_bound", None, json!({ "internal_user_id": internal }))).await?;
        portico_store::commit(tx).await?;
        self.announce(crate::Change::Merchant { merchant_id: id.to_string() });
        let record = self.load(id).await?;
        self.view(actor, &record)
    }

    /// Adds a member (owner or developer) to a merchant; the merchant's owner does this.
    pub async fn add_member(&self, actor: &Principal, merchant_id: &str, input: MemberIn) -> Result<AccountOut, Error> {
        actor.can_administer(merchant_id)?;
        if input.role.is_operator() {
            return Err(Error::validation("role", "must be owner or developer"));
        }
        let email = Email::parse(&input.email)?;
        let password = Password::parse(&input.password)?;
        let display_name = input.display_name.as_deref().map(|d| Text::parse("display_name", d, 100)).transpose()?;
        self.load(merchant_id).await?;
        let hash = blocking(move || password::hash(password.expose())).await?;
        let account = new_account(&email, hash, input.role, Some(merchant_id.to_string()), display_name.map(Text::into_string), now_ms());
        let mut tx = self.store().begin().await?;
        accounts::insert(&mut tx, &account).await?;
        audit::record(
            &mut tx,
            actor,
            Event {
                merchant_id: Some(merchant_id),
                action: "member.added",
                target_type: "account",
                target_id: &account.id,
                reason: None,
                detail: json!({ "email": account.email, "role": account.role }),
            },
        )
        .await?;
        portico_store::commit(tx).await?;
        Ok(AccountOut::from(&account))
    }

    pub async fn members(&self, actor: &Principal, merchant_id: &str, page: &PageRequest) -> Result<Page<AccountOut>, Error> {
        actor.can_see(merchant_id)?;
        self.load(merchant_id).await?;
        let mut conn = self.store().read().await?;
        let rows = accounts::list_members(&mut conn, merchant_id, page).await?;
        Ok(Page::from_rows(rows, page.limit, |a| a.id.clone()).map(|a| AccountOut::from(&a)))
    }

    pub(crate) async fn load(&self, id: &str) -> Result<MerchantRecord, Error> {
        let mut conn = self.store().read().await?;
        merchants::get(&mut conn, id).await?.ok_or(Error::NotFound("merchant"))
    }

    fn view(&self, actor: &Principal, m: &MerchantRecord) -> Result<MerchantOut, Error> {
        let unmasked = actor.sees_sensitive(&m.id);
        let open = |sealed: &Option<String>, aad: String| -> Result<Option<String>, Error> {
            sealed
                .as_deref()
                .map(|s| {
                    let plain = self.key().open(s, &aad).map_err(|e| Error::Internal(format!("merchant {}: {e}", m.id)))?;
                    Ok(if unmasked { plain } else { mask(&plain) })
                })
                .transpose()
        };
        Ok(MerchantOut {
            id: m.id.clone(),
            name: m.name.clone(),
            state: MerchantState::parse(&m.state).ok_or_else(|| Error::Internal(format!("bad state {}", m.state)))?,
            company_name: m.company_name.clone(),
            licence_number: open(&m.licence_number_sealed, format!("merchant.licence:{}", m.id))?,
            contact_name: m.contact_name.clone(),
            contact_phone: open(&m.contact_phone_sealed, format!("merchant.phone:{}", m.id))?,
            business_description: m.business_description.clone(),
            sensitive_masked: !unmasked,
            rejection_reason: m.rejection_reason.clone(),
            internal_user_id: m.internal_user_id.clone(),
            submitted_at: m.submitted_at.map(rfc3339),
            reviewed_at: m.reviewed_at.map(rfc3339),
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
        })
    }
}

pub(crate) fn new_account(email: &Email, password_hash: String, role: Role, merchant_id: Option<String>, display_name: Option<String>, now: i64) -> AccountRecord {
    AccountRecord {
        id: new_id("acc"),
        email: email.as_str().to_string(),
        password_hash,
        kind: if role.is_operator() { "operator" } else { "member" }.to_string(),
        role: role.as_str().to_string(),
        merchant_id,
        display_name,
        status: "active".into(),
        failed_logins: 0,
        locked_until: 0,
        password_changed_at: now,
        created_at: now,
        updated_at: now,
    }
}

fn event<'a>(merchant_id: &'a str, action: &'a str, reason: Option<&'a str>, detail: serde_json::Value) -> Event<'a> {
    Event { merchant_id: Some(merchant_id), action, target_type: "merchant", target_id: merchant_id, reason, detail }
}

fn required_reason(reason: Option<String>) -> Result<String, Error> {
    match reason {
        Some(r) => Ok(Text::parse("reason", &r, 1000)?.into_string()),
        None => Err(Error::validation("reason", "is required")),
    }
}

fn optional_reason(reason: Option<String>) -> Result<Option<String>, Error> {
    reason.map(|r| Text::parse("reason", &r, 1000).map(Text::into_string)).transpose()
}

/// Licence numbers: 5 to 64 letters, digits and dashes (upper-cased).
fn parse_licence(input: &str) -> Result<String, Error> {
    let s = input.trim().to_ascii_uppercase();
    if s.len() < 5 || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(Error::validation("licence_number", "must be 5 to 64 letters, digits or dashes"));
    }
    Ok(s)
}

/// Phone numbers: an optional leading `+`, then 5 to 20 digits; spaces and dashes allowed.
fn parse_phone(input: &str) -> Result<String, Error> {
    let s = input.trim();
    let body = s.strip_prefix('+').unwrap_or(s);
    let digits = body.bytes().filter(u8::is_ascii_digit).count();
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit() || b == b' ' || b == b'-') || !(5..=20).contains(&digits) {
        return Err(Error::validation("contact_phone", "must be 5 to 20 digits, optionally with a leading +"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licence_and_phone() {
        assert_eq!(parse_licence(" 91310000ma1k4xxxx1 ").unwrap(), "91310000MA1K4XXXX1");
        assert!(parse_licence("12").is_err());
        assert!(parse_licence("91310000 MA1K").is_err());
        assert!(parse_phone("+86 138-0013-8000").is_ok());
        assert!(parse_phone("call me").is_err());
        assert!(parse_phone("+").is_err());
    }
}

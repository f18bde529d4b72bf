//! `merchants`: tenants and their onboarding documents. Sensitive fields arrive sealed
//! (encrypted by the caller under the master key); this module never sees plaintext.

use portico_core::{page::PageRequest, Error};
use sqlx::{any::AnyRow, AnyConnection};

use crate::{col, DbResult};

#[derive(Debug, Clone)]
pub struct MerchantRecord {
    pub id: String,
    pub name: String,
    pub state: String,
    pub company_name: Option<String>,
    pub licence_number_sealed: Option<String>,
    pub contact_name: Option<String>,
    pub contact_phone_sealed: Option<String>,
    pub business_description: Option<String>,
    pub rejection_reason: Option<String>,
    pub internal_user_id: Option<String>,
    pub submitted_at: Option<i64>,
    pub reviewed_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl MerchantRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(MerchantRecord {
            id: col(r, "id")?,
            name: col(r, "name")?,
            state: col(r, "state")?,
            company_name: col(r, "company_name")?,
            licence_number_sealed: col(r, "licence_number_sealed")?,
            contact_name: col(r, "contact_name")?,
            contact_phone_sealed: col(r, "contact_phone_sealed")?,
            business_description: col(r, "business_description")?,
            rejection_reason: col(r, "rejection_reason")?,
            internal_user_id: col(r, "internal_user_id")?,
            submitted_at: col(r, "submitted_at")?,
            reviewed_at: col(r, "reviewed_at")?,
            created_at: col(r, "created_at")?,
            updated_at: col(r, "updated_at")?,
        })
    }
}

const COLUMNS: &str = "id, name, state, company_name, licence_number_sealed, contact_name, contact_phone_sealed, \
    business_description, rejection_reason, internal_user_id, submitted_at, reviewed_at, created_at, updated_at";

pub async fn insert(conn: &mut AnyConnection, m: &MerchantRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO merchants ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"))
        .bind(&m.id)
        .bind(&m.name)
        .bind(&m.state)
        .bind(&m.company_name)
        .bind(&m.licence_number_sealed)
        .bind(&m.contact_name)
        .bind(&m.contact_phone_sealed)
        .bind(&m.business_description)
        .bind(&m.rejection_reason)
        .bind(&m.internal_user_id)
        .bind(m.submitted_at)
        .bind(m.reviewed_at)
        .bind(m.created_at)
        .bind(m.updated_at)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<MerchantRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM merchants WHERE id = $1")).bind(id).fetch_optional(conn).await.db()?;
    row.as_ref().map(MerchantRecord::from_row).transpose()
}

/// Merchants by id, optionally only those in `state`, one page (fetches `limit + 1`).
pub async fn list(conn: &mut AnyConnection, state: Option<&str>, page: &PageRequest) -> Result<Vec<MerchantRecord>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM merchants WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(state)
    .bind(page.after.as_deref())
    .bind(page.limit as i64 + 1)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter().map(MerchantRecord::from_row).collect()
}

/// Writes the onboarding documents, only while the merchant is in one of the editable
/// states; returns whether a row changed.
pub async fn update_documents(conn: &mut AnyConnection, m: &MerchantRecord, expected_state: &str) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE merchants SET name = $1, company_name = $2, licence_number_sealed = $3, contact_name = $4, \
         contact_phone_sealed = $5, business_description = $6, updated_at = $7 WHERE id = $8 AND state = $9",
    )
    .bind(&m.name)
    .bind(&m.company_name)
    .bind(&m.licence_number_sealed)
    .bind(&m.contact_name)
    .bind(&m.contact_phone_sealed)
    .bind(&m.business_description)
    .bind(m.updated_at)
    .bind(&m.id)
    .bind(expected_state)
    .execute(conn)
    .await
    .db()?;
    Ok(done.rows_affected() == 1)
}

/// Moves a merchant from `from` to `to` if it is still in `from` (a concurrent change
/// makes this return false). `submitted` and `reviewed` stamp the matching columns.
pub async fn transition(
    conn: &mut AnyConnection,
    id: &str,
    from: &str,
    to: &str,
    rejection_reason: Option<&str>,
    now: i64,
    stamp: Stamp,
) -> Result<bool, Error> {
    let (submitted, reviewed) = match stamp {
        Stamp::Submitted => (Some(now), None),
        Stamp::Reviewed => (None, Some(now)),
        Stamp::None => (None, None),
    };
    let done = sqlx::query(
        "UPDATE merchants SET state = $1, rejection_reason = $2, updated_at = $3, \
         submitted_at = COALESCE($4, submitted_at), reviewed_at = COALESCE($5, reviewed_at) \
         WHERE id = $6 AND state = $7",
    )
    .bind(to)
    .bind(rejection_reason)
    .bind(now)
    .bind(submitted)
    .bind(reviewed)
    .bind(id)
    .bind(from)
    .execute(conn)
    .await
    .db()?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, Clone, Copy)]
pub enum Stamp {
    Submitted,
    Reviewed,
    None,
}

pub async fn set_internal_user(conn: &mut AnyConnection, id: &str, internal_user_id: Option<&str>, now: i64) -> Result<bool, Error> {
    let done = sqlx::query("UPDATE merchants SET internal_user_id = $1, updated_at = $2 WHERE id = $3")
        .bind(internal_user_id)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .db()?;
    Ok(done.rows_affected() == 1)
}

/// Merchants changed at or after `since` (ms).
pub async fn changed_since(conn: &mut AnyConnection, since: i64) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query("SELECT id, updated_at FROM merchants WHERE updated_at >= $1").bind(since).fetch_all(conn).await.db()?;
    rows.iter().map(|r| Ok((col(r, "id")?, col(r, "updated_at")?))).collect()
}

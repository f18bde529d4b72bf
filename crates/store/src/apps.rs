//! `apps` and `app_credentials`: a merchant's applications and their sandbox and
//! production key pairs. Every query here is scoped by `merchant_id`, except the lookup
//! by `app_key`, which is how a caller is identified in the first place.

use portico_core::{page::PageRequest, Error};
use sqlx::{any::AnyRow, AnyConnection};

use crate::{col, DbResult};

#[derive(Debug, Clone)]
pub struct AppRecord {
    pub id: String,
    pub merchant_id: String,
    pub name: String,
    pub integration_mode: String,
    pub callback_url: Option<String>,
    /// JSON array of CIDR strings.
    pub ip_allowlist: String,
    pub rsa_public_key: Option<String>,
    pub status: String,
    /// JSON array of OAuth2 redirect URIs, matched exactly.
    pub redirect_uris: String,
    /// `confidential` (has a secret) or `public` (PKCE only).
    pub client_type: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct CredentialRecord {
    pub id: String,
    pub app_id: String,
    pub merchant_id: String,
    pub environment: String,
    pub app_key: String,
    pub secret_sealed: String,
    pub secret_created_at: i64,
    pub previous_secret_sealed: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub created_at: i64,
}

const APP_COLUMNS: &str = "id, merchant_id, name, integration_mode, callback_url, ip_allowlist, rsa_public_key, status, \
    redirect_uris, client_type, created_at, updated_at";
const CREDENTIAL_COLUMNS: &str = "id, app_id, merchant_id, environment, app_key, secret_sealed, secret_created_at, \
    previous_secret_sealed, previous_secret_expires_at, created_at";

impl AppRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(AppRecord {
            id: col(r, "id")?,
            merchant_id: col(r, "merchant_id")?,
            name: col(r, "name")?,
            integration_mode: col(r, "integration_mode")?,
            callback_url: col(r, "callback_url")?,
            ip_allowlist: col(r, "ip_allowlist")?,
            rsa_public_key: col(r, "rsa_public_key")?,
            status: col(r, "status")?,
            redirect_uris: col(r, "redirect_uris")?,
            client_type: col(r, "client_type")?,
            created_at: col(r, "created_at")?,
            updated_at: col(r, "updated_at")?,
        })
    }
}

impl CredentialRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(CredentialRecord {
            id: col(r, "id")?,
            app_id: col(r, "app_id")?,
            merchant_id: col(r, "merchant_id")?,
            environment: col(r, "environment")?,
            app_key: col(r, "app_key")?,
            secret_sealed: col(r, "secret_sealed")?,
            secret_created_at: col(r, "secret_created_at")?,
            previous_secret_sealed: col(r, "previous_secret_sealed")?,
            previous_secret_expires_at: col(r, "previous_secret_expires_at")?,
            created_at: col(r, "created_at")?,
        })
    }
}

pub async fn insert(conn: &mut AnyConnection, a: &AppRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO apps ({APP_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"))
        .bind(&a.id)
        .bind(&a.merchant_id)
        .bind(&a.name)
        .bind(&a.integration_mode)
        .bind(&a.callback_url)
        .bind(&a.ip_allowlist)
        .bind(&a.rsa_public_key)
        .bind(&a.status)
        .bind(&a.redirect_uris)
        .bind(&a.client_type)
        .bind(a.created_at)
        .bind(a.updated_at)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

pub async fn get(conn: &mut AnyConnection, merchant_id: &str, app_id: &str) -> Result<Option<AppRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE merchant_id = $1 AND id = $2"))
        .bind(merchant_id)
        .bind(app_id)
        .fetch_optional(conn)
        .await
        .db()?;
    row.as_ref().map(AppRecord::from_row).transpose()
}

pub async fn list(conn: &mut AnyConnection, merchant_id: &str, page: &PageRequest) -> Result<Vec<AppRecord>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {APP_COLUMNS} FROM apps WHERE merchant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(merchant_id)
    .bind(page.after.as_deref())
    .bind(page.limit as i64 + 1)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter().map(AppRecord::from_row).collect()
}

/// Writes an app's editable fields; returns whether the app exists for this merchant.
pub async fn update(conn: &mut AnyConnection, a: &AppRecord) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE apps SET name = $1, integration_mode = $2, callback_url = $3, ip_allowlist = $4, rsa_public_key = $5, \
         status = $6, updated_at = $7, redirect_uris = $10, client_type = $11 WHERE merchant_id = $8 AND id = $9",
    )
    .bind(&a.name)
    .bind(&a.integration_mode)
    .bind(&a.callback_url)
    .bind(&a.ip_allowlist)
    .bind(&a.rsa_public_key)
    .bind(&a.status)
    .bind(a.updated_at)
    .bind(&a.merchant_id)
    .bind(&a.id)
    .bind(&a.redirect_uris)
    .bind(&a.client_type)
    .execute(conn)
    .await
    .db()?;
    Ok(done.rows_affected() == 1)
}

/// Marks an app changed (credentials or grants changed), so that other instances'
/// snapshots pick it up.
pub async fn touch(conn: &mut AnyConnection, app_id: &str, now: i64) -> Result<(), Error> {
    sqlx::query("UPDATE apps SET updated_at = $1 WHERE id = $2").bind(now).bind(app_id).execute(conn).await.db()?;
    Ok(())
}

/// Apps changed at or after `since` (ms).
pub async fn changed_since(conn: &mut AnyConnection, since: i64) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query("SELECT id, updated_at FROM apps WHERE updated_at >= $1").bind(since).fetch_all(conn).await.db()?;
    rows.iter().map(|r| Ok((col(r, "id")?, col(r, "updated_at")?))).collect()
}

/// The scopes granted to an app, sorted.
pub async fn grants(conn: &mut AnyConnection, merchant_id: &str, app_id: &str) -> Result<Vec<String>, Error> {
    let rows = sqlx::query("SELECT scope FROM app_grants WHERE merchant_id = $1 AND app_id = $2 ORDER BY scope")
        .bind(merchant_id)
        .bind(app_id)
        .fetch_all(conn)
        .await
        .db()?;
    rows.iter().map(|r| col(r, "scope")).collect()
}

/// Grants a scope to an app; granting twice is a no-op. Returns whether it was new.
pub async fn grant(conn: &mut AnyConnection, merchant_id: &str, app_id: &str, scope: &str, by: Option<&str>, now: i64) -> Result<bool, Error> {
    let exists = sqlx::query("SELECT 1 AS one FROM app_grants WHERE app_id = $1 AND scope = $2")
        .bind(app_id)
        .bind(scope)
        .fetch_optional(&mut *conn)
        .await
        .db()?
        .is_some();
    if exists {
        return Ok(false);
    }
    sqlx::query("INSERT INTO app_grants (app_id, merchant_id, scope, granted_at, granted_by) VALUES ($1, $2, $3, $4, $5)")
        .bind(app_id)
        .bind(merchant_id)
        .bind(scope)
        .bind(now)
        .bind(by)
        .execute(conn)
        .await
        .db()?;
    Ok(true)
}

/// Withdraws a scope; returns whether it had been granted.
pub async fn revoke_grant(conn: &mut AnyConnection, merchant_id: &str, app_id: &str, scope: &str) -> Result<bool, Error> {
    let done = sqlx::query("DELETE FROM app_grants WHERE merchant_id = $1 AND app_id = $2 AND scope = $3")
        .bind(merchant_id)
        .bind(app_id)
        .bind(scope)
        .execute(conn)
        .await
        .db()?;
    Ok(done.rows_affected() == 1)
}

pub async fn insert_credential(conn: &mut AnyConnection, c: &CredentialRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO app_credentials ({CREDENTIAL_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"))
        .bind(&c.id)
        .bind(&c.app_id)
        .bind(&c.merchant_id)
        .bind(&c.environment)
        .bind(&c.app_key)
        .bind(&c.secret_sealed)
        .bind(c.secret_created_at)
        .bind(&c.previous_secret_sealed)
        .bind(c.previous_secret_expires_at)
        .bind(c.created_at)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// An app's credentials (sandbox first).
pub async fn credentials(conn: &mut AnyConnection, merchant_id: &str, app_id: &str) -> Result<Vec<CredentialRecord>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM app_credentials WHERE merchant_id = $1 AND app_id = $2 ORDER BY environment DESC"
    ))
    .bind(merchant_id)
    .bind(app_id)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter().map(CredentialRecord::from_row).collect()
}

/// Everything needed to identify a caller by `app_key` in one query: the credential, its
/// app, and the merchant's state and name.
pub async fn caller_by_app_key(conn: &mut AnyConnection, app_key: &str) -> Result<Option<(CredentialRecord, AppRecord, String, String)>, Error> {
    let row = sqlx::query(&format!(
        "SELECT {JOINED_COLUMNS}, m.state AS merchant_state, m.name AS merchant_name \
         FROM app_credentials c JOIN apps a ON a.id = c.app_id JOIN merchants m ON m.id = c.merchant_id WHERE c.app_key = $1"
    ))
    .bind(app_key)
    .fetch_optional(conn)
    .await
    .db()?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some((CredentialRecord::from_joined_row(&r)?, AppRecord::from_row(&r)?, col(&r, "merchant_state")?, col(&r, "merchant_name")?)))
}

/// The credential and app columns of a credential joined with its app and merchant;
/// credential columns that collide with the app's are aliased `c_…`.
const JOINED_COLUMNS: &str = "c.id AS c_id, c.app_id, c.merchant_id AS c_merchant_id, c.environment, c.app_key, c.secret_sealed, \
     c.secret_created_at, c.previous_secret_sealed, c.previous_secret_expires_at, c.created_at AS c_created_at, \
     a.id, a.merchant_id, a.name, a.integration_mode, a.callback_url, a.ip_allowlist, a.rsa_public_key, a.status, a.redirect_uris, \
     a.client_type, a.created_at, a.updated_at";

impl CredentialRecord {
    fn from_joined_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(CredentialRecord {
            id: col(r, "c_id")?,
            app_id: col(r, "app_id")?,
            merchant_id: col(r, "c_merchant_id")?,
            environment: col(r, "environment")?,
            app_key: col(r, "app_key")?,
            secret_sealed: col(r, "secret_sealed")?,
            secret_created_at: col(r, "secret_created_at")?,
            previous_secret_sealed: col(r, "previous_secret_sealed")?,
            previous_secret_expires_at: col(r, "previous_secret_expires_at")?,
            created_at: col(r, "c_created_at")?,
        })
    }
}

/// A credential with its app and merchant, as the gateway's snapshot holds it.
#[derive(Debug, Clone)]
pub struct GatewayRow {
    pub credential: CredentialRecord,
    pub app: AppRecord,
    pub merchant_state: String,
    pub internal_user_id: Option<String>,
}

/// Every credential (or one merchant's, or one app's) with its app and merchant.
pub async fn gateway_rows(conn: &mut AnyConnection, merchant_id: Option<&str>, app_id: Option<&str>) -> Result<Vec<GatewayRow>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {JOINED_COLUMNS}, m.state AS merchant_state, m.internal_user_id \
         FROM app_credentials c JOIN apps a ON a.id = c.app_id JOIN merchants m ON m.id = c.merchant_id \
         WHERE ($1 IS NULL OR c.merchant_id = $1) AND ($2 IS NULL OR c.app_id = $2)"
    ))
    .bind(merchant_id)
    .bind(app_id)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter()
        .map(|r| {
            Ok(GatewayRow {
                credential: CredentialRecord::from_joined_row(r)?,
                app: AppRecord::from_row(r)?,
                merchant_state: col(r, "merchant_state")?,
                internal_user_id: col(r, "internal_user_id")?,
            })
        })
        .collect()
}

/// (app id, scope) of every grant (or one merchant's, or one app's).
pub async fn all_grants(conn: &mut AnyConnection, merchant_id: Option<&str>, app_id: Option<&str>) -> Result<Vec<(String, String)>, Error> {
    let rows = sqlx::query("SELECT app_id, scope FROM app_grants WHERE ($1 IS NULL OR merchant_id = $1) AND ($2 IS NULL OR app_id = $2)")
        .bind(merchant_id)
        .bind(app_id)
        .fetch_all(conn)
        .await
        .db()?;
    rows.iter().map(|r| Ok((col(r, "app_id")?, col(r, "scope")?))).collect()
}

/// The credential with this `app_key`, for identifying a caller.
pub async fn credential_by_app_key(conn: &mut AnyConnection, app_key: &str) -> Result<Option<CredentialRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {CREDENTIAL_COLUMNS} FROM app_credentials WHERE app_key = $1"))
        .bind(app_key)
        .fetch_optional(conn)
        .await
        .db()?;
    row.as_ref().map(CredentialRecord::from_row).transpose()
}

/// Replaces a credential's secret, keeping the old one valid until `previous_expires_at`.
/// Guarded by the secret it replaces, so two concurrent rotations cannot both win.
pub async fn rotate_secret(
    conn: &mut AnyConnection,
    c: &CredentialRecord,
    new_secret_sealed: &str,
    previous_expires_at: i64,
    now: i64,
) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE app_credentials SET secret_sealed = $1, secret_created_at = $2, previous_secret_sealed = $3, \
         previous_secret_expires_at = $4 WHERE merchant_id = $5 AND id = $6 AND secret_sealed = $3",
    )
    .bind(new_secret_sealed)
    .bind(now)
    .bind(&c.secret_sealed)
    .bind(previous_expires_at)
    .bind(&c.merchant_id)
    .bind(&c.id)
    .execute(conn)
    .await
    .db()?;
    Ok(done.rows_affected() == 1)
}

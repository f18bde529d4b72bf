//! `api_groups`, `apis` and `grant_requests`: the API catalog and the requests of
//! merchants for API groups.

use portico_core::Error;
use sqlx::{any::AnyRow, AnyConnection};

use crate::{col, DbResult};

#[derive(Debug, Clone)]
pub struct GroupRecord {
    pub name: String,
    pub title: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct ApiRecord {
    pub id: String,
    pub name: String,
    pub version: String,
    pub group_name: String,
    pub service: String,
    pub upstream_path: String,
    pub http_method: String,
    pub description: String,
    pub request_schema: Option<String>,
    pub response_schema: Option<String>,
    pub timeout_ms: i64,
    pub rate_limit_per_second: Option<i64>,
    pub needs_user: i64,
    pub business_key_pointer: Option<String>,
    pub daily_quota: Option<i64>,
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const API_COLUMNS: &str = "id, name, version, group_name, service, upstream_path, http_method, description, request_schema, \
    response_schema, timeout_ms, rate_limit_per_second, needs_user, business_key_pointer, state, created_at, updated_at, daily_quota";

impl ApiRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(ApiRecord {
            id: col(r, "id")?,
            name: col(r, "name")?,
            version: col(r, "version")?,
            group_name: col(r, "group_name")?,
            service: col(r, "service")?,
            upstream_path: col(r, "upstream_path")?,
            http_method: col(r, "http_method")?,
            description: col(r, "description")?,
            request_schema: col(r, "request_schema")?,
            response_schema: col(r, "response_schema")?,
            timeout_ms: col(r, "timeout_ms")?,
            rate_limit_per_second: col(r, "rate_limit_per_second")?,
            needs_user: col(r, "needs_user")?,
            business_key_pointer: col(r, "business_key_pointer")?,
            daily_quota: col(r, "daily_quota")?,
            state: col(r, "state")?,
            created_at: col(r, "created_at")?,
            updated_at: col(r, "updated_at")?,
        })
    }
}

pub async fn upsert_group(conn: &mut AnyConnection, g: &GroupRecord) -> Result<(), Error> {
    let done = sqlx::query("UPDATE api_groups SET title = $1, description = $2, updated_at = $3 WHERE name = $4")
        .bind(&g.title)
        .bind(&g.description)
        .bind(g.updated_at)
        .bind(&g.name)
        .execute(&mut *conn)
        .await
        .db()?;
    if done.rows_affected() == 0 {
        sqlx::query("INSERT INTO api_groups (name, title, description, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&g.name)
            .bind(&g.title)
            .bind(&g.description)
            .bind(g.created_at)
            .bind(g.updated_at)
            .execute(conn)
            .await
            .db()?;
    }
    Ok(())
}

pub async fn groups(conn: &mut AnyConnection) -> Result<Vec<GroupRecord>, Error> {
    let rows = sqlx::query("SELECT name, title, description, created_at, updated_at FROM api_groups ORDER BY name").fetch_all(conn).await.db()?;
    rows.iter()
        .map(|r| Ok(GroupRecord { name: col(r, "name")?, title: col(r, "title")?, description: col(r, "description")?, created_at: col(r, "created_at")?, updated_at: col(r, "updated_at")? }))
        .collect()
}

pub async fn group_exists(conn: &mut AnyConnection, name: &str) -> Result<bool, Error> {
    Ok(sqlx::query("SELECT name FROM api_groups WHERE name = $1").bind(name).fetch_optional(conn).await.db()?.is_some())
}

pub async fn insert_api(conn: &mut AnyConnection, a: &ApiRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO apis ({API_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)"))
        .bind(&a.id)
        .bind(&a.name)
        .bind(&a.version)
        .bind(&a.group_name)
        .bind(&a.service)
        .bind(&a.upstream_path)
        .bind(&a.http_method)
        .bind(&a.description)
        .bind(&a.request_schema)
        .bind(&a.response_schema)
        .bind(a.timeout_ms)
        .bind(a.rate_limit_per_second)
        .bind(a.needs_user)
        .bind(&a.business_key_pointer)
        .bind(&a.state)
        .bind(a.created_at)
        .bind(a.updated_at)
        .bind(a.daily_quota)
        .execute(conn)
        .await
        .map_err(|e| match crate::map_error(e) {
            Error::Conflict(_) => Error::validation("version", "this name and version already exist"),
            other => other,
        })?;
    Ok(())
}

pub async fn api(conn: &mut AnyConnection, id: &str) -> Result<Option<ApiRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {API_COLUMNS} FROM apis WHERE id = $1")).bind(id).fetch_optional(conn).await.db()?;
    row.as_ref().map(ApiRecord::from_row).transpose()
}

pub async fn apis(conn: &mut AnyConnection) -> Result<Vec<ApiRecord>, Error> {
    let rows = sqlx::query(&format!("SELECT {API_COLUMNS} FROM apis ORDER BY name, version")).fetch_all(conn).await.db()?;
    rows.iter().map(ApiRecord::from_row).collect()
}

pub async fn set_api_state(conn: &mut AnyConnection, id: &str, state: &str, now: i64) -> Result<bool, Error> {
    let done = sqlx::query("UPDATE apis SET state = $1, updated_at = $2 WHERE id = $3").bind(state).bind(now).bind(id).execute(conn).await.db()?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, Clone)]
pub struct GrantRequestRecord {
    pub id: String,
    pub app_id: String,
    pub merchant_id: String,
    pub group_name: String,
    pub state: String,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    pub created_at: i64,
    pub decided_at: Option<i64>,
}

const REQUEST_COLUMNS: &str = "id, app_id, merchant_id, group_name, state, reason, decided_by, created_at, decided_at";

impl GrantRequestRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(GrantRequestRecord {
            id: col(r, "id")?,
            app_id: col(r, "app_id")?,
            merchant_id: col(r, "merchant_id")?,
            group_name: col(r, "group_name")?,
            state: col(r, "state")?,
            reason: col(r, "reason")?,
            decided_by: col(r, "decided_by")?,
            created_at: col(r, "created_at")?,
            decided_at: col(r, "decided_at")?,
        })
    }
}

pub async fn insert_request(conn: &mut AnyConnection, g: &GrantRequestRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO grant_requests ({REQUEST_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"))
        .bind(&g.id)
        .bind(&g.app_id)
        .bind(&g.merchant_id)
        .bind(&g.group_name)
        .bind(&g.state)
        .bind(&g.reason)
        .bind(&g.decided_by)
        .bind(g.created_at)
        .bind(g.decided_at)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

pub async fn request(conn: &mut AnyConnection, id: &str) -> Result<Option<GrantRequestRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {REQUEST_COLUMNS} FROM grant_requests WHERE id = $1")).bind(id).fetch_optional(conn).await.db()?;
    row.as_ref().map(GrantRequestRecord::from_row).transpose()
}

/// Requests, optionally of one merchant and/or in one state, oldest first.
pub async fn requests(conn: &mut AnyConnection, merchant_id: Option<&str>, state: Option<&str>) -> Result<Vec<GrantRequestRecord>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {REQUEST_COLUMNS} FROM grant_requests WHERE ($1 IS NULL OR merchant_id = $1) AND ($2 IS NULL OR state = $2) ORDER BY id LIMIT 500"
    ))
    .bind(merchant_id)
    .bind(state)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter().map(GrantRequestRecord::from_row).collect()
}

/// Decides a pending request; false if it was no longer pending.
pub async fn decide_request(conn: &mut AnyConnection, id: &str, state: &str, reason: Option<&str>, by: &str, now: i64) -> Result<bool, Error> {
    let done = sqlx::query("UPDATE grant_requests SET state = $1, reason = $2, decided_by = $3, decided_at = $4 WHERE id = $5 AND state = 'pending'")
        .bind(state)
        .bind(reason)
        .bind(by)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .db()?;
    Ok(done.rows_affected() == 1)
}

/// The newest change to the catalog (ms), 0 when empty.
pub async fn last_change(conn: &mut AnyConnection) -> Result<i64, Error> {
    let row = sqlx::query("SELECT COALESCE(MAX(updated_at), 0) AS apis, (SELECT COALESCE(MAX(updated_at), 0) FROM api_groups) AS groups FROM apis")
        .fetch_one(conn)
        .await
        .db()?;
    let a: i64 = col(&row, "apis")?;
    let g: i64 = col(&row, "groups")?;
    Ok(a.max(g))
}

//! `api_calls` and `business_keys`: what the gateway records per call, written in
//! batches off the request path.

use portico_core::{page::PageRequest, Error};
use sqlx::AnyConnection;

use crate::{col, DbResult, Engine};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: String,
    pub at: i64,
    pub trace_id: String,
    pub merchant_id: Option<String>,
    pub app_id: Option<String>,
    pub api: Option<String>,
    pub status: i64,
    pub code: i64,
    pub latency_us: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub client_ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessKeyRecord {
    pub id: String,
    pub merchant_id: String,
    pub app_id: String,
    pub api: String,
    pub business_key: String,
    pub trace_id: String,
    pub at: i64,
}

/// Inserts many calls with multi-row statements (50 rows each): the gateway's records
/// arrive by the thousand, and one statement per row would cost a core.
pub async fn insert_calls(conn: &mut AnyConnection, engine: Engine, calls: &[CallRecord]) -> Result<(), Error> {
    for chunk in calls.chunks(50) {
        let sql = crate::multi_row_insert(
            engine,
            "api_calls (id, at, trace_id, merchant_id, app_id, api, status, code, latency_us, bytes_in, bytes_out, client_ip)",
            chunk.len(),
            12,
        );
        let mut q = sqlx::query(&sql);
        for c in chunk {
            q = q
                .bind(&c.id)
                .bind(c.at)
                .bind(&c.trace_id)
                .bind(&c.merchant_id)
                .bind(&c.app_id)
                .bind(&c.api)
                .bind(c.status)
                .bind(c.code)
                .bind(c.latency_us)
                .bind(c.bytes_in)
                .bind(c.bytes_out)
                .bind(&c.client_ip);
        }
        q.execute(&mut *conn).await.db()?;
    }
    Ok(())
}

pub async fn insert_business_key(conn: &mut AnyConnection, k: &BusinessKeyRecord) -> Result<(), Error> {
    sqlx::query("INSERT INTO business_keys (id, merchant_id, app_id, api, business_key, trace_id, at) VALUES ($1,$2,$3,$4,$5,$6,$7)")
        .bind(&k.id)
        .bind(&k.merchant_id)
        .bind(&k.app_id)
        .bind(&k.api)
        .bind(&k.business_key)
        .bind(&k.trace_id)
        .bind(k.at)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// A merchant's calls (all merchants' when `None`), newest first.
pub async fn calls(conn: &mut AnyConnection, merchant_id: Option<&str>, trace_id: Option<&str>, page: &PageRequest) -> Result<Vec<CallRecord>, Error> {
    let rows = sqlx::query(
        "SELECT id, at, trace_id, merchant_id, app_id, api, status, code, latency_us, bytes_in, bytes_out, client_ip FROM api_calls \
         WHERE ($1 IS NULL OR merchant_id = $1) AND ($2 IS NULL OR trace_id = $2) AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
    )
    .bind(merchant_id)
    .bind(trace_id)
    .bind(page.after.as_deref())
    .bind(page.limit as i64 + 1)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter()
        .map(|r| {
            Ok(CallRecord {
                id: col(r, "id")?,
                at: col(r, "at")?,
                trace_id: col(r, "trace_id")?,
                merchant_id: col(r, "merchant_id")?,
                app_id: col(r, "app_id")?,
                api: col(r, "api")?,
                status: col(r, "status")?,
                code: col(r, "code")?,
                latency_us: col(r, "latency_us")?,
                bytes_in: col(r, "bytes_in")?,
                bytes_out: col(r, "bytes_out")?,
                client_ip: col(r, "client_ip")?,
            })
        })
        .collect()
}

/// A merchant's business keys, optionally of one API, newest first.
pub async fn business_keys(conn: &mut AnyConnection, merchant_id: &str, api: Option<&str>, page: &PageRequest) -> Result<Vec<BusinessKeyRecord>, Error> {
    let rows = sqlx::query(
        "SELECT id, merchant_id, app_id, api, business_key, trace_id, at FROM business_keys \
         WHERE merchant_id = $1 AND ($2 IS NULL OR api = $2) AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
    )
    .bind(merchant_id)
    .bind(api)
    .bind(page.after.as_deref())
    .bind(page.limit as i64 + 1)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter()
        .map(|r| {
            Ok(BusinessKeyRecord {
                id: col(r, "id")?,
                merchant_id: col(r, "merchant_id")?,
                app_id: col(r, "app_id")?,
                api: col(r, "api")?,
                business_key: col(r, "business_key")?,
                trace_id: col(r, "trace_id")?,
                at: col(r, "at")?,
            })
        })
        .collect()
}

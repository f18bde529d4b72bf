//! `service_instances`: the service registry. Instances register, beat, and are
//! forgotten when they stop beating.

use portico_core::Error;
use sqlx::{any::AnyRow, AnyConnection};

use crate::{col, DbResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub service: String,
    pub version: String,
    pub host: String,
    pub port: i64,
    pub base_path: String,
    pub weight: i64,
    /// A JSON object.
    pub metadata: String,
    pub health_path: Option<String>,
    pub registered_at: i64,
    pub last_beat_at: i64,
}

const COLUMNS: &str = "id, service, version, host, port, base_path, weight, metadata, health_path, registered_at, last_beat_at";

impl InstanceRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(InstanceRecord {
            id: col(r, "id")?,
            service: col(r, "service")?,
            version: col(r, "version")?,
            host: col(r, "host")?,
            port: col(r, "port")?,
            base_path: col(r, "base_path")?,
            weight: col(r, "weight")?,
            metadata: col(r, "metadata")?,
            health_path: col(r, "health_path")?,
            registered_at: col(r, "registered_at")?,
            last_beat_at: col(r, "last_beat_at")?,
        })
    }
}

/// Registers an instance, or refreshes it when the same id registers again.
pub async fn upsert(conn: &mut AnyConnection, i: &InstanceRecord) -> Result<(), Error> {
    sqlx::query("DELETE FROM service_instances WHERE id = $1").bind(&i.id).execute(&mut *conn).await.db()?;
    sqlx::query(&format!("INSERT INTO service_instances ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"))
        .bind(&i.id)
        .bind(&i.service)
        .bind(&i.version)
        .bind(&i.host)
        .bind(i.port)
        .bind(&i.base_path)
        .bind(i.weight)
        .bind(&i.metadata)
        .bind(&i.health_path)
        .bind(i.registered_at)
        .bind(i.last_beat_at)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

pub async fn beat(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, Error> {
    let done = sqlx::query("UPDATE service_instances SET last_beat_at = $1 WHERE id = $2").bind(now).bind(id).execute(conn).await.db()?;
    Ok(done.rows_affected() == 1)
}

pub async fn remove(conn: &mut AnyConnection, id: &str) -> Result<bool, Error> {
    let done = sqlx::query("DELETE FROM service_instances WHERE id = $1").bind(id).execute(conn).await.db()?;
    Ok(done.rows_affected() == 1)
}

/// Instances that beat after `since`, by service.
pub async fn live(conn: &mut AnyConnection, since: i64) -> Result<Vec<InstanceRecord>, Error> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM service_instances WHERE last_beat_at >= $1 ORDER BY service, id")).bind(since).fetch_all(conn).await.db()?;
    rows.iter().map(InstanceRecord::from_row).collect()
}

/// Forgets instances that stopped beating before `before`; returns how many.
pub async fn forget_silent(conn: &mut AnyConnection, before: i64) -> Result<u64, Error> {
    let done = sqlx::query("DELETE FROM service_instances WHERE last_beat_at < $1").bind(before).execute(conn).await.db()?;
    Ok(done.rows_affected())
}

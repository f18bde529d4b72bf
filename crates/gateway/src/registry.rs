//! The service registry on the internal listener (seed 004): instances register, beat
//! every 30 s, and deregister on shutdown. An instance that misses three beats leaves
//! rotation; one silent for five minutes is forgotten. Services join and leave while
//! Portico runs: the gateway's snapshot follows within a second.

use axum::{
    extract::{Path, State},
    routing::{delete, get, post, put},
    Router,
};
use portico_core::{
    http::{ApiJson, ApiResult, Created, Success},
    id::new_id,
    time::{now_ms, rfc3339},
    Error,
};
use portico_store::registry::{self, InstanceRecord};
use serde::{Deserialize, Serialize};

use crate::Gateway;

pub const HEARTBEAT_SECS: i64 = 30;
/// Out of rotation after three missed beats.
pub const LIVE_FOR_MS: i64 = 3 * HEARTBEAT_SECS * 1000;
/// Forgotten after five minutes of silence.
pub const FORGET_AFTER_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Deserialize)]
pub struct InstanceIn {
    /// Chosen by the instance to make re-registration idempotent; generated if absent.
    pub id: Option<String>,
    pub service: String,
    #[serde(default = "default_version")]
    pub version: String,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub base_path: String,
    pub weight: Option<u32>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Endpoints the instance serves, for the record (the catalog decides what is public).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// A path the gateway probes every few seconds (active health checks); a 2xx is
    /// healthy. Without one, only passive health applies.
    pub health_path: Option<String>,
}

fn default_version() -> String {
    "1".into()
}

#[derive(Debug, Serialize)]
pub struct InstanceOut {
    pub id: String,
    pub service: String,
    pub version: String,
    pub host: String,
    pub port: i64,
    pub base_path: String,
    pub weight: i64,
    pub metadata: serde_json::Value,
    pub health_path: Option<String>,
    pub registered_at: String,
    pub last_beat_at: String,
    pub heartbeat_interval_secs: i64,
}

impl From<&InstanceRecord> for InstanceOut {
    fn from(i: &InstanceRecord) -> Self {
        InstanceOut {
            id: i.id.clone(),
            service: i.service.clone(),
            version: i.version.clone(),
            host: i.host.clone(),
            port: i.port,
            base_path: i.base_path.clone(),
            weight: i.weight,
            metadata: serde_json::from_str(&i.metadata).unwrap_or_default(),
            health_path: i.health_path.clone(),
            registered_at: rfc3339(i.registered_at),
            last_beat_at: rfc3339(i.last_beat_at),
            heartbeat_interval_secs: HEARTBEAT_SECS,
        }
    }
}

pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/registry/v1/instances", post(register).get(list))
        .route("/registry/v1/instances/{id}/heartbeat", put(heartbeat))
        .route("/registry/v1/instances/{id}", delete(deregister))
        .route("/registry/v1/services", get(list))
        .with_state(gw)
}

async fn register(State(gw): State<Gateway>, ApiJson(input): ApiJson<InstanceIn>) -> ApiResult<Created<InstanceOut>> {
    let service = portico_console::catalog::parse_service_name(&input.service)?;
    let host = input.host.trim();
    let host_ok = !host.is_empty() && host.len() <= 253 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !host_ok {
        return Err(Error::validation("host", "must be a host name or an IP address").into());
    }
    if input.port == 0 {
        return Err(Error::validation("port", "must be 1 to 65535").into());
    }
    if !(input.base_path.is_empty() || (input.base_path.starts_with('/') && !input.base_path.contains(['?', '#', ' ']))) {
        return Err(Error::validation("base_path", "must be empty or a path starting with /").into());
    }
    if let Some(h) = &input.health_path {
        if !h.starts_with('/') || h.len() > 256 || h.contains(['#', ' ']) {
            return Err(Error::validation("health_path", "must be a path starting with /").into());
        }
    }
    let weight = input.weight.unwrap_or(100);
    if !(1..=1000).contains(&weight) {
        return Err(Error::validation("weight", "must be 1 to 1000").into());
    }
    let id = match input.id {
        Some(id) if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) => id,
        Some(_) => return Err(Error::validation("id", "must be 1 to 64 of letters, digits, -, _ and .").into()),
        None => new_id("ins"),
    };
    let now = now_ms();
    let mut metadata = input.metadata;
    if !input.endpoints.is_empty() {
        metadata.insert("endpoints".into(), serde_json::json!(input.endpoints));
    }
    let record = InstanceRecord {
        id,
        service,
        version: input.version,
        host: host.to_string(),
        port: input.port as i64,
        base_path: input.base_path,
        weight: weight as i64,
        metadata: serde_json::Value::Object(metadata).to_string(),
        health_path: input.health_path,
        registered_at: now,
        last_beat_at: now,
    };
    let mut tx = gw.platform().store().begin().await?;
    registry::upsert(&mut tx, &record).await?;
    portico_store::commit(tx).await?;
    gw.refresh_instances().await?;
    tracing::info!(service = %record.service, instance = %record.id, "instance registered");
    Ok(Created(InstanceOut::from(&record)))
}

async fn heartbeat(State(gw): State<Gateway>, Path(id): Path<String>) -> ApiResult<Success<Option<String>>> {
    let mut tx = gw.platform().store().begin().await?;
    if !registry::beat(&mut tx, &id, now_ms()).await? {
        return Err(Error::NotFound("instance").into());
    }
    portico_store::commit(tx).await?;
    Ok(Success(None))
}

async fn deregister(State(gw): State<Gateway>, Path(id): Path<String>) -> ApiResult<Success<Option<String>>> {
    let mut tx = gw.platform().store().begin().await?;
    if !registry::remove(&mut tx, &id).await? {
        return Err(Error::NotFound("instance").into());
    }
    portico_store::commit(tx).await?;
    gw.refresh_instances().await?;
    tracing::info!(instance = %id, "instance deregistered");
    Ok(Success(None))
}

async fn list(State(gw): State<Gateway>) -> ApiResult<Success<Vec<InstanceOut>>> {
    let mut conn = gw.platform().store().read().await?;
    let live = registry::live(&mut conn, now_ms() - LIVE_FOR_MS).await?;
    Ok(Success(live.iter().map(InstanceOut::from).collect()))
}

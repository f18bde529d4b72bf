//! The data plane's view of the configuration: an immutable snapshot swapped atomically.
//! Apps live in 256 shards by `app_key`, so an edit to one app copies one shard
//! (1/256 of the apps), not the whole map: a million apps stay cheap to edit.

use std::{
    collections::HashSet,
    hash::BuildHasher,
    sync::{atomic::AtomicUsize, Arc},
    time::Duration,
};

use axum::http::Method;
use portico_console::Platform;
use portico_core::{
    domain::{IpAllowlist, JsonPointer},
    Error, FastHasher, FastMap,
};
use portico_signing::AppSecret;
use portico_store::{catalog::ApiRecord, registry::InstanceRecord, Conn};
use rsa::{pkcs8::DecodePublicKey, RsaPublicKey};

const SHARDS: usize = 256;

/// An app credential as the gateway checks it.
#[derive(Debug, Clone)]
pub struct AppEntry {
    pub app_key: String,
    pub app_id: String,
    pub merchant_id: String,
    pub environment: String,
    /// The current secret, then the previous one during a rotation's grace period.
    pub secrets: Vec<AppSecret>,
    /// Until when the previous secret is live (ms); 0 when there is none.
    pub previous_until: i64,
    pub rsa_public_key: Option<RsaPublicKey>,
    /// App enabled and merchant active.
    pub usable: bool,
    pub allowlist: IpAllowlist,
    pub grants: HashSet<String>,
    pub internal_user_id: Option<String>,
}

pub struct ApiEntry {
    pub id: String,
    pub name: String,
    pub version: String,
    pub group: String,
    pub service: String,
    pub upstream_path: String,
    pub method: Method,
    pub timeout: Duration,
    pub rate_limit_per_second: Option<u64>,
    pub daily_quota: Option<u64>,
    pub needs_user: bool,
    pub business_key: Option<JsonPointer>,
    /// Validates the call's input when the API has a request schema.
    pub request_schema: Option<Arc<jsonschema::Validator>>,
    pub deprecated: bool,
    pub retired: bool,
    /// `name@version`, for records and limits.
    pub label: String,
}

#[derive(Debug)]
pub struct Instance {
    pub id: String,
    pub authority: String,
    pub base_path: String,
    pub weight: u32,
    /// Probed by the active health checks when set.
    pub health_path: Option<String>,
}

#[derive(Debug, Default)]
pub struct ServicePool {
    pub instances: Vec<Arc<Instance>>,
    /// Weighted round robin position.
    pub cursor: AtomicUsize,
}

#[derive(Clone, Default)]
pub struct Snapshot {
    apps: Vec<Arc<FastMap<String, Arc<AppEntry>>>>,
    /// app id → its app keys (sharded by app id), to replace an app's entries.
    keys_of_app: Vec<Arc<FastMap<String, Vec<String>>>>,
    /// Name → version → API, every state but draft; looked up by borrowed strings on
    /// every `/router/rest` call.
    by_name: Arc<FastMap<String, FastMap<String, Arc<ApiEntry>>>>,
    /// name → the newest published (or deprecated) version.
    latest: Arc<FastMap<String, Arc<ApiEntry>>>,
    /// For `/api/{service}/{path}`: service → upstream path → the APIs at that path (one
    /// per method); looked up by borrowed strings on every call.
    by_upstream: Arc<FastMap<String, FastMap<String, Vec<Arc<ApiEntry>>>>>,
    services: Arc<FastMap<String, Arc<ServicePool>>>,
    hasher: FastHasher,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            apps: (0..SHARDS).map(|_| Arc::new(FastMap::default())).collect(),
            keys_of_app: (0..SHARDS).map(|_| Arc::new(FastMap::default())).collect(),
            ..Default::default()
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        self.hasher.hash_one(key) as usize % SHARDS
    }

    pub fn app(&self, app_key: &str) -> Option<&Arc<AppEntry>> {
        self.apps[self.shard_of(app_key)].get(app_key)
    }

    pub fn api(&self, name: &str, version: Option<&str>) -> Option<&Arc<ApiEntry>> {
        match version {
            Some(v) => self.by_name.get(name)?.get(v),
            None => self.latest.get(name),
        }
    }

    pub fn api_by_upstream(&self, service: &str, method: &Method, path: &str) -> Option<&Arc<ApiEntry>> {
        self.by_upstream.get(service)?.get(path)?.iter().find(|e| e.method == *method)
    }

    pub fn service(&self, name: &str) -> Option<&Arc<ServicePool>> {
        self.services.get(name)
    }

    /// Every live instance that asked for active health checks.
    pub fn probed_instances(&self) -> Vec<Arc<Instance>> {
        self.services.values().flat_map(|p| p.instances.iter()).filter(|i| i.health_path.is_some()).cloned().collect()
    }

    pub fn app_count(&self) -> usize {
        self.apps.iter().map(|s| s.len()).sum()
    }

    /// Replaces every entry of the given apps (an app with no rows left disappears).
    /// Copies only the shards those apps live in.
    pub fn with_apps(&self, app_ids: &[String], entries: Vec<AppEntry>) -> Snapshot {
        let mut next = self.clone();
        let mut app_shards: FastMap<usize, FastMap<String, Arc<AppEntry>>> = FastMap::default();
        let mut key_shards: FastMap<usize, FastMap<String, Vec<String>>> = FastMap::default();
        for app_id in app_ids {
            let ks = self.shard_of(app_id);
            let keys = key_shards.entry(ks).or_insert_with(|| (*self.keys_of_app[ks]).clone()).remove(app_id).unwrap_or_default();
            for key in keys {
                let s = self.shard_of(&key);
                app_shards.entry(s).or_insert_with(|| (*self.apps[s]).clone()).remove(&key);
            }
        }
        for e in entries {
            let ks = self.shard_of(&e.app_id);
            key_shards.entry(ks).or_insert_with(|| (*self.keys_of_app[ks]).clone()).entry(e.app_id.clone()).or_default().push(e.app_key.clone());
            let s = self.shard_of(&e.app_key);
            app_shards.entry(s).or_insert_with(|| (*self.apps[s]).clone()).insert(e.app_key.clone(), Arc::new(e));
        }
        for (s, map) in app_shards {
            next.apps[s] = Arc::new(map);
        }
        for (s, map) in key_shards {
            next.keys_of_app[s] = Arc::new(map);
        }
        next
    }

    pub fn with_catalog(&self, apis: Vec<ApiRecord>) -> Snapshot {
        let mut by_name: FastMap<String, FastMap<String, Arc<ApiEntry>>> = FastMap::default();
        let mut latest: FastMap<String, Arc<ApiEntry>> = FastMap::default();
        let mut by_upstream: FastMap<String, FastMap<String, Vec<Arc<ApiEntry>>>> = FastMap::default();
        for a in apis.into_iter().filter(|a| a.state != "draft") {
            let Ok(method) = Method::from_bytes(a.http_method.as_bytes()) else { continue };
            let e = Arc::new(ApiEntry {
                label: format!("{}@{}", a.name, a.version),
                id: a.id,
                group: a.group_name,
                service: a.service,
                upstream_path: a.upstream_path,
                method,
                timeout: Duration::from_millis(a.timeout_ms.max(1) as u64),
                rate_limit_per_second: a.rate_limit_per_second.map(|r| r.max(1) as u64),
                daily_quota: a.daily_quota.map(|q| q.max(1) as u64),
                needs_user: a.needs_user != 0,
                business_key: a.business_key_pointer.as_deref().and_then(|p| JsonPointer::parse(p).ok()),
                request_schema: a
                    .request_schema
                    .as_deref()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                    .and_then(|s| jsonschema::validator_for(&s).ok())
                    .map(Arc::new),
                deprecated: a.state == "deprecated",
                retired: a.state == "retired",
                name: a.name,
                version: a.version,
            });
            by_name.entry(e.name.clone()).or_default().insert(e.version.clone(), e.clone());
            if !e.retired {
                let at_path = by_upstream.entry(e.service.clone()).or_default().entry(e.upstream_path.clone()).or_default();
                // One API per service, method and path: a later one takes the place.
                at_path.retain(|other| other.method != e.method);
                at_path.push(e.clone());
                let newer = latest.get(&e.name).is_none_or(|cur| version_key(&e.version) > version_key(&cur.version));
                if newer {
                    latest.insert(e.name.clone(), e.clone());
                }
            }
        }
        Snapshot { by_name: Arc::new(by_name), latest: Arc::new(latest), by_upstream: Arc::new(by_upstream), ..self.clone() }
    }

    pub fn with_instances(&self, instances: Vec<InstanceRecord>) -> Snapshot {
        let mut services: FastMap<String, Vec<Arc<Instance>>> = FastMap::default();
        // Weights divided by their greatest common divisor, so that round robin over
        // weight units alternates (100 and 100 take turns, not a hundred calls each).
        let divisor = instances.iter().map(|i| i.weight.clamp(1, 1000) as u32).fold(0, gcd).max(1);
        for i in instances {
            services.entry(i.service.clone()).or_default().push(Arc::new(Instance {
                authority: format!("{}:{}", i.host, i.port),
                base_path: i.base_path.trim_end_matches('/').to_string(),
                weight: i.weight.clamp(1, 1000) as u32 / divisor,
                health_path: i.health_path,
                id: i.id,
            }));
        }
        // Keep the round-robin position of services whose instances did not change.
        let services = services
            .into_iter()
            .map(|(name, instances)| {
                let same = self.services.get(&name).is_some_and(|old| old.instances.iter().map(|i| &i.id).eq(instances.iter().map(|i| &i.id)));
                let pool = if same { self.services[&name].clone() } else { Arc::new(ServicePool { instances, cursor: AtomicUsize::new(0) }) };
                (name, pool)
            })
            .collect();
        Snapshot { services: Arc::new(services), ..self.clone() }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Loads the entries of some apps (all apps when `app_ids` is `None`) from the database.
pub async fn load_apps(platform: &Platform, conn: &mut Conn, scope: AppScope<'_>) -> Result<Vec<AppEntry>, Error> {
    let rows = portico_store::apps::gateway_rows(conn, scope.merchant(), scope.app()).await?;
    let grants = portico_store::apps::all_grants(conn, scope.merchant(), scope.app()).await?;
    let mut grants_of: FastMap<String, HashSet<String>> = FastMap::default();
    for (app_id, scope) in grants {
        grants_of.entry(app_id).or_default().insert(scope);
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let secrets = platform.live_secrets(&r.credential)?.into_iter().map(AppSecret::new).collect();
        let allow: Vec<String> = serde_json::from_str(&r.app.ip_allowlist).unwrap_or_default();
        out.push(AppEntry {
            app_key: r.credential.app_key.clone(),
            app_id: r.app.id.clone(),
            merchant_id: r.app.merchant_id.clone(),
            environment: r.credential.environment.clone(),
            secrets,
            previous_until: r.credential.previous_secret_expires_at.unwrap_or(0),
            rsa_public_key: r.app.rsa_public_key.as_deref().and_then(|p| RsaPublicKey::from_public_key_pem(p).ok()),
            usable: r.app.status == "active" && r.merchant_state == "active",
            allowlist: IpAllowlist::parse("ip_allowlist", &allow).unwrap_or_default(),
            grants: grants_of.get(&r.app.id).cloned().unwrap_or_default(),
            internal_user_id: r.internal_user_id,
        });
    }
    Ok(out)
}

/// Which apps to load.
#[derive(Clone, Copy)]
pub enum AppScope<'a> {
    All,
    Merchant(&'a str),
    App(&'a str),
}

impl AppScope<'_> {
    fn merchant(&self) -> Option<&str> {
        match self {
            AppScope::Merchant(m) => Some(m),
            _ => None,
        }
    }
    fn app(&self) -> Option<&str> {
        match self {
            AppScope::App(a) => Some(a),
            _ => None,
        }
    }
}

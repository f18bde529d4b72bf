//! Portico's data plane: the gateway on the public listener and the service registry on
//! the internal one.
//!
//! Every call is served from an immutable [`snapshot::Snapshot`] (apps and their keys,
//! grants, the catalog, live instances) swapped atomically; the database is never waited
//! on for an ordinary call. The snapshot follows the control plane: in-process
//! announcements apply at once, and changes made by other instances are picked up by
//! polling the shared database every half second.

mod envelope;
mod http1;
pub mod limiter;
pub mod pipeline;
pub mod records;
pub mod registry;
mod server;
pub mod snapshot;
pub mod upstream;

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use portico_auth::{replay::NonceStore, signed_request::RequestVerifier};
use portico_console::{Change, Platform};
use portico_core::{time::now_ms, Error};
use portico_oauth::OAuth;
use portico_signing::HmacKey;
use snapshot::{load_apps, AppScope, Snapshot};

/// How often instances with a health path are probed.
const HEALTH_CHECK_PERIOD: Duration = Duration::from_secs(2);

/// Settings of the `[gateway]` configuration section.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub max_body_bytes: usize,
    /// Calls per second per app across all APIs; 0 for none.
    pub app_rate_limit_per_second: u64,
    /// Allowed clock difference of signed calls.
    pub signature_window: Duration,
    /// Key of the identity headers, shared with services; `None`: derived from the master
    /// key.
    pub identity_key: Option<Vec<u8>>,
    /// Redis for the nonce cache in cluster mode; `None`: in memory.
    pub redis_url: Option<String>,
    /// The call-record writer runs on idle CPU time only (see `records`).
    pub records_on_idle_cpu: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings { max_body_bytes: 1 << 20, app_rate_limit_per_second: 0, signature_window: Duration::from_secs(300), identity_key: None, redis_url: None, records_on_idle_cpu: true }
    }
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    platform: Platform,
    oauth: OAuth,
    settings: GatewaySettings,
    identity_key: HmacKey,
    snapshot: ArcSwap<Snapshot>,
    verifier: RequestVerifier,
    client: upstream::Client,
    health: upstream::Health,
    limiter: limiter::Limits,
    recorder: records::Recorder,
}

impl Gateway {
    /// Loads the first snapshot and starts following changes. Inside a Tokio runtime.
    pub async fn start(platform: Platform, oauth: OAuth, settings: GatewaySettings) -> Result<Gateway, Error> {
        // Cluster mode: nonces and rate limits shared through Redis.
        let (nonces, limits) = match &settings.redis_url {
            Some(url) => {
                let nonces = NonceStore::redis(url).await?;
                let NonceStore::Redis(conn) = &nonces else { unreachable!("asked for Redis") };
                let limits = limiter::Limits::redis(conn.clone());
                (nonces, limits)
            }
            None => (NonceStore::memory(settings.signature_window * 2), limiter::Limits::Memory(limiter::RateLimiter::new())),
        };
        let identity_key = match &settings.identity_key {
            Some(key) => HmacKey::new(key),
            None => HmacKey::new(&platform.master_key().derive("gateway identity")),
        };
        let gw = Gateway {
            inner: Arc::new(Inner {
                verifier: RequestVerifier::new(settings.signature_window, nonces),
                recorder: records::Recorder::start(platform.store().clone(), settings.records_on_idle_cpu),
                snapshot: ArcSwap::from_pointee(Snapshot::empty()),
                client: upstream::Client::default(),
                health: upstream::Health::default(),
                limiter: limits,
                identity_key,
                platform,
                oauth,
                settings,
            }),
        };
        gw.reload_all().await?;
        tokio::spawn(gw.clone().follow());
        tokio::spawn(gw.clone().probe_health(HEALTH_CHECK_PERIOD));
        Ok(gw)
    }

    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }
    pub(crate) fn oauth(&self) -> &OAuth {
        &self.inner.oauth
    }
    pub(crate) fn settings(&self) -> &GatewaySettings {
        &self.inner.settings
    }
    pub(crate) fn identity_key(&self) -> &HmacKey {
        &self.inner.identity_key
    }
    pub(crate) fn verifier(&self) -> &RequestVerifier {
        &self.inner.verifier
    }
    pub(crate) fn client(&self) -> &upstream::Client {
        &self.inner.client
    }
    pub(crate) fn health(&self) -> &upstream::Health {
        &self.inner.health
    }
    pub(crate) fn limiter(&self) -> &limiter::Limits {
        &self.inner.limiter
    }
    pub fn recorder(&self) -> &records::Recorder {
        &self.inner.recorder
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }

    /// The public listener's gateway routes (the fallback of that listener).
    pub fn public_handler(&self) -> axum::routing::MethodRouter {
        axum::routing::any(pipeline::handle).with_state(self.clone())
    }

    /// The registry's routes on the internal listener.
    pub fn registry_router(&self) -> axum::Router {
        registry::router(self.clone())
    }

    async fn reload_all(&self) -> Result<(), Error> {
        let store = self.platform().store();
        let mut conn = store.read().await?;
        let apps = load_apps(self.platform(), &mut conn, AppScope::All).await?;
        let apis = portico_store::catalog::apis(&mut conn).await?;
        let instances = portico_store::registry::live(&mut conn, now_ms() - registry::LIVE_FOR_MS).await?;
        let ids: Vec<String> = apps.iter().map(|a| a.app_id.clone()).collect();
        let snap = Snapshot::empty().with_apps(&ids, apps).with_catalog(apis).with_instances(instances);
        tracing::info!(apps = snap.app_count(), "gateway snapshot loaded");
        self.inner.snapshot.store(Arc::new(snap));
        Ok(())
    }

    /// Reloads the entries of some apps and swaps them in.
    async fn reload_apps(&self, scope: AppScope<'_>, app_ids: Vec<String>) -> Result<(), Error> {
        let mut conn = self.platform().store().read().await?;
        let entries = load_apps(self.platform(), &mut conn, scope).await?;
        let mut ids = app_ids;
        ids.extend(entries.iter().map(|e| e.app_id.clone()));
        ids.sort();
        ids.dedup();
        self.inner.snapshot.rcu(|cur| cur.with_apps(&ids, entries.clone()));
        Ok(())
    }

    async fn reload_catalog(&self) -> Result<(), Error> {
        let mut conn = self.platform().store().read().await?;
        let apis = portico_store::catalog::apis(&mut conn).await?;
        self.inner.snapshot.rcu(|cur| cur.with_catalog(apis.clone()));
        Ok(())
    }

    /// Reloads the live instances (after a registration here, and every second).
    pub(crate) async fn refresh_instances(&self) -> Result<(), Error> {
        let mut conn = self.platform().store().read().await?;
        let instances = portico_store::registry::live(&mut conn, now_ms() - registry::LIVE_FOR_MS).await?;
        self.inner.snapshot.rcu(|cur| cur.with_instances(instances.clone()));
        Ok(())
    }

    /// Applies announcements at once; polls the database for changes made elsewhere.
    async fn follow(self) {
        let mut changes = self.platform().subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut since = now_ms() - 1000;
        let mut catalog_seen = 0i64;
        let mut last_forget = std::time::Instant::now();
        loop {
            tokio::select! {
                change = changes.recv() => {
                    let result = match change {
                        Ok(Change::App { app_id, .. }) => self.reload_apps(AppScope::App(&app_id), vec![app_id.clone()]).await,
                        Ok(Change::Merchant { merchant_id }) => self.reload_merchant(&merchant_id).await,
                        Ok(Change::Catalog) => self.reload_catalog().await,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.reload_all().await,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "could not apply a configuration change; the next poll retries");
                    }
                }
                _ = tick.tick() => {
                    let started = now_ms();
                    let result = self.poll(since, &mut catalog_seen).await;
                    match result {
                        // Overlap by a second: a change committed just before `started` by a slow
                        // transaction is still seen.
                        Ok(()) => since = started - 1000,
                        Err(e) => tracing::debug!(error = %e, "configuration poll failed"),
                    }
                    if last_forget.elapsed() >= Duration::from_secs(60) {
                        last_forget = std::time::Instant::now();
                        self.forget_silent_instances().await;
                    }
                }
            }
        }
    }

    async fn probe_health(self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            upstream::probe(self.client(), self.health(), self.snapshot().probed_instances()).await;
        }
    }

    async fn reload_merchant(&self, merchant_id: &str) -> Result<(), Error> {
        let ids = {
            let mut conn = self.platform().store().read().await?;
            portico_store::apps::gateway_rows(&mut conn, Some(merchant_id), None).await?.into_iter().map(|r| r.app.id).collect()
        };
        self.reload_apps(AppScope::Merchant(merchant_id), ids).await
    }

    async fn poll(&self, since: i64, catalog_seen: &mut i64) -> Result<(), Error> {
        let (apps, merchants, catalog) = {
            let mut conn = self.platform().store().read().await?;
            (
                portico_store::apps::changed_since(&mut conn, since).await?,
                portico_store::merchants::changed_since(&mut conn, since).await?,
                portico_store::catalog::last_change(&mut conn).await?,
            )
        };
        for (app_id, _) in apps {
            self.reload_apps(AppScope::App(&app_id), vec![app_id.clone()]).await?;
        }
        for (merchant_id, _) in merchants {
            self.reload_merchant(&merchant_id).await?;
        }
        if catalog != *catalog_seen {
            *catalog_seen = catalog;
            self.reload_catalog().await?;
        }
        self.refresh_instances().await
    }

    async fn forget_silent_instances(&self) {
        let result = async {
            let mut tx = self.platform().store().begin().await?;
            let n = portico_store::registry::forget_silent(&mut tx, now_ms() - registry::FORGET_AFTER_MS).await?;
            portico_store::commit(tx).await?;
            Ok::<_, Error>(n)
        }
        .await;
        if let Ok(n) = result.map_err(|e| tracing::debug!(error = %e, "could not forget silent instances")) {
            if n > 0 {
                tracing::info!(forgotten = n, "forgot instances silent for five minutes");
            }
        }
    }
}

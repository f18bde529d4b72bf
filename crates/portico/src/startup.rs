//! Builds the application exactly as `portico serve` runs it: storage, master key, the
//! first super admin, and the three listeners. Tests call [`App::build`] with port 0 and
//! drive the real sockets.

use std::{future::Future, net::SocketAddr, path::Path, time::Duration};

use anyhow::{bail, Context};
use axum::{
    extract::{DefaultBodyLimit, Request},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use portico_auth::MasterKey;
use portico_console::{operators::Bootstrap, Platform};
use portico_gateway::Gateway;
use portico_messaging::Messaging;
use portico_oauth::OAuth;
use portico_core::{
    http::{self as envelope, ApiError, Success},
    Code,
};
use portico_store::Store;
use tokio::{net::TcpListener, sync::watch};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{config::Config, console_page};

pub struct App {
    config: Config,
    platform: Platform,
    oauth: OAuth,
    gateway: Gateway,
    messaging: Messaging,
    public: TcpListener,
    console: TcpListener,
    internal: TcpListener,
}

/// Where the listeners ended up (port 0 in the configuration picks a free port).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub public: SocketAddr,
    pub console: SocketAddr,
    pub internal: SocketAddr,
}

impl App {
    /// Opens the database (running migrations), loads the master key, creates the first
    /// super admin if there is none, and binds the listeners.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let store = open_store(&config).await?;
        let key = master_key(&config)?;
        let platform = Platform::new(store, key, config.console_settings());
        let password = (!config.admin.password.is_empty()).then_some(config.admin.password.as_str());
        match platform.bootstrap_super_admin(&config.admin.email, password).await? {
            Bootstrap::Existing => {}
            Bootstrap::Created { email } => tracing::info!(%email, "created the first super admin with the configured password"),
            Bootstrap::CreatedWithGeneratedPassword { email, password } => {
                // Printed once, to the terminal only; never logged.
                println!("\n  Portico created the first super admin.\n    email:    {email}\n    password: {password}\n  It is shown this once. Sign in and change it.\n");
            }
        }
        let bind = |addr: SocketAddr, name: &'static str| async move {
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {name}.addr {addr}"))
        };
        let public = bind(config.public.addr, "public").await?;
        let console = bind(config.console.addr, "console").await?;
        let internal = bind(config.internal.addr, "internal").await?;
        let oauth = OAuth::new(platform.clone(), config.oauth_settings(public.local_addr()?, internal.local_addr()?));
        oauth.prepare().await.context("while loading the JWT signing keys")?;
        let gateway = Gateway::start(platform.clone(), oauth.clone(), config.gateway_settings()).await.context("while starting the gateway")?;
        let messaging = Messaging::start(platform.clone(), oauth.clone(), config.messaging_settings()).await.context("while starting message push")?;
        Ok(App { public, console, internal, platform, oauth, gateway, messaging, config })
    }

    pub fn addresses(&self) -> Addresses {
        Addresses {
            public: self.public.local_addr().expect("bound"),
            console: self.console.local_addr().expect("bound"),
            internal: self.internal.local_addr().expect("bound"),
        }
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    pub fn oauth(&self) -> &OAuth {
        &self.oauth
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    pub fn messaging(&self) -> &Messaging {
        &self.messaging
    }

    /// Serves until `shutdown` completes, then stops accepting and gives requests in
    /// flight `shutdown.grace_secs` to finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let App { config, platform, oauth, gateway, messaging, public, console, internal } = self;
        let addrs = Addresses {
            public: public.local_addr()?,
            console: console.local_addr()?,
            internal: internal.local_addr()?,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (api, openapi) = portico_console::api::router(platform.clone());
        let openapi_json = openapi.to_json().context("while rendering the OpenAPI document")?;
        let console_router = Router::new()
            .route("/", get(console_page::page))
            .route("/openapi.json", get(move || async move { ([("content-type", "application/json")], openapi_json.clone()) }))
            .merge(api);
        let console_router = console_router.fallback(envelope::route_not_found);
        // The gateway answers every public path the OAuth2 server and message receiving
        // do not.
        let public_router = portico_oauth::api::public_router(oauth.clone()).merge(messaging.public_router()).fallback_service(gateway.public_handler());
        let internal_router = portico_oauth::api::internal_router(oauth.clone())
            .merge(gateway.registry_router())
            .merge(messaging.internal_router())
            .fallback(envelope::route_not_found);

        let mut servers = tokio::task::JoinSet::new();
        {
            // The gateway serves from its snapshot without the database, so the public
            // listener stays ready (degraded) when the database is gone. Its own accept
            // loop sends gateway calls straight into the pipeline.
            let app = with_common_layers(public_router, &platform, &config, Some(gateway.clone()));
            let mut stop = stop_rx.clone();
            let grace = Duration::from_secs(config.shutdown.grace_secs);
            let gw = gateway.clone();
            servers.spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                ("public", gw.serve(public, app, stopped, grace).await)
            });
        }
        for (name, listener, router) in [("console", console, console_router), ("internal", internal, internal_router)] {
            let app = with_common_layers(router, &platform, &config, None);
            let mut stop = stop_rx.clone();
            servers.spawn(async move {
                let result = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                (name, result)
            });
        }
        let janitor = tokio::spawn(purge_expired_sessions(platform.clone()));
        let revocations = tokio::spawn(oauth.clone().follow_changes(Duration::from_millis(500)));
        tracing::info!(public = %addrs.public, console = %addrs.console, internal = %addrs.internal, database = ?platform.store().engine(), "portico is serving");

        tokio::pin!(shutdown);
        let early = tokio::select! {
            _ = &mut shutdown => None,
            Some(done) = servers.join_next() => Some(done),
        };
        if let Some(done) = early {
            let (name, result) = done.context("a listener task panicked")?;
            let _ = stop_tx.send(true);
            bail!("the {name} listener stopped unexpectedly: {result:?}");
        }
        tracing::info!(grace_secs = config.shutdown.grace_secs, "shutting down: no new connections; finishing requests in flight");
        let _ = stop_tx.send(true);
        let grace = Duration::from_secs(config.shutdown.grace_secs);
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = servers.join_next().await {
                if let Ok((name, Err(e))) = done {
                    tracing::warn!(listener = name, error = %e, "listener ended with an error");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("requests still in flight after the grace period; stopping anyway");
        }
        janitor.abort();
        revocations.abort();
        messaging.stop();
        platform.store().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if config.is_embedded() {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    }
    let url = config.database_url();
    Store::open(&url, config.database.max_connections)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", crate::config::mask_url(&url)))
}

/// The master key: configured, or (embedded mode only) read from or generated into
/// `data_dir/master.key` with owner-only permissions.
pub fn master_key(config: &Config) -> anyhow::Result<MasterKey> {
    if !config.master_key.is_empty() {
        return MasterKey::parse(&config.master_key).map_err(|e| anyhow::anyhow!("master_key: {e}"));
    }
    if !config.is_embedded() {
        bail!("master_key must be set (PORTICO_MASTER_KEY) when the database is PostgreSQL, the same on every instance");
    }
    let path = config.data_dir.join("master.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        return MasterKey::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let (key, hex_form) = MasterKey::generate();
    write_owner_only(&path, &hex_form)?;
    tracing::info!(path = %path.display(), "generated a new master key; back it up: without it app secrets cannot be read");
    Ok(key)
}

fn write_owner_only(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Health probes, envelopes for unknown routes and methods, body limits, timeouts,
/// panics turned into 500 envelopes, and the trace id: the same on every listener. The
/// public listener passes its gateway: it stays ready without the database, and its
/// readiness counts the call records dropped.
fn with_common_layers(router: Router, platform: &Platform, config: &Config, gateway: Option<Gateway>) -> Router {
    let timeout = Duration::from_secs(config.http.request_timeout_secs);
    let ready_platform = platform.clone();
    router
        .route("/healthz", get(|| async { Success(serde_json::json!({ "status": "alive" })) }))
        .route("/readyz", get(move || readyz(ready_platform.clone(), gateway.clone())))
        .method_not_allowed_fallback(envelope::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.http.max_body_bytes))
        .layer(CatchPanicLayer::custom(envelope::panic_response))
        .layer(middleware::from_fn(move |req: Request, next: Next| async move {
            match tokio::time::timeout(timeout, next.run(req)).await {
                Ok(response) => response,
                Err(_) => ApiError::new(Code::Unavailable, "the request took too long").into_response(),
            }
        }))
        .layer(middleware::from_fn(portico_core::trace::layer))
}

async fn readyz(platform: Platform, gateway: Option<Gateway>) -> Response {
    // Call records dropped since start because the writer fell behind (the channel was
    // full): calls never wait for their records.
    let dropped = gateway.as_ref().map(|g| g.recorder().dropped());
    if platform.store().ping().await {
        let mut data = serde_json::json!({ "status": "ready", "database": "ok" });
        if let Some(n) = dropped {
            data["call_records_dropped"] = n.into();
        }
        Success(data).into_response()
    } else if let Some(n) = dropped {
        Success(serde_json::json!({ "status": "degraded", "database": "unreachable", "gateway": "serving from its last configuration snapshot", "call_records_dropped": n }))
            .into_response()
    } else {
        let mut e = ApiError::new(Code::Unavailable, "the database is unreachable");
        e.data = serde_json::json!({ "status": "not_ready", "database": "unreachable" });
        e.into_response()
    }
}

async fn purge_expired_sessions(platform: Platform) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let result = async {
            let mut tx = platform.store().begin().await?;
            let n = portico_store::sessions::purge_expired(&mut tx, portico_core::time::now_ms()).await?;
            portico_store::commit(tx).await?;
            Ok::<_, portico_core::Error>(n)
        }
        .await;
        match result {
            Ok(n) if n > 0 => tracing::info!(purged = n, "purged expired console sessions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not purge expired sessions"),
        }
    }
}


//! Portico's OAuth2 authorization server.
//!
//! - `client_credentials` for apps (RFC 6749 §4.4), `authorization_code` with PKCE for end
//!   users (§4.1, RFC 7636), `refresh_token` with atomic rotation and reuse detection;
//! - revocation (RFC 7009) and metadata (RFC 8414) on the public listener, introspection
//!   (RFC 7662) on the internal one;
//! - end-user accounts, the sign-in and consent page, and the user's list of apps it
//!   authorized.
//!
//! Tokens are opaque (`pat_…` access, `prt_…` refresh), stored as SHA-256 digests, and
//! validated through [`cache::TokenCache`] so the gateway's hot path does not wait on the
//! database; revocations reach every instance's cache within a second.

pub mod api;
pub mod cache;
mod clients;
pub mod error;
mod flows;
pub mod jwt;
mod limiter;
mod pages;
pub mod tokens;
pub mod users;

use std::{sync::Arc, time::Duration};

use portico_console::Platform;

pub use cache::TokenInfo;
pub use error::OAuthError;

/// Settings of the `[oauth]` configuration section.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The issuer identifier published in the metadata (the public base URL).
    pub issuer: String,
    /// Where internal services introspect tokens (the internal listener's base URL).
    pub introspection_base: String,
    pub app_access_token_ttl: Duration,
    pub user_access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub code_ttl: Duration,
    /// How long a rotated refresh token may still be used, for clients that refresh
    /// concurrently; after it, reuse revokes the whole family.
    pub refresh_grace: Duration,
    pub user_session_ttl: Duration,
    /// Failed client authentications (or end-user sign-ins) per client and per IP address
    /// within `failure_window` before further attempts are refused for a while.
    pub failure_limit: u32,
    pub failure_window: Duration,
    pub cache_max_entries: usize,
    pub secure_cookies: bool,
    /// Issue access tokens as RFC 9068 JWTs instead of opaque strings.
    pub jwt_access_tokens: bool,
    pub jwt_key_rotation: Duration,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        OAuthSettings {
            issuer: "http://127.0.0.1:8080".into(),
            introspection_base: "http://127.0.0.1:8082".into(),
            app_access_token_ttl: Duration::from_secs(2 * 3600),
            user_access_token_ttl: Duration::from_secs(30 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 3600),
            code_ttl: Duration::from_secs(60),
            refresh_grace: Duration::from_secs(10),
            user_session_ttl: Duration::from_secs(24 * 3600),
            failure_limit: 10,
            failure_window: Duration::from_secs(300),
            cache_max_entries: 100_000,
            secure_cookies: true,
            jwt_access_tokens: false,
            jwt_key_rotation: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The authorization server: cheap to clone. `new` starts the token writer task, so it
/// must run inside a Tokio runtime.
#[derive(Clone)]
pub struct OAuth {
    inner: Arc<Inner>,
}

struct Inner {
    platform: Platform,
    settings: OAuthSettings,
    cache: cache::TokenCache,
    app_status: cache::AppStatusCache,
    limiter: limiter::FailureLimiter,
    jwt: Option<jwt::JwtKeys>,
    writer: tokens::TokenWriter,
}

impl OAuth {
    pub fn new(platform: Platform, settings: OAuthSettings) -> OAuth {
        let cache = cache::TokenCache::new(settings.cache_max_entries);
        let limiter = limiter::FailureLimiter::new(settings.failure_limit, settings.failure_window);
        let app_status = cache::AppStatusCache::new(Duration::from_secs(1));
        let longest = settings.app_access_token_ttl.max(settings.user_access_token_ttl);
        let jwt = settings.jwt_access_tokens.then(|| jwt::JwtKeys::new(settings.jwt_key_rotation, longest));
        let writer = tokens::TokenWriter::start(platform.store().clone());
        OAuth { inner: Arc::new(Inner { platform, settings, cache, app_status, limiter, jwt, writer }) }
    }

    /// Loads (or creates) the JWT signing keys when JWT access tokens are on.
    pub async fn prepare(&self) -> Result<(), portico_core::Error> {
        if let Some(keys) = &self.inner.jwt {
            keys.refresh(self.platform().store(), self.platform().master_key()).await?;
        }
        Ok(())
    }

    pub(crate) fn token_writer(&self) -> &tokens::TokenWriter {
        &self.inner.writer
    }

    pub(crate) fn jwt(&self) -> Option<&jwt::JwtKeys> {
        self.inner.jwt.as_ref()
    }

    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.inner.settings
    }

    pub fn cache(&self) -> &cache::TokenCache {
        &self.inner.cache
    }

    pub(crate) fn app_status_cache(&self) -> &cache::AppStatusCache {
        &self.inner.app_status
    }

    pub(crate) fn limiter(&self) -> &limiter::FailureLimiter {
        &self.inner.limiter
    }

    /// Keeps this instance's caches in step: drops app statuses when the control plane
    /// announces a change here, and evicts tokens revoked anywhere (other instances write
    /// revocations to the shared database), polling every `period`.
    pub async fn follow_changes(self, period: Duration) {
        let mut since = portico_core::time::now_ms() - 1000;
        let mut tick = tokio::time::interval(period);
        let mut changes = self.platform().subscribe();
        let mut last_key_check = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                change = changes.recv() => {
                    match change {
                        Ok(portico_console::Change::App { app_id, .. }) => self.app_status_cache().evict(&app_id),
                        Ok(portico_console::Change::Catalog) => {}
                        // A merchant change, or missed announcements: start over.
                        Ok(portico_console::Change::Merchant { .. }) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            self.app_status_cache().clear()
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                    continue;
                }
            }
            let result = async {
                let mut conn = self.platform().store().read().await?;
                portico_store::oauth::revoked_since(&mut conn, since).await
            }
            .await;
            match result {
                Ok(rows) => {
                    for (digest, at) in rows {
                        self.cache().evict(&digest);
                        // Overlap by a second: a revocation committed late is still seen.
                        since = since.max(at - 1000);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not poll revocations"),
            }
            // Once a minute: pick up keys other instances made, and rotate when due.
            if last_key_check.elapsed() >= Duration::from_secs(60) {
                last_key_check = std::time::Instant::now();
                if let Err(e) = self.prepare().await {
                    tracing::warn!(error = %e, "could not refresh the JWT signing keys");
                }
            }
        }
    }
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

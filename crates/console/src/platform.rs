//! The `Platform` handle: the store, the master key and the console's settings. Cheap to
//! clone; every operation of the console domain is a method on it (see the sibling
//! modules, one per concept).

use std::{sync::Arc, time::Duration};

use portico_auth::MasterKey;
use portico_store::Store;

/// Tunables of the console domain, from the `[console]` configuration section.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Lifetime of a console access token (and of a browser session's idle window).
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token.
    pub refresh_token_ttl: Duration,
    /// Failed sign-ins in a row before an account locks.
    pub lock_after_failures: u32,
    /// How long a locked account stays locked.
    pub lock_duration: Duration,
    /// Added delay per failed sign-in in a row (capped at five steps), to slow guessing.
    pub failed_login_delay: Duration,
    /// How long a rotated app secret keeps working, unless a rotation asks otherwise.
    pub rotation_grace: Duration,
    /// Whether browser session cookies carry `Secure`.
    pub secure_cookies: bool,
    /// Which addresses webhooks may reach (server-side request forgery rules).
    pub webhook_targets: portico_core::domain::TargetPolicy,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            access_token_ttl: Duration::from_secs(30 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 3600),
            lock_after_failures: 5,
            lock_duration: Duration::from_secs(15 * 60),
            failed_login_delay: Duration::from_millis(200),
            rotation_grace: Duration::from_secs(24 * 3600),
            secure_cookies: true,
            webhook_targets: Default::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Platform {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    key: MasterKey,
    settings: ConsoleSettings,
    changes: tokio::sync::broadcast::Sender<Change>,
}

/// A committed change to an object that data-plane caches hold, announced in-process
/// after the transaction commits. (Other instances notice through their caches' short
/// lifetimes and the shared database.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A merchant's state or binding changed: every app of it may be affected.
    Merchant { merchant_id: String },
    /// An app's settings, status, credentials or grants changed.
    App { merchant_id: String, app_id: String },
    /// The API catalog changed.
    Catalog,
}

impl Platform {
    pub fn new(store: Store, key: MasterKey, settings: ConsoleSettings) -> Platform {
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        Platform { inner: Arc::new(Inner { store, key, settings, changes }) }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn key(&self) -> &MasterKey {
        &self.inner.key
    }

    /// The master key, for other components that seal what they store (signing keys).
    pub fn master_key(&self) -> &MasterKey {
        &self.inner.key
    }

    pub fn settings(&self) -> &ConsoleSettings {
        &self.inner.settings
    }

    /// Receives every change committed from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Announces a committed change; nobody listening is fine.
    pub(crate) fn announce(&self, change: Change) {
        let _ = self.inner.changes.send(change);
    }
}

/// Runs a slow, CPU-bound function (password hashing) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, portico_core::Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| portico_core::Error::Internal(format!("blocking task failed: {e}")))
}

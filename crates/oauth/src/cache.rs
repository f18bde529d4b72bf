//! The validated-token cache: digest → what the token grants. Bounded; entries are
//! dropped when their token expires, when it is revoked here, or when
//! [`crate::OAuth::follow_revocations`] sees a revocation made on another instance.

use std::sync::{Arc, RwLock};

use portico_core::FastMap;

/// What a valid access token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub token_id: String,
    pub app_id: String,
    pub merchant_id: String,
    /// The client's `app_key`.
    pub client_id: String,
    /// `sandbox` or `production`.
    pub environment: String,
    /// The end user, for tokens from the authorization-code flow.
    pub user_id: Option<String>,
    /// Space-separated scopes.
    pub scope: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

pub struct TokenCache {
    max_entries: usize,
    map: RwLock<FastMap<String, Arc<TokenInfo>>>,
}

impl TokenCache {
    pub fn new(max_entries: usize) -> TokenCache {
        TokenCache { max_entries: max_entries.max(1), map: RwLock::new(FastMap::default()) }
    }

    /// The cached info for a digest, if present and not expired at `now_ms`.
    pub fn get(&self, digest: &str, now_ms: i64) -> Option<Arc<TokenInfo>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(digest).filter(|t| t.expires_at > now_ms).cloned()
    }

    pub fn insert(&self, digest: String, info: Arc<TokenInfo>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_entries {
            // Full: drop expired entries first, then an arbitrary tenth.
            let now = portico_core::time::now_ms();
            map.retain(|_, t| t.expires_at > now);
            if map.len() >= self.max_entries {
                let drop: Vec<String> = map.keys().take(self.max_entries / 10 + 1).cloned().collect();
                for k in drop {
                    map.remove(&k);
                }
            }
        }
        map.insert(digest, info);
    }

    pub fn evict(&self, digest: &str) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).remove(digest);
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether an app may still use its tokens (app enabled, merchant active), remembered
/// for at most a second so that introspection does not query the database on every call
/// and a suspension still takes effect within a second.
pub struct AppStatusCache {
    ttl: std::time::Duration,
    map: RwLock<FastMap<String, (AppStatus, std::time::Instant)>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStatus {
    pub usable: bool,
    pub internal_user_id: Option<String>,
}

impl AppStatusCache {
    pub fn new(ttl: std::time::Duration) -> AppStatusCache {
        AppStatusCache { ttl, map: RwLock::new(FastMap::default()) }
    }

    pub fn get(&self, app_id: &str) -> Option<AppStatus> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(app_id).filter(|(_, at)| at.elapsed() < self.ttl).map(|(s, _)| s.clone())
    }

    pub fn evict(&self, app_id: &str) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).remove(app_id);
    }

    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn insert(&self, app_id: &str, status: AppStatus) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        map.insert(app_id.to_string(), (status, std::time::Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(exp: i64) -> TokenInfo {
        TokenInfo {
            token_id: "t".into(),
            app_id: "a".into(),
            merchant_id: "m".into(),
            client_id: "k".into(),
            environment: "sandbox".into(),
            user_id: None,
            scope: String::new(),
            issued_at: 0,
            expires_at: exp,
        }
    }

    #[test]
    fn bounded_and_expiring() {
        let c = TokenCache::new(10);
        let far = portico_core::time::now_ms() + 60_000;
        for i in 0..25 {
            c.insert(format!("d{i}"), Arc::new(info(far)));
            assert!(c.len() <= 10);
        }
        c.insert("old".into(), Arc::new(info(5)));
        assert!(c.get("old", 10).is_none(), "expired entries are not served");
        c.insert("x".into(), Arc::new(info(far)));
        assert!(c.get("x", 0).is_some());
        c.evict("x");
        assert!(c.get("x", 0).is_none());
    }
}

//! The nonce cache behind replay protection: a nonce seen within the timestamp window is
//! refused. In memory on one node; in Redis in cluster mode, so a replay sent to another
//! instance fails too.

use std::{
    collections::HashSet,
    hash::BuildHasher,
    sync::Mutex,
    time::{Duration, Instant},
};

use portico_core::Error;

/// Where nonces are remembered.
pub enum NonceStore {
    Memory(MemoryNonces),
    Redis(redis::aio::ConnectionManager),
}

impl NonceStore {
    pub fn memory(window: Duration) -> NonceStore {
        NonceStore::Memory(MemoryNonces::new(window))
    }

    /// Connects to Redis (`redis://host:port/db`). Every call is bounded: a Redis that
    /// does not answer makes verification fail with `Unavailable`, never hang.
    pub async fn redis(url: &str) -> Result<NonceStore, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::validation("redis.url", e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2));
        let connect = redis::aio::ConnectionManager::new_with_config(client, config);
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(manager)) => Ok(NonceStore::Redis(manager)),
            Ok(Err(e)) => Err(Error::Unavailable(format!("redis: {e}"))),
            Err(_) => Err(Error::Unavailable("redis: connection timed out".into())),
        }
    }

    /// Remembers `nonce` for `app_key` for at least `ttl`; returns false if it was
    /// already there (a replay).
    pub async fn first_use(&self, app_key: &str, nonce: &str, ttl: Duration) -> Result<bool, Error> {
        match self {
            NonceStore::Memory(m) => Ok(m.first_use(app_key, nonce)),
            NonceStore::Redis(conn) => {
                let mut conn = conn.clone();
                let key = format!("portico:nonce:{app_key}:{nonce}");
                let set: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::Unavailable(format!("redis: {e}")))?;
                Ok(set.is_some())
            }
        }
    }
}

/// Nonces in memory, in two generations per shard: a nonce lives between one and two
/// windows, so memory stays bounded by the request rate times two windows, and no nonce
/// is forgotten before its window ends.
pub struct MemoryNonces {
    window: Duration,
    shards: Vec<Mutex<Generations>>,
    hasher: std::collections::hash_map::RandomState,
}

struct Generations {
    current: HashSet<(Box<str>, Box<str>)>,
    previous: HashSet<(Box<str>, Box<str>)>,
    rotated_at: Instant,
}

const SHARDS: usize = 16;

impl MemoryNonces {
    pub fn new(window: Duration) -> MemoryNonces {
        MemoryNonces {
            window,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Generations { current: HashSet::new(), previous: HashSet::new(), rotated_at: Instant::now() }))
                .collect(),
            hasher: Default::default(),
        }
    }

    pub fn first_use(&self, app_key: &str, nonce: &str) -> bool {
        let shard = &self.shards[self.hasher.hash_one((app_key, nonce)) as usize % SHARDS];
        let mut g = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if g.rotated_at.elapsed() >= self.window {
            g.previous = std::mem::take(&mut g.current);
            g.rotated_at = Instant::now();
        }
        let key = (Box::from(app_key), Box::from(nonce));
        if g.previous.contains(&key) {
            return false;
        }
        g.current.insert(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_refuses_replays_and_forgets_after_two_windows() {
        let m = MemoryNonces::new(Duration::from_millis(50));
        assert!(m.first_use("k", "n1"));
        assert!(!m.first_use("k", "n1"));
        assert!(m.first_use("other", "n1"), "nonces are per app");
        std::thread::sleep(Duration::from_millis(60));
        assert!(!m.first_use("k", "n1"), "still remembered in the previous generation");
        std::thread::sleep(Duration::from_millis(110));
        assert!(m.first_use("k", "n1"), "forgotten after two windows");
    }
}

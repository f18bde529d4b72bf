//! Slows brute force: failed client authentications and sign-ins are counted per client
//! and per IP address in a fixed window; at the limit further attempts are refused until
//! the window ends, whether or not they would have succeeded.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct FailureLimiter {
    limit: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (u32, Instant)>>,
}

impl FailureLimiter {
    pub fn new(limit: u32, window: Duration) -> FailureLimiter {
        FailureLimiter { limit, window, counts: Mutex::new(HashMap::new()) }
    }

    /// Seconds to wait if any of `keys` is at its limit.
    pub fn blocked(&self, keys: &[&str]) -> Option<u64> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| counts.get(*k))
            .filter(|(n, start)| *n >= self.limit && start.elapsed() < self.window)
            .map(|(_, start)| (self.window - start.elapsed()).as_secs().max(1))
            .max()
    }

    pub fn fail(&self, keys: &[&str]) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() > 100_000 {
            let window = self.window;
            counts.retain(|_, (_, start)| start.elapsed() < window);
        }
        for k in keys {
            let entry = counts.entry(k.to_string()).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= self.window {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    pub fn succeed(&self, key: &str) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_at_the_limit_per_key() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.blocked(&["client:a", "ip:1"]).is_none());
            l.fail(&["client:a", "ip:1"]);
        }
        assert!(l.blocked(&["client:a"]).is_some());
        assert!(l.blocked(&["ip:1"]).is_some());
        assert!(l.blocked(&["client:b", "ip:2"]).is_none());
        l.succeed("client:a");
        assert!(l.blocked(&["client:a"]).is_none());
    }
}

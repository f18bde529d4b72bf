//! Rate limits with GCRA (the generic cell rate algorithm): smooth, no fixed window that
//! lets twice the rate through at a boundary. Each key keeps one number, its theoretical
//! arrival time. In memory on one instance; in cluster mode the same algorithm runs as a
//! Lua script in Redis on Redis's clock, so a limit is exact across instances.

use std::{
    hash::BuildHasher,
    sync::Mutex,
    time::{Duration, Instant},
};

use portico_core::{FastHasher, FastMap};

const SHARDS: usize = 64;

/// Where limits are counted.
pub enum Limits {
    Memory(RateLimiter),
    Redis { conn: redis::aio::ConnectionManager, script: redis::Script },
}

const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return {0, allow_at - now} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1000)
return {1, math.floor((now + tolerance + interval - new_tat) / interval)}
"#;

impl Limits {
    /// Counts one call against a daily quota; `Some(seconds until the day ends)` when the
    /// quota is used up (the refused call is not counted).
    pub async fn over_quota(&self, key: &str, quota: u64) -> Option<u64> {
        let (day, left) = portico_core::time::platform_day(portico_core::time::now_ms() / 1000);
        let count = match self {
            Limits::Memory(m) => m.count_day(key, day),
            Limits::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let k = format!("portico:quota:{key}:{day}");
                let result: redis::RedisResult<(u64,)> = redis::pipe().atomic().incr(&k, 1).expire(&k, 2 * 86_400).ignore().query_async(&mut conn).await;
                match result {
                    Ok((n,)) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "quota store unreachable; call allowed");
                        0
                    }
                }
            }
        };
        (count > quota).then_some(left)
    }

    pub fn redis(conn: redis::aio::ConnectionManager) -> Limits {
        Limits::Redis { conn, script: redis::Script::new(GCRA_LUA) }
    }

    /// One request against `rate` per second with a burst of `rate`. When Redis cannot be
    /// reached the call is allowed (and logged): a limiter outage must not take the
    /// gateway down with it.
    ///
    /// The key is given in parts (`["app:", app_id]`), joined without an allocation per
    /// call in memory. `at` is the call's time (in memory; Redis keeps its own clock).
    pub async fn check(&self, key: &[&str], rate: u64, at: Instant) -> Decision {
        match self {
            Limits::Memory(m) => {
                thread_local! {
                    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
                }
                KEY.with(|k| {
                    let mut k = k.borrow_mut();
                    k.clear();
                    key.iter().for_each(|part| k.push_str(part));
                    m.check(&k, rate, at)
                })
            }
            Limits::Redis { conn, script } => {
                let rate = rate.max(1);
                let interval = 1_000_000 / rate;
                let tolerance = interval * (rate - 1);
                let mut conn = conn.clone();
                let result: redis::RedisResult<(i64, i64)> =
                    script.key(format!("portico:limit:{}", key.concat())).arg(interval).arg(tolerance).invoke_async(&mut conn).await;
                match result {
                    Ok((1, remaining)) => Decision::Allow { remaining: remaining.max(0) as u64 },
                    Ok((_, wait_us)) => Decision::Deny { retry_after: Duration::from_micros(wait_us.max(0) as u64) },
                    Err(e) => {
                        tracing::warn!(error = %e, "rate limit store unreachable; call allowed");
                        Decision::Allow { remaining: 0 }
                    }
                }
            }
        }
    }
}

pub struct RateLimiter {
    epoch: Instant,
    shards: Vec<Mutex<FastMap<String, u64>>>,
    hasher: FastHasher,
    /// Daily counts: key → (day, calls).
    days: Mutex<FastMap<String, (i64, u64)>>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` requests could follow at once.
    Allow { remaining: u64 },
    /// Refused; retry after this long.
    Deny { retry_after: Duration },
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimiter {
    pub fn new() -> RateLimiter {
        RateLimiter {
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(FastMap::default())).collect(),
            hasher: Default::default(),
            days: Mutex::new(FastMap::default()),
        }
    }

    /// Counts a call for `key` on `day`; returns the day's count so far.
    fn count_day(&self, key: &str, day: i64) -> u64 {
        let mut days = self.days.lock().unwrap_or_else(|p| p.into_inner());
        if days.len() > 200_000 {
            days.retain(|_, (d, _)| *d == day);
        }
        let e = days.entry(key.to_string()).or_insert((day, 0));
        if e.0 != day {
            *e = (day, 0);
        }
        e.1 += 1;
        e.1
    }

    /// One request at `at` against `rate` per second with a burst of `rate` (at least 1).
    pub fn check(&self, key: &str, rate: u64, at: Instant) -> Decision {
        self.check_at(key, rate, at.saturating_duration_since(self.epoch).as_nanos() as u64)
    }

    fn check_at(&self, key: &str, rate: u64, now: u64) -> Decision {
        let rate = rate.max(1);
        let interval = 1_000_000_000 / rate;
        let tolerance = interval * (rate - 1);
        let mut shard = self.shards[self.hasher.hash_one(key) as usize % SHARDS].lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() > 200_000 {
            // Keys idle for a second or more carry no state worth keeping.
            shard.retain(|_, tat| *tat + 1_000_000_000 > now);
        }
        let tat = shard.get(key).copied().unwrap_or(now).max(now);
        let allow_at = tat.saturating_sub(tolerance);
        if now < allow_at {
            return Decision::Deny { retry_after: Duration::from_nanos(allow_at - now) };
        }
        let new_tat = tat + interval;
        match shard.get_mut(key) {
            Some(t) => *t = new_tat,
            None => {
                shard.insert(key.to_string(), new_tat);
            }
        }
        let remaining = (now + tolerance + interval).saturating_sub(new_tat) / interval;
        Decision::Allow { remaining }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate_without_boundary_doubling() {
        let l = RateLimiter::new();
        let s = 1_000_000_000u64;
        // A burst of `rate` passes, the next is refused.
        for i in 0..5 {
            assert!(matches!(l.check_at("k", 5, 10 * s), Decision::Allow { .. }), "request {i}");
        }
        let Decision::Deny { retry_after } = l.check_at("k", 5, 10 * s) else { panic!("over the burst") };
        assert_eq!(retry_after, Duration::from_millis(200));
        // One more is allowed each interval, never a fresh burst at a "window" boundary.
        assert!(matches!(l.check_at("k", 5, 10 * s + s / 5), Decision::Allow { .. }));
        assert!(matches!(l.check_at("k", 5, 10 * s + s / 5), Decision::Deny { .. }));
        assert!(matches!(l.check_at("k", 5, 11 * s), Decision::Allow { .. }));
        // Keys are independent.
        assert!(matches!(l.check_at("other", 5, 10 * s), Decision::Allow { remaining: 4 }));
    }

    #[test]
    fn days_start_at_midnight_utc_plus_8() {
        // 2023-11-14 16:00:00 UTC is midnight in UTC+8.
        let midnight = 1_699_977_600;
        assert_eq!(portico_core::time::platform_day(midnight).0, portico_core::time::platform_day(midnight - 1).0 + 1);
        assert_eq!(portico_core::time::platform_day(midnight - 1).1, 1);
        assert_eq!(portico_core::time::platform_day(midnight).1, 86_400);
        let l = RateLimiter::new();
        assert_eq!(l.count_day("k", 5), 1);
        assert_eq!(l.count_day("k", 5), 2);
        assert_eq!(l.count_day("k", 6), 1, "a new day starts over");
    }

    #[test]
    fn long_run_rate_holds() {
        let l = RateLimiter::new();
        let mut allowed = 0;
        // 10 s of a request every millisecond against 100/s: burst 100, then 100/s.
        for ms in 0..10_000u64 {
            if matches!(l.check_at("k", 100, ms * 1_000_000), Decision::Allow { .. }) {
                allowed += 1;
            }
        }
        assert!((1090..=1101).contains(&allowed), "{allowed}");
    }
}

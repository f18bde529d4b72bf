//! Forwarding to registered instances: weighted round robin over the instances that are
//! not ejected, a pooled keep-alive HTTP/1.1 client, per-API timeouts, retries on a
//! connection failure (and on any failure for idempotent methods), passive health
//! (an instance that fails three calls in a row is ejected for ten seconds and then
//! tried again), active health (instances that registered a health path are probed; three
//! failed probes in a row eject too, until a probe succeeds), and a per-service circuit: when every instance is ejected, calls are
//! refused at once until the first ejection ends.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use axum::http::{Method, Request, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use crate::snapshot::{Instance, ServicePool};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

const EJECT_AFTER: u32 = 3;
const EJECT_FOR: Duration = Duration::from_secs(10);

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).pool_max_idle_per_host(512).build(connector)
}

/// Consecutive failures and ejections, per instance id. Calls and probes are counted
/// apart: a call that succeeds does not excuse failing probes, and a failing call does
/// not wait for the next probe.
#[derive(Default)]
pub struct Health {
    map: Mutex<HashMap<String, Record>>,
}

#[derive(Default)]
struct Record {
    call_failures: u32,
    probe_failures: u32,
    ejected_until: Option<Instant>,
}

impl Health {
    fn ejected(&self, id: &str) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).and_then(|r| r.ejected_until).is_some_and(|u| Instant::now() < u)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Record)) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let r = map.entry(id.to_string()).or_default();
        let was_ejected = r.ejected_until.is_some_and(|u| Instant::now() < u);
        f(r);
        if r.call_failures >= EJECT_AFTER || r.probe_failures >= EJECT_AFTER {
            if !was_ejected {
                tracing::warn!(instance = id, calls = r.call_failures, probes = r.probe_failures, "instance ejected");
            }
            r.ejected_until = Some(Instant::now() + EJECT_FOR);
        } else if was_ejected && r.call_failures == 0 && r.probe_failures == 0 {
            r.ejected_until = None;
            tracing::info!(instance = id, "instance back in rotation");
        }
        if r.call_failures == 0 && r.probe_failures == 0 && r.ejected_until.is_none() {
            map.remove(id);
        }
    }

    fn failed(&self, id: &str) {
        self.update(id, |r| r.call_failures += 1);
    }

    fn succeeded(&self, id: &str) {
        self.update(id, |r| r.call_failures = 0);
    }

    fn probe_failed(&self, id: &str) {
        self.update(id, |r| r.probe_failures += 1);
    }

    fn probe_succeeded(&self, id: &str) {
        self.update(id, |r| r.probe_failures = 0);
    }
}

/// Active health checks: probes every instance that registered a health path, every
/// `period`, with a short timeout; the outcome feeds the same passive-health book, so an
/// instance that fails its probes is ejected before a call finds out.
pub async fn probe(client: &HttpClient, health: &Health, instances: Vec<Arc<Instance>>) {
    for i in instances {
        let Some(path) = &i.health_path else { continue };
        let uri = format!("http://{}{}{}", i.authority, i.base_path, path);
        let Ok(req) = Request::builder().method(Method::GET).uri(&uri).body(Full::new(Bytes::new())) else { continue };
        match tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
            Ok(Ok(r)) if r.status().is_success() => health.probe_succeeded(&i.id),
            _ => health.probe_failed(&i.id),
        }
    }
}

/// Why forwarding failed.
#[derive(Debug)]
pub enum ForwardError {
    /// No instance registered, or every one is ejected (circuit open).
    NoInstance,
    Unreachable(String),
    Timeout,
}

/// Instances in the order to try them: the round-robin choice first, ejected ones left
/// out (all of them, if the circuit is open).
fn candidates(pool: &ServicePool, health: &Health) -> Vec<Arc<Instance>> {
    let n = pool.instances.len();
    if n == 0 {
        return vec![];
    }
    let total: u32 = pool.instances.iter().map(|i| i.weight).sum();
    let mut slot = (pool.cursor.fetch_add(1, Ordering::Relaxed) % total as usize) as u32;
    let mut first = 0;
    for (idx, i) in pool.instances.iter().enumerate() {
        if slot < i.weight {
            first = idx;
            break;
        }
        slot -= i.weight;
    }
    (0..n).map(|k| pool.instances[(first + k) % n].clone()).filter(|i| !health.ejected(&i.id)).collect()
}

/// Sends the request to one instance after another until one answers.
pub async fn forward(
    client: &HttpClient,
    health: &Health,
    pool: &ServicePool,
    method: &Method,
    path_and_query: &str,
    headers: &axum::http::HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<(Response<Incoming>, Arc<Instance>), ForwardError> {
    let tries = candidates(pool, health);
    if tries.is_empty() {
        return Err(ForwardError::NoInstance);
    }
    let idempotent = matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS);
    let mut last = ForwardError::NoInstance;
    for instance in tries.into_iter().take(3) {
        let uri = format!("http://{}{}{}", instance.authority, instance.base_path, path_and_query);
        let mut req = Request::builder().method(method.clone()).uri(&uri);
        if let Some(h) = req.headers_mut() {
            h.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let req = match req.body(Full::new(body.clone())) {
            Ok(r) => r,
            Err(e) => return Err(ForwardError::Unreachable(e.to_string())),
        };
        match tokio::time::timeout(timeout, client.request(req)).await {
            Ok(Ok(response)) => {
                health.succeeded(&instance.id);
                return Ok((response, instance));
            }
            Ok(Err(e)) => {
                health.failed(&instance.id);
                let connect = e.is_connect();
                last = ForwardError::Unreachable(e.to_string());
                // A request that may have reached the service is retried only when
                // repeating it is harmless.
                if !connect && !idempotent {
                    return Err(last);
                }
            }
            Err(_) => {
                health.failed(&instance.id);
                return Err(ForwardError::Timeout);
            }
        }
    }
    Err(last)
}

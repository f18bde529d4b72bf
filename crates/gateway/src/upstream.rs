//! Forwarding to registered instances: weighted round robin over the instances that are
//! not ejected, a pooled keep-alive HTTP/1.1 client, per-API timeouts, retries on a
//! connection failure (and on any failure for idempotent methods), passive health
//! (an instance that fails three times in a row is ejected for ten seconds and then
//! tried again), and a per-service circuit: when every instance is ejected, calls are
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

/// Consecutive failures and ejections, per instance id.
#[derive(Default)]
pub struct Health {
    map: Mutex<HashMap<String, (u32, Option<Instant>)>>,
}

impl Health {
    fn ejected(&self, id: &str) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).and_then(|(_, until)| *until).is_some_and(|u| Instant::now() < u)
    }

    fn failed(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(id.to_string()).or_insert((0, None));
        e.0 += 1;
        if e.0 >= EJECT_AFTER {
            e.1 = Some(Instant::now() + EJECT_FOR);
            tracing::warn!(instance = id, "instance ejected after repeated failures");
        }
    }

    fn succeeded(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.remove(id).is_some_and(|(n, _)| n >= EJECT_AFTER) {
            tracing::info!(instance = id, "instance back in rotation");
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

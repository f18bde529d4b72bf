//! The message-push benchmark and crash-test tool behind `bench/messaging.sh` and
//! `bench/crash.sh`:
//!
//! ```text
//! msgbench setup --console URL --admin-email E --admin-password P --callback URL
//!     creates a topic, an active merchant, an app granted the topic's group and a
//!     subscription to the callback; prints {"merchant_id", "app_id", "secret"}
//! msgbench sink --addr 127.0.0.1:9100 [--secret whsec_…]
//!     a webhook receiver: verifies signatures, counts distinct events, measures the
//!     time from each event's acceptance to its first attempt; GET /stats
//! msgbench pump --internal URL --events N [--rate R] [--batch B] [--concurrency C]
//!     publishes N events (payload {"i": …}) with idempotency keys, retrying a batch until
//!     it is accepted (so it rides out a killed Portico); --rate in events per second
//! msgbench wait --sink URL --events N [--timeout S]
//!     waits until the sink has seen events 0..N, then prints its statistics
//! ```

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{extract::State, http::HeaderMap, routing::get, Json, Router};
use portico_signing::webhook::{verify, WebhookKey};
use serde_json::{json, Value};

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    let mut flags = HashMap::new();
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        flags.insert(k.trim_start_matches("--").to_string(), v);
    }
    (cmd, flags)
}

fn flag<T: std::str::FromStr>(flags: &HashMap<String, String>, name: &str, default: Option<T>) -> T {
    match flags.get(name) {
        Some(v) => v.parse().unwrap_or_else(|_| panic!("--{name}: cannot parse {v:?}")),
        None => default.unwrap_or_else(|| panic!("--{name} is required")),
    }
}

#[tokio::main]
async fn main() {
    let (cmd, flags) = args();
    match cmd.as_str() {
        "setup" => setup(&flags).await,
        "sink" => sink(&flags).await,
        "pump" => pump(&flags).await,
        "wait" => wait(&flags).await,
        _ => {
            eprintln!("usage: msgbench setup|sink|pump|wait … (see the source's header)");
            std::process::exit(2);
        }
    }
}

// ------------------------------------------------------------------ setup

async fn setup(flags: &HashMap<String, String>) {
    let console: String = flag(flags, "console", None);
    let email: String = flag(flags, "admin-email", None);
    let password: String = flag(flags, "admin-password", None);
    let callback: Option<String> = flags.get("callback").cloned();
    let c = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, token: Option<String>, body: Value| {
        let c = c.clone();
        let console = console.clone();
        async move {
            let mut req = c.request(method.clone(), format!("{console}{path}")).json(&body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let res = req.send().await.expect("console reachable");
            let status = res.status();
            let v: Value = res.json().await.expect("JSON");
            assert!(status.is_success(), "{method} {path}: {status} {v}");
            v["data"].clone()
        }
    };
    use reqwest::Method as M;
    let admin = call(M::POST, "/api/v1/auth/token".into(), None, json!({ "email": email, "password": password })).await["access_token"].as_str().unwrap().to_string();
    call(M::PUT, "/api/v1/catalog/groups/bench".into(), Some(admin.clone()), json!({ "title": "Benchmark" })).await;
    call(
        M::PUT,
        "/api/v1/catalog/topics/bench.event".into(),
        Some(admin.clone()),
        json!({ "group": "bench", "payload_schema": { "type": "object", "required": ["i"] }, "retry_schedule": [1, 2, 5, 10, 30, 60, 120] }),
    )
    .await;
    let email = format!("bench-{}@portico.test", std::process::id());
    let v = call(M::POST, "/api/v1/merchants/sign-up".into(), None, json!({ "email": email, "password": "bench password 1", "merchant_name": "Bench" })).await;
    let m = v["merchant"]["id"].as_str().unwrap().to_string();
    let owner = call(M::POST, "/api/v1/auth/token".into(), None, json!({ "email": email, "password": "bench password 1" })).await["access_token"].as_str().unwrap().to_string();
    let docs = json!({ "company_name": "Bench Co", "licence_number": "91330100MA27XXXX1Q", "contact_name": "Li", "contact_phone": "+86 138 0013 8000", "business_description": "Benchmarks." });
    call(M::PUT, format!("/api/v1/merchants/{m}/documents"), Some(owner.clone()), docs).await;
    call(M::POST, format!("/api/v1/merchants/{m}/submit"), Some(owner.clone()), json!({})).await;
    call(M::POST, format!("/api/v1/merchants/{m}/approve"), Some(admin.clone()), json!({ "reason": "bench" })).await;
    let created = call(M::POST, format!("/api/v1/merchants/{m}/apps"), Some(owner.clone()), json!({ "name": "Bench", "integration_mode": "api" })).await;
    let app_id = created["app"]["id"].as_str().unwrap().to_string();
    call(M::PUT, format!("/api/v1/merchants/{m}/apps/{app_id}/scopes/bench"), Some(admin.clone()), Value::Null).await;
    let sub = call(
        M::POST,
        format!("/api/v1/merchants/{m}/apps/{app_id}/subscriptions"),
        Some(owner.clone()),
        json!({ "topic": "bench.event", "callback_url": callback, "max_in_flight": 1000 }),
    )
    .await;
    println!("{}", json!({ "merchant_id": m, "app_id": app_id, "subscription_id": sub["subscription"]["id"], "secret": sub["secret"] }));
}

// ------------------------------------------------------------------ sink

#[derive(Default)]
struct Sink {
    key: Option<WebhookKey>,
    requests: AtomicU64,
    bad_signatures: AtomicU64,
    inner: Mutex<SinkData>,
}

#[derive(Default)]
struct SinkData {
    seen: Vec<bool>,
    distinct: u64,
    /// Milliseconds from acceptance to first attempt, one per distinct event.
    latencies: Vec<u32>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

async fn sink(flags: &HashMap<String, String>) {
    let addr: SocketAddr = flag(flags, "addr", Some("127.0.0.1:9100".parse().unwrap()));
    let key = flags.get("secret").map(|s| WebhookKey::parse(s).expect("--secret: a whsec_ secret"));
    let state = Arc::new(Sink { key, ..Default::default() });
    let app = Router::new().route("/hooks", axum::routing::post(receive)).route("/stats", get(stats)).with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the sink");
    eprintln!("sink listening on {addr}");
    axum::serve(listener, app).await.unwrap();
}

async fn receive(State(s): State<Arc<Sink>>, headers: HeaderMap, body: axum::body::Bytes) -> axum::http::StatusCode {
    s.requests.fetch_add(1, Ordering::Relaxed);
    let now_ms = portico_core::time::now_ms();
    if let Some(key) = &s.key {
        let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if verify(key, h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"), &body, now_ms / 1000, 300).is_err() {
            s.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return axum::http::StatusCode::UNAUTHORIZED;
        }
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else { return axum::http::StatusCode::BAD_REQUEST };
    let Some(i) = v["data"]["i"].as_u64() else { return axum::http::StatusCode::OK };
    let accepted = v["timestamp"].as_str().and_then(portico_core::time::parse_rfc3339).unwrap_or(now_ms);
    let mut d = s.inner.lock().unwrap();
    let i = i as usize;
    if d.seen.len() <= i {
        d.seen.resize(i + 1, false);
    }
    if !d.seen[i] {
        d.seen[i] = true;
        d.distinct += 1;
        d.latencies.push((now_ms - accepted).max(0) as u32);
        let now = Instant::now();
        d.first_at.get_or_insert(now);
        d.last_at = Some(now);
    }
    axum::http::StatusCode::NO_CONTENT
}

async fn stats(State(s): State<Arc<Sink>>) -> Json<Value> {
    let d = s.inner.lock().unwrap();
    let mut l = d.latencies.clone();
    l.sort_unstable();
    let pct = |p: f64| if l.is_empty() { 0 } else { l[((l.len() as f64 * p) as usize).min(l.len() - 1)] };
    let span = match (d.first_at, d.last_at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    Json(json!({
        "requests": s.requests.load(Ordering::Relaxed),
        "bad_signatures": s.bad_signatures.load(Ordering::Relaxed),
        "distinct": d.distinct,
        "seen_upto": d.seen.len(),
        "missing_below": d.seen.iter().filter(|x| !**x).count(),
        "first_to_last_secs": span,
        "latency_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": l.last().copied().unwrap_or(0) },
    }))
}

// ------------------------------------------------------------------ pump

async fn pump(flags: &HashMap<String, String>) {
    let internal: String = flag(flags, "internal", None);
    let targets: Vec<String> = internal.split(',').map(str::to_string).collect();
    let events: usize = flag(flags, "events", None);
    let start: usize = flag(flags, "start", Some(0));
    let rate: f64 = flag(flags, "rate", Some(0.0));
    let batch: usize = flag(flags, "batch", Some(50));
    let concurrency: usize = flag(flags, "concurrency", Some(8));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(concurrency).build().unwrap();
    let next = Arc::new(AtomicU64::new(start as u64));
    let end = (start + events) as u64;
    let retries = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let began = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (client, next, retries, latencies, targets) = (client.clone(), next.clone(), retries.clone(), latencies.clone(), targets.clone());
        workers.push(tokio::spawn(async move {
            let mut turn = w;
            loop {
                let from = next.fetch_add(batch as u64, Ordering::SeqCst);
                if from >= end {
                    return;
                }
                let to = (from + batch as u64).min(end);
                if rate > 0.0 {
                    // Open-loop pacing: batch `from` is due at from / rate seconds.
                    let due = began + Duration::from_secs_f64((from - start as u64) as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = json!({ "events": (from..to).map(|i| json!({ "topic": "bench.event", "idempotency_key": format!("bench-{i}"), "payload": { "i": i } })).collect::<Vec<_>>() });
                loop {
                    let target = &targets[turn % targets.len()];
                    turn += 1;
                    let sent = Instant::now();
                    match client.post(format!("{target}/messages/v1/events/batch")).json(&body).send().await {
                        Ok(res) if res.status() == 201 => {
                            latencies.lock().unwrap().push(sent.elapsed().as_millis() as u32);
                            break;
                        }
                        _ => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let secs = began.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    let p99 = l.get((l.len() as f64 * 0.99) as usize).copied().unwrap_or(0);
    println!(
        "{}",
        json!({ "accepted": events, "secs": secs, "accepted_per_sec": events as f64 / secs, "batch": batch, "request_p99_ms": p99, "retried_requests": retries.load(Ordering::Relaxed) })
    );
}

// ------------------------------------------------------------------ wait

async fn wait(flags: &HashMap<String, String>) {
    let sink: String = flag(flags, "sink", None);
    let events: u64 = flag(flags, "events", None);
    let timeout: u64 = flag(flags, "timeout", Some(600));
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let v: Value = reqwest::get(format!("{sink}/stats")).await.expect("sink reachable").json().await.unwrap();
        if v["distinct"].as_u64().unwrap_or(0) >= events || Instant::now() > deadline {
            println!("{v}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

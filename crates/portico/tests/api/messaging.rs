//! Message push end to end: topics and subscriptions through the management API, events
//! published on the internal listener, and a real receiver on a loopback port that
//! checks every delivery's Standard Webhooks signature (ours, and the `standardwebhooks`
//! Python package's when it is installed: CI installs it and insists).

use std::{
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, routing::post, Router};
use portico_signing::webhook::{verify, WebhookKey};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// A webhook receiver: records every request and answers with the status set in
/// `answer` (200 by default), or with the next status of `script` while it lasts.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

#[derive(Default)]
struct ReceiverState {
    answer: AtomicU16,
    script: Mutex<Vec<u16>>,
    received: Mutex<Vec<Received>>,
    calls: AtomicUsize,
    /// How long each answer takes, in milliseconds.
    delay_ms: std::sync::atomic::AtomicU64,
    /// `Retry-After` seconds sent with 429 and 503 (0: none).
    retry_after: std::sync::atomic::AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub status: u16,
    pub at: std::time::Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        async fn hook(State(s): State<Arc<ReceiverState>>, headers: HeaderMap, body: String) -> (axum::http::StatusCode, HeaderMap, &'static str) {
            s.calls.fetch_add(1, Ordering::SeqCst);
            let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            s.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let delay = s.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
            let status = {
                let mut script = s.script.lock().unwrap();
                if script.is_empty() {
                    s.answer.load(Ordering::SeqCst)
                } else {
                    script.remove(0)
                }
            };
            let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            s.received.lock().unwrap().push(Received { id: h("webhook-id"), timestamp: h("webhook-timestamp"), signature: h("webhook-signature"), body, status, at: std::time::Instant::now() });
            let mut answer_headers = HeaderMap::new();
            let retry_after = s.retry_after.load(Ordering::SeqCst);
            if retry_after > 0 && (status == 429 || status == 503) {
                answer_headers.insert("retry-after", retry_after.to_string().parse().unwrap());
            }
            (axum::http::StatusCode::from_u16(status).unwrap(), answer_headers, "ok")
        }
        let state = Arc::new(ReceiverState { answer: AtomicU16::new(200), ..Default::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let router = Router::new().route("/hooks", post(hook)).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Receiver { url, state }
    }

    pub fn answer(&self, status: u16) {
        self.state.answer.store(status, Ordering::SeqCst);
    }

    pub fn script(&self, statuses: &[u16]) {
        *self.state.script.lock().unwrap() = statuses.to_vec();
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| (200..300).contains(&r.status)).collect()
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn delay(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn retry_after(&self, secs: u64) {
        self.state.retry_after.store(secs, Ordering::SeqCst);
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}


/// Waits up to `secs` seconds for `f` to hold.
pub async fn within<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {secs} s");
}

/// A topic in group `orders`, an active merchant with an app granted the group.
/// Returns (admin token, merchant id, owner token, app data).
pub async fn setup(app: &TestApp, topic_extra: Value) -> (String, String, String, Value) {
    let admin = app.admin().await;
    app.call(Method::PUT, "/api/v1/catalog/groups/orders", Some(&admin), Some(json!({ "title": "Orders" })), StatusCode::OK).await;
    let mut topic = json!({
        "group": "orders",
        "description": "An order moved to a new status.",
        "payload_schema": { "type": "object", "required": ["order_id", "status"], "properties": { "order_id": { "type": "string" }, "status": { "type": "string" } } },
        "retry_schedule": [1, 1, 1, 1, 1, 1]
    });
    for (k, v) in topic_extra.as_object().unwrap() {
        topic[k] = v.clone();
    }
    app.call(Method::PUT, "/api/v1/catalog/topics/order.status_changed", Some(&admin), Some(topic), StatusCode::OK).await;
    let (m, owner) = app.active_merchant("owner@shop.cn").await;
    let created = app.create_app(&m, &owner).await;
    let app_id = created["app"]["id"].as_str().unwrap();
    app.call(Method::PUT, &format!("/api/v1/merchants/{m}/apps/{app_id}/scopes/orders"), Some(&admin), None, StatusCode::OK).await;
    (admin, m, owner, created)
}

pub async fn subscribe(app: &TestApp, m: &str, owner: &str, app_id: &str, body: Value) -> (String, String) {
    let v = app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/subscriptions"), Some(owner), body, StatusCode::CREATED).await;
    (v["data"]["subscription"]["id"].as_str().unwrap().to_string(), v["data"]["secret"].as_str().unwrap().to_string())
}

/// Publishes on the internal listener; returns (status, envelope).
pub async fn publish(app: &TestApp, event: Value) -> (StatusCode, Value) {
    let res = app.client.post(format!("{}/messages/v1/events", app.internal)).json(&event).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

/// Publishes a batch (`events`, a JSON array) on the internal listener; returns (status,
/// envelope).
pub async fn publish_batch(app: &TestApp, events: Value) -> (StatusCode, Value) {
    let res = app.client.post(format!("{}/messages/v1/events/batch", app.internal)).json(&json!({ "events": events })).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

fn order(id: &str, status: &str) -> Value {
    json!({ "order_id": id, "status": status })
}

/// Waits until every one of the deliveries is recorded as sent.
async fn all_sent(app: &TestApp, m: &str, owner: &str, ids: &[String], secs: u64) {
    within(secs, "outcomes recorded as sent", || async {
        let mut all = true;
        for id in ids {
            all &= delivery_status(app, m, owner, id).await["delivery"]["status"] == "sent";
        }
        all
    })
    .await;
}

async fn delivery_status(app: &TestApp, m: &str, owner: &str, id: &str) -> Value {
    app.get(&format!("/api/v1/merchants/{m}/deliveries/{id}"), owner, StatusCode::OK).await["data"].clone()
}

/// Verifies deliveries with the `standardwebhooks` Python package: returns false when
/// the package is missing (unless `PORTICO_TEST_REQUIRE_PYTHON` is set, as in CI).
fn python_verifies(secret: &str, received: &[Received]) -> bool {
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
cases = json.load(sys.stdin)
for c in cases:
    wh = Webhook(c["secret"])
    out = wh.verify(c["body"], {"webhook-id": c["id"], "webhook-timestamp": c["timestamp"], "webhook-signature": c["signature"]})
    assert out == json.loads(c["body"]), "payload round trip"
print("verified", len(cases))
"#;
    let cases: Vec<Value> = received.iter().map(|r| json!({ "secret": secret, "id": r.id, "timestamp": r.timestamp, "signature": r.signature, "body": r.body })).collect();
    let child = std::process::Command::new("python3").arg("-c").arg(script).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn();
    let required = std::env::var("PORTICO_TEST_REQUIRE_PYTHON").is_ok_and(|v| !v.is_empty());
    let Ok(mut child) = child else {
        assert!(!required, "python3 is required");
        return false;
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(serde_json::to_string(&cases).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named") {
        assert!(!required, "the standardwebhooks package is required: {stderr}");
        eprintln!("skipping the Python verifier: pip install standardwebhooks");
        return false;
    }
    assert!(out.status.success(), "the Standard Webhooks library refused our delivery: {stderr}");
    true
}

engine_test! {
    env [("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32")]
    async fn events_are_delivered_signed_numbered_and_logged(app: &TestApp) {
        let receiver = Receiver::start().await;
        let (_, m, owner, created) = setup(app, json!({})).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        let (sub, secret) = subscribe(app, &m, &owner, app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url })).await;
        assert!(secret.starts_with("whsec_"));

        // Accepted means committed, with one delivery for the one subscription.
        let (status, v) = publish(app, json!({ "topic": "order.status_changed", "merchant_id": m, "business_key": "o-1", "payload": order("o-1", "paid"), "idempotency_key": "k-1" })).await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["data"]["seq"], 1);
        assert_eq!(v["data"]["duplicate"], false);
        let first = v["data"]["deliveries"][0].as_str().unwrap().to_string();
        // The same idempotency key answers with the first event.
        let (status, again) = publish(app, json!({ "topic": "order.status_changed", "merchant_id": m, "business_key": "o-1", "payload": order("o-1", "paid"), "idempotency_key": "k-1" })).await;
        assert_eq!(status, 201);
        assert_eq!(again["data"]["duplicate"], true);
        assert_eq!(again["data"]["event_id"], v["data"]["event_id"]);
        // The next event of the key is numbered 2; a batch keeps numbering.
        let (_, v2) = publish(app, json!({ "topic": "order.status_changed", "merchant_id": m, "business_key": "o-1", "payload": order("o-1", "shipped") })).await;
        assert_eq!(v2["data"]["seq"], 2);
        let (status, batch) = publish_batch(app, json!([
            { "topic": "order.status_changed", "business_key": "o-2", "payload": order("o-2", "paid") },
            { "topic": "order.status_changed", "business_key": "o-1", "payload": order("o-1", "done") }
        ]))
        .await;
        assert_eq!(status, 201);
        assert_eq!(batch["data"]["events"][0]["seq"], 1);
        assert_eq!(batch["data"]["events"][1]["seq"], 3);

        within(10, "four deliveries", || async { receiver.accepted().len() >= 4 }).await;
        let received = receiver.accepted();
        assert_eq!(received.len(), 4, "each delivery once: {received:?}");
        let key = WebhookKey::parse(&secret).unwrap();
        for r in &received {
            verify(&key, &r.id, &r.timestamp, &r.signature, r.body.as_bytes(), portico_core::time::now_ms() / 1000, 300).unwrap();
        }
        let body = received.iter().find(|r| r.id == first).expect("the first delivery's webhook-id").json();
        assert_eq!(body["type"], "order.status_changed");
        assert_eq!(body["data"], order("o-1", "paid"));
        assert_eq!(body["business_key"], "o-1");
        assert_eq!(body["seq"], 1);
        python_verifies(&secret, &received);

        // The delivery's log, and the merchant's search.
        within(5, "the outcome recorded", || async { delivery_status(app, &m, &owner, &first).await["delivery"]["status"] == "sent" }).await;
        let d = delivery_status(app, &m, &owner, &first).await;
        assert_eq!(d["delivery"]["attempts"], 1);
        assert_eq!(d["attempts"][0]["outcome"], "sent");
        assert_eq!(d["attempts"][0]["status_code"], 200);
        assert_eq!(d["attempts"][0]["response"], "ok");
        let by_key = app.get(&format!("/api/v1/merchants/{m}/deliveries?business_key=o-1"), &owner, StatusCode::OK).await;
        assert_eq!(by_key["data"]["items"].as_array().unwrap().len(), 3);
        let by_event = app.get(&format!("/api/v1/merchants/{m}/deliveries?event_id={}", v["data"]["event_id"].as_str().unwrap()), &owner, StatusCode::OK).await;
        assert_eq!(by_event["data"]["items"][0]["id"], first.as_str());
        let by_sub = app.get(&format!("/api/v1/merchants/{m}/deliveries?subscription_id={sub}&status=sent&topic=order.status_changed&limit=2"), &owner, StatusCode::OK).await;
        assert_eq!(by_sub["data"]["items"].as_array().unwrap().len(), 2);
        assert!(by_sub["data"]["next_cursor"].is_string());
        let v = app.get(&format!("/api/v1/merchants/{m}/deliveries?status=lost"), &owner, StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "status");
        let v = app.get(&format!("/api/v1/merchants/{m}/deliveries?from=yesterday"), &owner, StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "from");
    }
}

engine_test! {
    env [("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32")]
    async fn bad_events_are_refused_with_the_field_named(app: &TestApp) {
        let (admin, m, _, _) = setup(app, json!({ "max_payload_bytes": 200 })).await;
        for (event, field) in [
            (json!({ "topic": "order.nope", "payload": {} }), "topic"),
            (json!({ "topic": "portico.subscription_disabled", "payload": { "subscription_id": "s", "app_id": "a", "topic": "t", "reason": "r" } }), "topic"),
            (json!({ "topic": "order.status_changed", "payload": { "order_id": "o-1" } }), "payload"),
            (json!({ "topic": "order.status_changed", "payload": { "order_id": 7, "status": "paid" } }), "payload/order_id"),
            (json!({ "topic": "order.status_changed", "payload": { "order_id": "x".repeat(300), "status": "paid" } }), "payload"),
            (json!({ "topic": "order.status_changed", "payload": order("o", "s"), "business_key": "" }), "business_key"),
            (json!({ "topic": "order.status_changed", "payload": order("o", "s"), "merchant_id": "m\u{0}" }), "merchant_id"),
        ] {
            let (status, v) = publish(app, event.clone()).await;
            assert_eq!(status, 400, "{event}: {v}");
            assert_eq!(v["code"], 10002);
            assert_eq!(v["data"]["field"], field, "{event}: {v}");
        }
        let res = app.client.post(format!("{}/messages/v1/events", app.internal)).header("content-type", "application/json").body("{not json").send().await.unwrap();
        assert_eq!(res.status(), 400);
        let res = app.client.post(format!("{}/messages/v1/events", app.internal)).json(&json!({ "topic": "order.status_changed", "payload": {}, "extra": 1 })).send().await.unwrap();
        assert_eq!(res.status(), 400);
        // A batch is all or nothing, and names the event.
        let (status, v) = publish_batch(app, json!([ { "topic": "order.status_changed", "payload": order("a", "b") }, { "topic": "order.status_changed", "payload": {} } ])).await;
        assert_eq!(status, 400);
        assert_eq!(v["data"]["field"], "events[1].payload", "{v}");
        let v = app.get(&format!("/api/v1/merchants/{m}/deliveries"), &admin, StatusCode::OK).await;
        assert!(v["data"]["items"].as_array().unwrap().is_empty());
        // Topics are checked too.
        let v = app.call(Method::PUT, "/api/v1/catalog/topics/order.bad", Some(&admin), Some(json!({ "group": "orders", "payload_schema": { "type": 12 } })), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "payload_schema");
        let v = app.call(Method::PUT, "/api/v1/catalog/topics/order.bad", Some(&admin), Some(json!({ "group": "orders", "retry_schedule": [5, 0] })), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "retry_schedule[1]");
        let v = app.call(Method::PUT, "/api/v1/catalog/topics/Bad", Some(&admin), Some(json!({ "group": "orders" })), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "name");
    }
}

engine_test! {
    async fn callback_urls_follow_the_ssrf_rules(app: &TestApp) {
        let (_, m, owner, created) = setup(app, json!({})).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        let path = format!("/api/v1/merchants/{m}/apps/{app_id}/subscriptions");
        for url in ["http://127.0.0.1:9/hooks", "http://localhost/x", "https://10.0.0.8/x", "https://169.254.169.254/latest", "https://[::1]/x", "http://example.com/x", "ftp://example.com/x"] {
            let v = app.post(&path, Some(&owner), json!({ "topic": "order.status_changed", "callback_url": url }), StatusCode::BAD_REQUEST).await;
            assert_eq!(v["data"]["field"], "callback_url", "{url}: {v}");
        }
        // A public https URL is fine; a topic the app is not granted is not.
        app.post(&path, Some(&owner), json!({ "topic": "order.status_changed", "callback_url": "https://hooks.example.com/portico" }), StatusCode::CREATED).await;
        let v = app.post(&path, Some(&owner), json!({ "topic": "order.none", "callback_url": "https://hooks.example.com/portico" }), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "topic");
        // Every app may take the platform's own operational topic.
        app.post(&path, Some(&owner), json!({ "topic": "portico.subscription_disabled" }), StatusCode::CREATED).await;
    }
}

engine_test! {
    env [("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32")]
    async fn a_receiver_down_then_back_gets_everything_and_410_stops_it(app: &TestApp) {
        let receiver = Receiver::start().await;
        let (_, m, owner, created) = setup(app, json!({})).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        let (sub, _) = subscribe(app, &m, &owner, app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url })).await;
        // Operational events come to a polling subscription of the platform topic.
        subscribe(app, &m, &owner, app_id, json!({ "topic": "portico.subscription_disabled" })).await;
        // Down: 503 with Retry-After honoured, 500s, then back.
        receiver.script(&[500, 503, 500, 500, 500, 500]);
        let mut ids = Vec::new();
        for i in 0..3 {
            let (status, v) = publish(app, json!({ "topic": "order.status_changed", "merchant_id": m, "payload": order(&format!("o-{i}"), "paid") })).await;
            assert_eq!(status, 201);
            ids.push(v["data"]["deliveries"][0].as_str().unwrap().to_string());
        }
        within(20, "every event delivered after the outage", || async {
            let got: Vec<String> = receiver.accepted().into_iter().map(|r| r.id).collect();
            ids.iter().all(|id| got.contains(id))
        })
        .await;
        all_sent(app, &m, &owner, &ids, 5).await;
        let failed_then_sent = receiver.received().iter().filter(|r| r.status >= 500).count();
        assert_eq!(failed_then_sent, 6);
        // Every retry carried the same webhook-id and body.
        let r = receiver.received();
        for id in &ids {
            let bodies: Vec<&String> = r.iter().filter(|x| &x.id == id).map(|x| &x.body).collect();
            assert!(bodies.windows(2).all(|w| w[0] == w[1]));
        }

        // 410 Gone disables the subscription: no more calls, queued deliveries wait.
        receiver.answer(410);
        let (_, v) = publish(app, json!({ "topic": "order.status_changed", "merchant_id": m, "payload": order("o-9", "paid") })).await;
        let gone = v["data"]["deliveries"][0].as_str().unwrap().to_string();
        within(10, "the subscription disabled", || async {
            app.get(&format!("/api/v1/merchants/{m}/subscriptions/{sub}"), &owner, StatusCode::OK).await["data"]["state"] == "disabled"
        })
        .await;
        assert_eq!(delivery_status(app, &m, &owner, &gone).await["delivery"]["status"], "failed");
        let calls = receiver.calls();
        publish(app, json!({ "topic": "order.status_changed", "merchant_id": m, "payload": order("o-10", "paid") })).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(receiver.calls(), calls, "a disabled subscription gets no calls");
        // The owner was written to, and the merchant's apps hear of it.
        let mut conn = app.platform.store().read().await.unwrap();
        let mails = portico_store::messaging::emails(&mut conn, &m).await.unwrap();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].0, "owner@shop.cn");
        let events = app.get(&format!("/api/v1/merchants/{m}/deliveries?topic=portico.subscription_disabled"), &owner, StatusCode::OK).await;
        assert_eq!(events["data"]["items"].as_array().unwrap().len(), 1);

        // Enabled again, the waiting delivery goes out; the failed one is recovered.
        receiver.answer(200);
        app.post(&format!("/api/v1/merchants/{m}/subscriptions/{sub}/enable"), Some(&owner), json!({}), StatusCode::OK).await;
        let v = app.post(&format!("/api/v1/merchants/{m}/subscriptions/{sub}/recover"), Some(&owner), json!({ "since": "2020-01-01T00:00:00Z" }), StatusCode::OK).await;
        assert_eq!(v["data"]["requeued"], 1);
        within(10, "the waiting and the recovered deliveries", || async { receiver.accepted().iter().filter(|r| r.json()["data"]["order_id"] == "o-9" || r.json()["data"]["order_id"] == "o-10").count() == 2 }).await;
        // Resend one that was sent: it goes again, same webhook-id.
        within(5, "recorded", || async { delivery_status(app, &m, &owner, &gone).await["delivery"]["status"] == "sent" }).await;
        app.post(&format!("/api/v1/merchants/{m}/deliveries/{gone}/resend"), Some(&owner), json!({}), StatusCode::OK).await;
        within(10, "the resent delivery", || async { receiver.accepted().iter().filter(|r| r.id == gone).count() == 2 }).await;
        let v = app.post(&format!("/api/v1/merchants/{m}/subscriptions/{sub}/recover"), Some(&owner), json!({ "since": "last week" }), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "since");
    }
}

/// A minimal SMTP server that keeps every message it is given.
struct SmtpSink {
    url: String,
    messages: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                    let mut data: Option<String> = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(body) = data.as_mut() {
                            if line == "." {
                                kept.lock().unwrap().push(data.take().unwrap());
                                write.write_all(b"250 queued\r\n").await.unwrap();
                            } else {
                                body.push_str(&line);
                                body.push('\n');
                            }
                            continue;
                        }
                        let verb = line.split(' ').next().unwrap_or_default().to_ascii_uppercase();
                        let answer: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                            "DATA" => {
                                data = Some(String::new());
                                b"354 go on\r\n"
                            }
                            "QUIT" => {
                                write.write_all(b"221 bye\r\n").await.unwrap();
                                return;
                            }
                            _ => b"250 ok\r\n",
                        };
                        write.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        SmtpSink { url, messages }
    }
}

/// Five days without a success (two seconds here) disables a subscription; the owner is
/// mailed through SMTP and the merchant's apps get the operational event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_failing_too_long_is_disabled_and_the_owner_mailed() {
    for engine in crate::helpers::engines() {
        let smtp = SmtpSink::start().await;
        let app = TestApp::spawn_with(
            engine,
            &[
                ("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32"),
                ("PORTICO_MESSAGING__DISABLE_AFTER_SECS", "2"),
                ("PORTICO_MAIL__SMTP_URL", smtp.url.as_str()),
                ("PORTICO_MAIL__FROM", "Portico <noreply@portico.test>"),
            ],
        )
        .await;
        let receiver = Receiver::start().await;
        receiver.answer(500);
        let (_, m, owner, created) = setup(&app, json!({ "retry_schedule": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1] })).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        let (sub, _) = subscribe(&app, &m, &owner, app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url })).await;
        subscribe(&app, &m, &owner, app_id, json!({ "topic": "portico.subscription_disabled" })).await;
        publish(&app, json!({ "topic": "order.status_changed", "payload": order("o-1", "paid") })).await;
        within(15, "the failing subscription disabled", || async {
            let s = app.get(&format!("/api/v1/merchants/{m}/subscriptions/{sub}"), &owner, StatusCode::OK).await;
            s["data"]["state"] == "disabled" && s["data"]["disabled_reason"].as_str().unwrap().contains("no successful delivery")
        })
        .await;
        within(10, "the mail sent", || async { !smtp.messages.lock().unwrap().is_empty() }).await;
        let mail = smtp.messages.lock().unwrap()[0].clone();
        assert!(mail.contains("To: owner@shop.cn"), "{mail}");
        assert!(mail.contains(&sub), "{mail}");
        let events = app.get(&format!("/api/v1/merchants/{m}/deliveries?topic=portico.subscription_disabled"), &owner, StatusCode::OK).await;
        assert_eq!(events["data"]["items"].as_array().unwrap().len(), 1);
        let mut conn = app.platform.store().read().await.unwrap();
        assert!(portico_store::messaging::unsent_emails(&mut conn, 10).await.unwrap().is_empty());
        drop(conn);
        app.stop().await;
    }
}

engine_test! {
    env [("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32")]
    async fn strict_order_waits_for_the_key_before(app: &TestApp) {
        let receiver = Receiver::start().await;
        let (_, m, owner, created) = setup(app, json!({})).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        subscribe(app, &m, &owner, app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url, "strict_order": true })).await;
        // The first attempt of seq 1 fails; seq 2 and 3 must not overtake it.
        receiver.script(&[500]);
        let statuses = ["paid", "shipped", "done"];
        let (status, _) = publish_batch(app, json!(statuses.iter().map(|s| json!({ "topic": "order.status_changed", "business_key": "o-1", "payload": order("o-1", s) })).collect::<Vec<_>>())).await;
        assert_eq!(status, 201);
        within(15, "all three in order", || async { receiver.accepted().len() >= 3 }).await;
        let seqs: Vec<i64> = receiver.received().iter().map(|r| r.json()["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, vec![1, 1, 2, 3], "each key's deliveries one at a time, in order");
    }
}

engine_test! {
    async fn apps_poll_acknowledge_and_follow_the_live_channel(app: &TestApp) {
        let (_, m, owner, created) = setup(app, json!({})).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        let key = created["secrets"][1]["app_key"].as_str().unwrap();
        let secret = created["secrets"][1]["app_secret"].as_str().unwrap();
        subscribe(app, &m, &owner, app_id, json!({ "topic": "order.status_changed" })).await;
        let v: Value = app.client.post(format!("{}/oauth2/token", app.public)).basic_auth(key, Some(secret)).form(&[("grant_type", "client_credentials")]).send().await.unwrap().json().await.unwrap();
        let token = v["access_token"].as_str().unwrap().to_string();
        for i in 0..3 {
            publish(app, json!({ "topic": "order.status_changed", "merchant_id": m, "business_key": "o-1", "payload": order("o-1", &format!("s{i}")) })).await;
        }
        let poll = |q: String| {
            let token = token.clone();
            async move {
                let res = app.client.get(format!("{}/messages/v1/deliveries{q}", app.public)).bearer_auth(&token).send().await.unwrap();
                assert_eq!(res.status(), 200);
                res.json::<Value>().await.unwrap()
            }
        };
        within(5, "three deliveries to poll", || async { poll("?pending=true".into()).await["data"]["items"].as_array().unwrap().len() == 3 }).await;
        let page = poll("?limit=2".into()).await;
        assert_eq!(page["data"]["items"].as_array().unwrap().len(), 2);
        let cursor = page["data"]["next_cursor"].as_str().unwrap().to_string();
        let rest = poll(format!("?after={cursor}")).await;
        assert_eq!(rest["data"]["items"].as_array().unwrap().len(), 1);
        assert_eq!(rest["data"]["items"][0]["body"]["data"]["status"], "s2");
        assert_eq!(rest["data"]["items"][0]["seq"], 3);
        // Acknowledge two: pending lists the third only.
        let ids: Vec<&str> = page["data"]["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        let res = app.client.post(format!("{}/messages/v1/deliveries/ack", app.public)).bearer_auth(&token).json(&json!({ "ids": ids })).send().await.unwrap();
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["data"]["acknowledged"], 2, "{v}");
        let pending = poll("?pending=true".into()).await;
        assert_eq!(pending["data"]["items"].as_array().unwrap().len(), 1);
        assert_eq!(delivery_status(app, &m, &owner, ids[0]).await["attempts"][0]["outcome"], "acknowledged");
        // Without a token: the envelope, 401.
        let res = app.client.get(format!("{}/messages/v1/deliveries", app.public)).send().await.unwrap();
        assert_eq!(res.status(), 401);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["code"], 20001);
        let res = app.client.get(format!("{}/messages/v1/deliveries?after=../x", app.public)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status(), 400);

        // The live channel resumes after the first delivery, then follows new ones.
        let mut res = app.client.get(format!("{}/messages/v1/stream", app.public)).bearer_auth(&token).header("last-event-id", ids[0]).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut published = false;
        while tokio::time::Instant::now() < deadline {
            let chunk = tokio::time::timeout(Duration::from_millis(500), res.chunk()).await;
            if let Ok(Ok(Some(c))) = chunk {
                text.push_str(&String::from_utf8_lossy(&c));
            }
            if text.matches("event: order.status_changed").count() >= 2 && !published {
                publish(app, json!({ "topic": "order.status_changed", "merchant_id": m, "payload": order("o-2", "live") })).await;
                published = true;
            }
            if text.contains("\\\"live\\\"") || text.contains("\"live\"") {
                break;
            }
        }
        assert!(!text.contains(&format!("id: {}\n", ids[0])), "resumed after the first: {text}");
        assert!(text.contains(&format!("id: {}\n", ids[1])), "{text}");
        assert!(text.contains("live"), "a new delivery arrives on the open stream: {text}");
    }
}

engine_test! {
    env [("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32")]
    async fn rotated_secrets_sign_beside_the_old_one(app: &TestApp) {
        let receiver = Receiver::start().await;
        let (_, m, owner, created) = setup(app, json!({})).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        let (sub, old) = subscribe(app, &m, &owner, app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url })).await;
        let v = app.post(&format!("/api/v1/merchants/{m}/subscriptions/{sub}/rotate-secret"), Some(&owner), json!({ "grace_secs": 3600 }), StatusCode::OK).await;
        let new = v["data"]["secret"].as_str().unwrap().to_string();
        assert_ne!(new, old);
        publish(app, json!({ "topic": "order.status_changed", "payload": order("o-1", "paid") })).await;
        within(10, "the delivery", || async { !receiver.accepted().is_empty() }).await;
        let r = &receiver.accepted()[0];
        assert_eq!(r.signature.split(' ').count(), 2, "old and new both sign: {}", r.signature);
        let now = portico_core::time::now_ms() / 1000;
        for s in [&old, &new] {
            verify(&WebhookKey::parse(s).unwrap(), &r.id, &r.timestamp, &r.signature, r.body.as_bytes(), now, 300).unwrap();
        }
        python_verifies(&new, &receiver.accepted());
        let v = app.post(&format!("/api/v1/merchants/{m}/subscriptions/{sub}/rotate-secret"), Some(&owner), json!({ "grace_secs": 10_000_000 }), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "grace_secs");
        // Subscriptions are changed in place; bad input names its field.
        let v = app.call(Method::PATCH, &format!("/api/v1/merchants/{m}/subscriptions/{sub}"), Some(&owner), Some(json!({ "max_in_flight": 0 })), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "max_in_flight");
        let v = app.call(Method::PATCH, &format!("/api/v1/merchants/{m}/subscriptions/{sub}"), Some(&owner), Some(json!({ "callback_url": "", "timeout_ms": 2000 })), StatusCode::OK).await;
        assert!(v["data"]["callback_url"].is_null());
        assert_eq!(v["data"]["timeout_ms"], 2000);
    }
}

engine_test! {
    env [("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32")]
    async fn reconciliation_files_are_stable_and_checksummed(app: &TestApp) {
        let receiver = Receiver::start().await;
        let (_, m, owner, created) = setup(app, json!({})).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        subscribe(app, &m, &owner, app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url })).await;
        for (i, key) in ["o-1", "o-1", "o,2"].iter().enumerate() {
            publish(app, json!({ "topic": "order.status_changed", "business_key": key, "payload": order(key, &format!("s{i}")) })).await;
        }
        within(10, "delivered", || async { receiver.accepted().len() == 3 }).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Move today's deliveries and attempts to yesterday (UTC+8), as if a day passed.
        let day = 86_400_000i64;
        let mut conn = app.platform.store().begin().await.unwrap();
        for sql in ["UPDATE deliveries SET created_at = created_at - $1", "UPDATE delivery_attempts SET at = at - $1"] {
            sqlx::query(sql).bind(day).execute(&mut *conn).await.unwrap();
        }
        portico_store::commit(conn).await.unwrap();
        let (today, _) = portico_core::time::platform_day(portico_core::time::now_ms() / 1000);
        let date = |d: i64| {
            let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(d);
            format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day())
        };
        let get = |d: String| {
            let owner = owner.clone();
            let m = m.clone();
            async move { app.client.get(format!("{}/api/v1/merchants/{m}/reconciliation/{d}", app.console)).bearer_auth(&owner).send().await.unwrap() }
        };
        let res = get(date(today - 1)).await;
        assert_eq!(res.status(), 200);
        let checksum = res.headers()["x-checksum-sha256"].to_str().unwrap().to_string();
        let first = res.text().await.unwrap();
        let lines: Vec<&str> = first.lines().collect();
        assert_eq!(lines.len(), 5, "{first}");
        assert!(lines[0].starts_with("event_id,delivery_id,app_id,topic,business_key,seq"));
        assert!(lines[1].contains(",o-1,1,") && lines[1].contains(",sent,1,"), "{first}");
        assert!(lines[3].contains("\"o,2\""), "{first}");
        let body_end = first.rfind("# sha256=").unwrap();
        use sha2::Digest;
        assert_eq!(portico_core::id::hex(&sha2::Sha256::digest(&first.as_bytes()[..body_end])), checksum);
        assert_eq!(lines[4], format!("# sha256={checksum}"));
        // Later attempts do not change the day's file.
        publish(app, json!({ "topic": "order.status_changed", "payload": order("o-3", "x") })).await;
        within(10, "delivered", || async { receiver.accepted().len() == 4 }).await;
        assert_eq!(get(date(today - 1)).await.text().await.unwrap(), first, "regenerated byte for byte");
        // Today is not over; a bad date names the field; another merchant sees nothing.
        assert_eq!(get(date(today)).await.status(), 409);
        let v: Value = get("2026-02-30".into()).await.json().await.unwrap();
        assert_eq!(v["data"]["field"], "date");
        let (_, other) = app.active_merchant("other@shop.cn").await;
        let res = app.client.get(format!("{}/api/v1/merchants/{m}/reconciliation/{}", app.console, date(today - 1))).bearer_auth(&other).send().await.unwrap();
        assert_eq!(res.status(), 404);
    }
}

engine_test! {
    env [("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32")]
    async fn merchants_see_only_their_own_subscriptions_and_deliveries(app: &TestApp) {
        let receiver = Receiver::start().await;
        let (admin, a, a_owner, a_app) = setup(app, json!({})).await;
        let (b, b_owner) = app.active_merchant("b@shop.cn").await;
        let b_app = app.create_app(&b, &b_owner).await;
        let b_app_id = b_app["app"]["id"].as_str().unwrap();
        app.call(Method::PUT, &format!("/api/v1/merchants/{b}/apps/{b_app_id}/scopes/orders"), Some(&admin), None, StatusCode::OK).await;
        let a_app_id = a_app["app"]["id"].as_str().unwrap();
        subscribe(app, &a, &a_owner, a_app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url })).await;
        let (b_sub, _) = subscribe(app, &b, &b_owner, b_app_id, json!({ "topic": "order.status_changed" })).await;
        // An event for merchant B only reaches B.
        let (_, v) = publish(app, json!({ "topic": "order.status_changed", "merchant_id": b, "payload": order("b-1", "paid") })).await;
        let b_delivery = v["data"]["deliveries"][0].as_str().unwrap().to_string();
        assert_eq!(v["data"]["deliveries"].as_array().unwrap().len(), 1);
        // A's token, B's objects: under B's merchant id and under A's own.
        for path in [
            format!("/api/v1/merchants/{b}/subscriptions/{b_sub}"),
            format!("/api/v1/merchants/{a}/subscriptions/{b_sub}"),
            format!("/api/v1/merchants/{b}/deliveries/{b_delivery}"),
            format!("/api/v1/merchants/{a}/deliveries/{b_delivery}"),
            format!("/api/v1/merchants/{b}/deliveries"),
        ] {
            app.get(&path, &a_owner, StatusCode::NOT_FOUND).await;
        }
        for path in [
            format!("/api/v1/merchants/{a}/subscriptions/{b_sub}/disable"),
            format!("/api/v1/merchants/{a}/subscriptions/{b_sub}/rotate-secret"),
            format!("/api/v1/merchants/{a}/deliveries/{b_delivery}/resend"),
        ] {
            app.post(&path, Some(&a_owner), json!({}), StatusCode::NOT_FOUND).await;
        }
        app.post(&format!("/api/v1/merchants/{a}/subscriptions/{b_sub}/recover"), Some(&a_owner), json!({ "since": "2020-01-01T00:00:00Z" }), StatusCode::NOT_FOUND).await;
        app.call(Method::PATCH, &format!("/api/v1/merchants/{a}/subscriptions/{b_sub}"), Some(&a_owner), Some(json!({ "callback_url": receiver.url })), StatusCode::NOT_FOUND).await;
        let v = app.get(&format!("/api/v1/merchants/{a}/deliveries"), &a_owner, StatusCode::OK).await;
        assert!(v["data"]["items"].as_array().unwrap().is_empty());
        let s = app.get(&format!("/api/v1/merchants/{b}/subscriptions/{b_sub}"), &b_owner, StatusCode::OK).await;
        assert_eq!(s["data"]["state"], "active");
        assert!(s["data"]["callback_url"].is_null());
        // A's app token cannot poll or acknowledge B's deliveries.
        let key = a_app["secrets"][1]["app_key"].as_str().unwrap();
        let secret = a_app["secrets"][1]["app_secret"].as_str().unwrap();
        let t: Value = app.client.post(format!("{}/oauth2/token", app.public)).basic_auth(key, Some(secret)).form(&[("grant_type", "client_credentials")]).send().await.unwrap().json().await.unwrap();
        let token = t["access_token"].as_str().unwrap();
        let v: Value = app.client.get(format!("{}/messages/v1/deliveries", app.public)).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        assert!(v["data"]["items"].as_array().unwrap().is_empty());
        let v: Value = app.client.post(format!("{}/messages/v1/deliveries/ack", app.public)).bearer_auth(token).json(&json!({ "ids": [b_delivery] })).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["data"]["acknowledged"], 0);
    }
}

/// RabbitMQ ingress, when `PORTICO_TEST_AMQP_URL` names a broker (CI sets it): events put
/// on the queue are delivered, a bad one is rejected, and nothing is left unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_from_rabbitmq_too() {
    use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
    let Ok(url) = std::env::var("PORTICO_TEST_AMQP_URL") else {
        eprintln!("skipping: set PORTICO_TEST_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)");
        return;
    };
    for engine in crate::helpers::engines() {
        let queue = format!("portico.test.{}", portico_core::id::random_token("", 6));
        let app = TestApp::spawn_with(
            engine,
            &[("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32"), ("PORTICO_MESSAGING__AMQP_URL", url.as_str()), ("PORTICO_MESSAGING__AMQP_QUEUE", queue.as_str())],
        )
        .await;
        let receiver = Receiver::start().await;
        let (_, m, owner, created) = setup(&app, json!({})).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        subscribe(&app, &m, &owner, app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url })).await;

        let conn = Connection::connect(&url, ConnectionProperties::default()).await.expect("connect to RabbitMQ");
        let channel = conn.create_channel().await.unwrap();
        channel.queue_declare(&queue, QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.unwrap();
        let bodies = [
            json!({ "topic": "order.status_changed", "business_key": "q-1", "payload": order("q-1", "paid") }).to_string(),
            "{not json".to_string(),
            json!({ "topic": "order.status_changed", "payload": { "order_id": 1 } }).to_string(),
            json!({ "topic": "order.status_changed", "business_key": "q-1", "payload": order("q-1", "shipped") }).to_string(),
        ];
        for b in &bodies {
            channel
                .basic_publish("", &queue, BasicPublishOptions::default(), b.as_bytes(), BasicProperties::default().with_delivery_mode(2))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        within(15, "the two good events delivered", || async { receiver.accepted().len() == 2 }).await;
        let mut seqs: Vec<i64> = receiver.accepted().iter().map(|r| r.json()["seq"].as_i64().unwrap()).collect();
        seqs.sort();
        assert_eq!(seqs, vec![1, 2]);
        within(5, "the queue drained (the bad ones rejected)", || async {
            let q = channel.queue_declare(&queue, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.unwrap();
            q.message_count() == 0
        })
        .await;
        channel.queue_delete(&queue, QueueDeleteOptions::default()).await.unwrap();
        app.stop().await;
    }
}

engine_test! {
    env [("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32")]
    async fn caps_timeouts_and_retry_after_are_honoured(app: &TestApp) {
        let receiver = Receiver::start().await;
        let (_, m, owner, created) = setup(app, json!({})).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        subscribe(app, &m, &owner, app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url, "max_in_flight": 2, "timeout_ms": 300 })).await;
        // At most two attempts at once, however many are due.
        receiver.delay(150);
        let (status, _) = publish_batch(app, json!((0..8).map(|i| json!({ "topic": "order.status_changed", "payload": order(&format!("c-{i}"), "paid") })).collect::<Vec<_>>())).await;
        assert_eq!(status, 201);
        within(20, "eight deliveries", || async { receiver.accepted().len() == 8 }).await;
        assert!(receiver.max_in_flight() <= 2, "in flight at once: {}", receiver.max_in_flight());
        // An answer slower than the subscription's timeout is a failure, logged as such.
        receiver.delay(1000);
        let (_, v) = publish(app, json!({ "topic": "order.status_changed", "payload": order("t-1", "paid") })).await;
        let slow = v["data"]["deliveries"][0].as_str().unwrap().to_string();
        within(10, "the timed-out attempt logged", || async {
            let d = delivery_status(app, &m, &owner, &slow).await;
            d["attempts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        let d = delivery_status(app, &m, &owner, &slow).await;
        assert_eq!(d["attempts"][0]["outcome"], "retry");
        assert!(d["attempts"][0]["error"].as_str().unwrap().contains("no answer within 300 ms"), "{d}");
        receiver.delay(0);
        within(10, "the retry", || async { delivery_status(app, &m, &owner, &slow).await["delivery"]["status"] == "sent" }).await;
        // 429 with Retry-After: the next attempt waits the receiver's three seconds, not
        // the schedule's one.
        receiver.retry_after(3);
        receiver.script(&[429]);
        let (_, v) = publish(app, json!({ "topic": "order.status_changed", "payload": order("r-1", "paid") })).await;
        let id = v["data"]["deliveries"][0].as_str().unwrap().to_string();
        within(15, "the delivery after Retry-After", || async { receiver.accepted().iter().any(|r| r.id == id) }).await;
        let tries: Vec<std::time::Instant> = receiver.received().iter().filter(|r| r.id == id).map(|r| r.at).collect();
        assert_eq!(tries.len(), 2);
        assert!(tries[1] - tries[0] >= Duration::from_millis(2900), "waited {:?}", tries[1] - tries[0]);
    }
}

engine_test! {
    env [("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32"), ("PORTICO_MESSAGING__CONCURRENCY", "3")]
    async fn events_beyond_the_free_attempt_slots_wait_in_the_queue(app: &TestApp) {
        let receiver = Receiver::start().await;
        let (_, m, owner, created) = setup(app, json!({})).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        subscribe(app, &m, &owner, app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url })).await;
        // Three slots: ingress hands three deliveries straight to the workers and queues
        // the rest, which are claimed as slots free up; never more than three at once.
        receiver.delay(100);
        let (status, body) = publish_batch(app, json!((0..20).map(|i| json!({ "topic": "order.status_changed", "payload": order(&format!("q-{i}"), "paid") })).collect::<Vec<_>>())).await;
        assert_eq!(status, 201);
        let ids: Vec<String> = body["data"]["events"].as_array().unwrap().iter().map(|e| e["deliveries"][0].as_str().unwrap().to_string()).collect();
        within(30, "twenty deliveries", || async { receiver.accepted().len() == 20 }).await;
        assert!(receiver.max_in_flight() <= 3, "in flight at once: {}", receiver.max_in_flight());
        let mut seen: Vec<String> = receiver.accepted().iter().map(|r| r.id.clone()).collect();
        seen.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(seen, want, "each delivery exactly once");
        all_sent(app, &m, &owner, &ids, 10).await;
    }
}

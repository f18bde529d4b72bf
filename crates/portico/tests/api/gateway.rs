//! The gateway end to end: a real upstream service on a loopback port registered in the
//! registry, the catalog and grants set up through the management API, and calls made
//! with a token and with every signature scheme through both routing styles.

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    routing::{get, post},
    Json, Router,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

const IDENTITY_KEY: &str = "a shared identity key of 32+ characters";

/// A stand-in business service: answers in the envelope on `GET /orders/get`, in plain
/// JSON on `POST /orders/create`, and reports whether the gateway's identity verified.
struct Upstream {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Upstream {
    async fn start(name: &'static str) -> Upstream {
        async fn who(headers: &HeaderMap) -> Value {
            let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            match portico_sdk::Identity::verify(get, IDENTITY_KEY.as_bytes()) {
                Some(id) => json!({ "verified": true, "app_id": id.app_id, "merchant_id": id.merchant_id, "user_id": id.user_id,
                                    "internal_user_id": id.internal_user_id, "scope": id.scope, "trace_id": id.trace_id }),
                None => json!({ "verified": false }),
            }
        }
        let app = Router::new()
            .route(
                "/orders/get",
                get(|State(name): State<&'static str>, headers: HeaderMap, Query(q): Query<Vec<(String, String)>>| async move {
                    Json(json!({ "code": 0, "msg": "OK", "data": { "order_id": "2012120112304512", "instance": name, "query": q, "caller": who(&headers).await } }))
                }),
            )
            .route("/orders/count", get(|| async { Json(json!({ "count": 1 })) }))
            .route(
                "/health",
                get(|State(name): State<&'static str>| async move {
                    // The instance called "sick" always fails its health check.
                    if name == "sick" { axum::http::StatusCode::SERVICE_UNAVAILABLE } else { axum::http::StatusCode::OK }
                }),
            )
            .route(
                "/orders/stall",
                get(|| async {
                    // The head and a first piece at once, the rest too late.
                    let pieces = futures_util::stream::unfold(0u8, |i| async move {
                        match i {
                            0 => Some((Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"late\":")), 1)),
                            1 => {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                Some((Ok(axum::body::Bytes::from_static(b"true}")), 2))
                            }
                            _ => None,
                        }
                    });
                    axum::body::Body::from_stream(pieces)
                }),
            )
            .route(
                "/orders/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Json(json!({ "late": true }))
                }),
            )
            .route(
                "/orders/create",
                post(|State(name): State<&'static str>, headers: HeaderMap, body: String| async move {
                    Json(json!({ "created": true, "instance": name, "body": body, "caller": who(&headers).await }))
                }),
            )
            .with_state(name);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Upstream { addr, stop: Some(stop) }
    }

    fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn register(app: &TestApp, upstream: &Upstream, id: &str) {
    let res = app
        .client
        .post(format!("{}/registry/v1/instances", app.internal))
        .json(&json!({ "id": id, "service": "order-svc", "host": "127.0.0.1", "port": upstream.addr.port(), "endpoints": ["/orders/get"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

/// The catalog (group `orders`: `order.get` and `order.create` limited to 2/s), an
/// active merchant with an app granted `orders` through a request and its approval.
/// Returns (merchant, app id, production key, production secret, owner token).
async fn setup(app: &TestApp) -> (String, String, String, String, String) {
    let admin = app.admin().await;
    app.call(Method::PUT, "/api/v1/catalog/groups/orders", Some(&admin), Some(json!({ "title": "Orders" })), StatusCode::OK).await;
    for (name, method, path, extra) in [
        ("order.get", "GET", "/orders/get", json!({ "business_key_pointer": "/data/order_id" })),
        (
            "order.create",
            "POST",
            "/orders/create",
            json!({ "rate_limit_per_second": 2, "request_schema": { "type": "object", "required": ["sku"], "properties": { "sku": { "type": "string", "minLength": 1 } } } }),
        ),
        ("order.slow", "GET", "/orders/slow", json!({ "timeout_ms": 300 })),
        ("order.stall", "GET", "/orders/stall", json!({ "timeout_ms": 300 })),
        ("order.count", "GET", "/orders/count", json!({ "daily_quota": 2 })),
    ] {
        let mut body = json!({ "name": name, "version": "1.0", "group": "orders", "service": "order-svc", "upstream_path": path, "http_method": method });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let v = app.post("/api/v1/catalog/apis", Some(&admin), body, StatusCode::CREATED).await;
        let id = v["data"]["id"].as_str().unwrap().to_string();
        app.post(&format!("/api/v1/catalog/apis/{id}/publish"), Some(&admin), json!({}), StatusCode::OK).await;
    }
    let (m, owner) = app.active_merchant("owner@shop.cn").await;
    app.call(Method::PUT, &format!("/api/v1/merchants/{m}/internal-user"), Some(&admin), Some(json!({ "internal_user_id": "u-1001" })), StatusCode::OK).await;
    let created = app.create_app(&m, &owner).await;
    let app_id = created["app"]["id"].as_str().unwrap().to_string();
    let key = created["secrets"][1]["app_key"].as_str().unwrap().to_string();
    let secret = created["secrets"][1]["app_secret"].as_str().unwrap().to_string();
    let r = app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/grant-requests"), Some(&owner), json!({ "group": "orders" }), StatusCode::CREATED).await;
    let rid = r["data"]["id"].as_str().unwrap();
    let queue = app.get("/api/v1/grant-requests?state=pending", &admin, StatusCode::OK).await;
    assert!(queue["data"].as_array().unwrap().iter().any(|q| q["id"] == rid));
    app.post(&format!("/api/v1/grant-requests/{rid}/approve"), Some(&admin), json!({}), StatusCode::OK).await;
    (m, app_id, key, secret, owner)
}

/// An access token for a granted app, once the gateway's snapshot has the app and its
/// grant (changes are live within a second, not at once).
async fn token(app: &TestApp, key: &str, secret: &str) -> String {
    token_when(app, key, secret, |s| s == StatusCode::OK).await
}

/// An access token, once the gateway's answer to it satisfies `ready`.
async fn token_when(app: &TestApp, key: &str, secret: &str, ready: impl Fn(StatusCode) -> bool) -> String {
    let v: Value = app.client.post(format!("{}/oauth2/token", app.public)).basic_auth(key, Some(secret)).form(&[("grant_type", "client_credentials")]).send().await.unwrap().json().await.unwrap();
    let token = v["access_token"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    eventually("the gateway's snapshot catching up", || async {
        let res = app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&token).send().await.unwrap();
        ready(res.status())
    })
    .await;
    token
}

/// The merchant's recorded call of a trace id, `null` if none shows within five seconds
/// (records are written in batches off the request path).
async fn recorded_call(app: &TestApp, merchant: &str, owner: &str, trace: &str) -> Value {
    for _ in 0..50 {
        let v = app.get(&format!("/api/v1/merchants/{merchant}/calls?trace_id={trace}"), owner, StatusCode::OK).await;
        if let Some(c) = v["data"]["items"].as_array().and_then(|a| a.first()) {
            return c.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Value::Null
}

async fn json_of(res: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
}

/// Configuration changes are live within a second, not at once: retries `f` until it
/// returns true, for up to three seconds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..60 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within three seconds");
}

fn now() -> i64 {
    portico_core::time::now_ms() / 1000
}

engine_test! {
    env [("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY)]
    async fn calls_by_token_and_every_signature_through_both_routing_styles(app: &TestApp) {
        let upstream = Upstream::start("one").await;
        register(app, &upstream, "order-1").await;
        let (m, app_id, key, secret, owner) = setup(app).await;
        let bearer = token(app, &key, &secret).await;

        // REST path with a bearer token: the upstream answered in the envelope, which
        // passes through unchanged; the service saw a verified identity.
        let (status, headers, v) = json_of(app.client.get(format!("{}/api/order-svc/orders/get?id=7", app.public)).bearer_auth(&bearer).send().await.unwrap()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["code"], 0);
        assert_eq!(v["msg"], "OK");
        assert_eq!(v["data"]["order_id"], "2012120112304512");
        let caller = &v["data"]["caller"];
        assert_eq!(caller["verified"], true, "{v}");
        assert_eq!(caller["app_id"], app_id.as_str());
        assert_eq!(caller["merchant_id"], m.as_str());
        assert_eq!(caller["internal_user_id"], "u-1001", "the internal user binding travels with the call");
        assert_eq!(caller["trace_id"], headers["x-trace-id"].to_str().unwrap());
        assert_eq!(v["data"]["query"], json!([["id", "7"]]));

        // Catalog path, same API.
        let (status, _, v) = json_of(app.client.get(format!("{}/order/get/v1.0", app.public)).bearer_auth(&bearer).send().await.unwrap()).await;
        assert_eq!(status, 200, "{v}");

        // The single entry with every parameter-style scheme.
        let sdk = portico_sdk::Credentials::new(&key, &secret);
        for method in [portico_sdk::SignMethod::Md5, portico_sdk::SignMethod::HmacSha256, portico_sdk::SignMethod::TopMd5, portico_sdk::SignMethod::TopHmac, portico_sdk::SignMethod::TopHmacSha256] {
            let params = sdk.sign_params(method, &[("method", "order.get"), ("v", "1.0"), ("id", "9")], now(), None);
            let (status, _, v) = json_of(app.client.get(format!("{}/router/rest", app.public)).query(&params).send().await.unwrap()).await;
            assert_eq!(status, 200, "{method:?}: {v}");
            assert_eq!(v["data"]["query"], json!([["id", "9"]]), "only business parameters reach the service");
        }
        // RSA2, with the app's key pair.
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let pem = { use rsa::pkcs8::EncodePublicKey; rsa::RsaPublicKey::from(&private).to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap() };
        app.call(Method::PATCH, &format!("/api/v1/merchants/{m}/apps/{app_id}"), Some(&owner), Some(json!({ "rsa_public_key": pem })), StatusCode::OK).await;
        eventually("an rsa2 call with the uploaded key", || async {
            let params = portico_sdk::sign_params_rsa2(&key, &private, &[("method", "order.get"), ("v", "1.0")], now(), None);
            app.client.get(format!("{}/router/rest", app.public)).query(&params).send().await.unwrap().status() == 200
        })
        .await;

        // POST through the single entry: the nonce is required, biz_content is the body.
        let params = sdk.sign_params(portico_sdk::SignMethod::HmacSha256, &[("method", "order.create"), ("v", "1.0"), ("biz_content", r#"{"sku":"hoodie"}"#)], now(), Some(&portico_sdk::nonce()));
        let (status, _, v) = json_of(app.client.post(format!("{}/router/rest", app.public)).form(&params).send().await.unwrap()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"]["body"], r#"{"sku":"hoodie"}"#, "a plain upstream answer is wrapped in the envelope");
        assert_eq!(v["data"]["created"], true);
        assert!(v["trace_id"].is_string());

        // Header style on a REST path with a JSON body.
        let body = br#"{"sku":"socks"}"#;
        let auth = sdk.authorization("POST", "/api/order-svc/orders/create", body, now(), &portico_sdk::nonce());
        let (status, _, v) = json_of(app.client.post(format!("{}/api/order-svc/orders/create", app.public)).header("authorization", auth.clone()).header("content-type", "application/json").body(body.to_vec()).send().await.unwrap()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"]["caller"]["verified"], true);
        // The same signed request again is a replay.
        let (status, _, v) = json_of(app.client.post(format!("{}/api/order-svc/orders/create", app.public)).header("authorization", auth).header("content-type", "application/json").body(body.to_vec()).send().await.unwrap()).await;
        assert_eq!((status, v["code"].as_u64()), (StatusCode::UNAUTHORIZED, Some(21006)), "{v}");

        // Forged identity headers from the client never reach the service.
        let (_, _, v) = json_of(app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&bearer).header("x-portico-merchant-id", "mch_forged").send().await.unwrap()).await;
        assert_eq!(v["data"]["caller"]["merchant_id"], m.as_str());
        // In any letter case, as the gateway's own HTTP/1.1 loop keeps names as sent.
        let raw = raw_exchange(app, format!("GET /api/order-svc/orders/get HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nX-Portico-Merchant-Id: mch_forged\r\nConnection: close\r\n\r\n").as_bytes()).await;
        let body: Value = serde_json::from_str(&raw[raw.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(body["data"]["caller"]["merchant_id"], m.as_str(), "{raw}");
    }
}

engine_test! {
    env [("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY)]
    async fn refusals_have_their_codes(app: &TestApp) {
        let upstream = Upstream::start("one").await;
        register(app, &upstream, "order-1").await;
        let (m, app_id, key, secret, owner) = setup(app).await;
        let bearer = token(app, &key, &secret).await;
        let get = |path: &str, token: Option<&str>| {
            let mut req = app.client.get(format!("{}{path}", app.public));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            async move { json_of(req.send().await.unwrap()).await }
        };
        let code = |r: &(StatusCode, HeaderMap, Value)| (r.0, r.2["code"].as_u64().unwrap_or(0));
        assert_eq!(code(&get("/api/order-svc/orders/nope", Some(&bearer)).await), (StatusCode::NOT_FOUND, 40001));
        assert_eq!(code(&get("/router/rest?method=order.nope", Some(&bearer)).await), (StatusCode::NOT_FOUND, 40001));
        assert_eq!(code(&get("/api/order-svc/orders/get", None).await), (StatusCode::UNAUTHORIZED, 20001));
        assert_eq!(code(&get("/api/order-svc/orders/get", Some("pat_forged")).await), (StatusCode::UNAUTHORIZED, 20001));
        // A signature made with the wrong secret: production does not echo the canonical string.
        let bad = portico_sdk::Credentials::new(&key, "sk_live_wrong").sign_params(portico_sdk::SignMethod::HmacSha256, &[("method", "order.get"), ("v", "1.0")], now(), None);
        let r = json_of(app.client.get(format!("{}/router/rest", app.public)).query(&bad).send().await.unwrap()).await;
        assert_eq!(code(&r), (StatusCode::UNAUTHORIZED, 21004));
        assert!(r.2["data"].get("canonical").is_none());

        // An app without the grant.
        let other = app.create_app(&m, &owner).await;
        let other_token = token_when(app, other["secrets"][1]["app_key"].as_str().unwrap(), other["secrets"][1]["app_secret"].as_str().unwrap(), |s| s != StatusCode::UNAUTHORIZED).await;
        eventually("the new app refused for want of a grant", || async { code(&get("/api/order-svc/orders/get", Some(&other_token)).await) == (StatusCode::FORBIDDEN, 40002) }).await;

        // Rate limit on order.create: 2/s, a burst of 2.
        let mut statuses = vec![];
        for _ in 0..4 {
            let res = app.client.post(format!("{}/api/order-svc/orders/create", app.public)).bearer_auth(&bearer).json(&json!({ "sku": "x" })).send().await.unwrap();
            statuses.push((res.status(), res.headers().get("retry-after").is_some(), res.headers().get("ratelimit-limit").map(|v| v.to_str().unwrap().to_string())));
        }
        assert_eq!(statuses[0].0, 200);
        assert!(statuses.iter().any(|s| s.0 == StatusCode::TOO_MANY_REQUESTS && s.1 && s.2.as_deref() == Some("2")), "{statuses:?}");

        // IP allowlist, live without restart.
        app.call(Method::PATCH, &format!("/api/v1/merchants/{m}/apps/{app_id}"), Some(&owner), Some(json!({ "ip_allowlist": ["10.0.0.0/8"] })), StatusCode::OK).await;
        eventually("the allowlist refusing loopback", || async { code(&get("/api/order-svc/orders/get", Some(&bearer)).await) == (StatusCode::FORBIDDEN, 40004) }).await;
        app.call(Method::PATCH, &format!("/api/v1/merchants/{m}/apps/{app_id}"), Some(&owner), Some(json!({ "ip_allowlist": [] })), StatusCode::OK).await;
        eventually("the allowlist lifted", || async { code(&get("/api/order-svc/orders/get", Some(&bearer)).await) == (StatusCode::OK, 0) }).await;
        // A disabled app stops, without a restart.
        app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/disable"), Some(&owner), json!({}), StatusCode::OK).await;
        eventually("the disabled app refused", || async { code(&get("/api/order-svc/orders/get", Some(&bearer)).await) == (StatusCode::FORBIDDEN, 21003) }).await;
        app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/enable"), Some(&owner), json!({}), StatusCode::OK).await;
        eventually("the app enabled again", || async { code(&get("/api/order-svc/orders/get", Some(&bearer)).await).0 == StatusCode::OK }).await;

        // Input that breaks the API's request schema is refused, naming the field.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = json_of(app.client.post(format!("{}/api/order-svc/orders/create", app.public)).bearer_auth(&bearer).json(&json!({ "sku": 5 })).send().await.unwrap()).await;
        assert_eq!(code(&r), (StatusCode::BAD_REQUEST, 10002), "{}", r.2);
        assert_eq!(r.2["data"]["field"], "sku");
        let admin = app.admin().await;
        let bad_schema = json!({ "name": "order.bad", "version": "1.0", "group": "orders", "service": "order-svc", "upstream_path": "/x", "http_method": "GET", "request_schema": { "type": "no-such-type" } });
        let v = app.post("/api/v1/catalog/apis", Some(&admin), bad_schema, StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "request_schema");
        // A daily quota of 2: the third call of the day is refused until the day ends.
        assert_eq!(code(&get("/order/count", Some(&bearer)).await), (StatusCode::OK, 0));
        assert_eq!(code(&get("/order/count/v1.0", Some(&bearer)).await), (StatusCode::OK, 0));
        let over = get("/api/order-svc/orders/count", Some(&bearer)).await;
        assert_eq!(code(&over), (StatusCode::TOO_MANY_REQUESTS, 40007));
        let retry: u64 = over.1["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=86_400).contains(&retry), "{retry}");
        // An upstream that answers too late: an envelope after the API's timeout.
        assert_eq!(code(&get("/api/order-svc/orders/slow", Some(&bearer)).await), (StatusCode::GATEWAY_TIMEOUT, 41002));
        // One whose body stalls after its head: the same, not a wait for the rest.
        assert_eq!(code(&get("/api/order-svc/orders/stall", Some(&bearer)).await), (StatusCode::GATEWAY_TIMEOUT, 41002));
        // An upstream that is gone: an envelope, not a hang or a 500.
        let mut upstream = upstream;
        upstream.kill();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(code(&get("/api/order-svc/orders/get", Some(&bearer)).await), (StatusCode::SERVICE_UNAVAILABLE, 41001));
    }
}

engine_test! {
    env [("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY)]
    async fn balanced_across_instances_and_survives_one_dying(app: &TestApp) {
        let mut one = Upstream::start("one").await;
        let two = Upstream::start("two").await;
        register(app, &one, "order-1").await;
        register(app, &two, "order-2").await;
        let (_m, _app_id, key, secret, _owner) = setup(app).await;
        let bearer = token(app, &key, &secret).await;
        let mut seen = std::collections::HashMap::new();
        for _ in 0..20 {
            let (status, _, v) = json_of(app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&bearer).send().await.unwrap()).await;
            assert_eq!(status, 200);
            *seen.entry(v["data"]["instance"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
        assert_eq!(seen.get("one"), Some(&10), "{seen:?}");
        assert_eq!(seen.get("two"), Some(&10), "{seen:?}");
        one.kill();
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..10 {
            let (status, _, v) = json_of(app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&bearer).send().await.unwrap()).await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["data"]["instance"], "two");
        }
        // Deregistration takes an instance out at once.
        let res = app.client.delete(format!("{}/registry/v1/instances/order-2", app.internal)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let (status, _, v) = json_of(app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&bearer).send().await.unwrap()).await;
        assert_eq!((status, v["code"].as_u64()), (StatusCode::SERVICE_UNAVAILABLE, Some(41001)));
    }
}

engine_test! {
    env [("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY)]
    async fn calls_and_business_keys_are_recorded(app: &TestApp) {
        let upstream = Upstream::start("one").await;
        register(app, &upstream, "order-1").await;
        let (m, _app_id, key, secret, owner) = setup(app).await;
        let bearer = token(app, &key, &secret).await;
        let res = app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&bearer).send().await.unwrap();
        let trace = res.headers()["x-trace-id"].to_str().unwrap().to_string();
        assert_eq!(res.status(), 200);
        let found = recorded_call(app, &m, &owner, &trace).await;
        // Every column comes back as it was recorded (calls are packed into segments).
        assert_eq!(found["api"], "order.get@1.0", "{found}");
        assert_eq!(found["status"], 200);
        assert_eq!(found["code"], 0);
        assert_eq!(found["trace_id"], trace.as_str());
        assert_eq!(found["merchant_id"], m.as_str());
        assert_eq!(found["app_id"], _app_id.as_str());
        assert_eq!(found["client_ip"], "127.0.0.1");
        assert_eq!(found["bytes_in"], 0);
        assert!(found["bytes_out"].as_i64().unwrap() > 0);
        assert!(found["latency_us"].as_i64().unwrap() > 0);
        assert!(found["at"].as_str().unwrap().starts_with("20"), "{found}");
        assert!(found["id"].as_str().unwrap().starts_with("cal_"));
        let keys = app.get(&format!("/api/v1/merchants/{m}/business-keys?api=order.get@1.0"), &owner, StatusCode::OK).await;
        assert_eq!(keys["data"]["items"][0]["business_key"], "2012120112304512", "{keys}");
        assert_eq!(keys["data"]["items"][0]["trace_id"], trace.as_str());
        // A trace id the client brought is found too, and the merchant's list holds both
        // calls, newest first (after those `token` made while waiting for the snapshot).
        let res = app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&bearer).header("x-trace-id", "shop-trace-000001").send().await.unwrap();
        assert_eq!(res.headers()["x-trace-id"], "shop-trace-000001");
        let theirs = recorded_call(app, &m, &owner, "shop-trace-000001").await;
        assert_eq!(theirs["trace_id"], "shop-trace-000001", "{theirs}");
        let all = app.get(&format!("/api/v1/merchants/{m}/calls"), &owner, StatusCode::OK).await;
        let traces: Vec<&str> = all["data"]["items"].as_array().unwrap().iter().map(|c| c["trace_id"].as_str().unwrap()).collect();
        assert_eq!(traces[..2], ["shop-trace-000001", trace.as_str()], "{all}");
        // Another merchant sees none of it.
        let (_other, other_owner) = app.active_merchant("other@shop.cn").await;
        app.get(&format!("/api/v1/merchants/{m}/calls"), &other_owner, StatusCode::NOT_FOUND).await;
    }
}

engine_test! {
    env [("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY)]
    async fn changes_reach_another_instance_within_a_second(app: &TestApp) {
        let upstream = Upstream::start("one").await;
        register(app, &upstream, "order-1").await;
        let (m, app_id, key, secret, owner) = setup(app).await;
        let peer = app.spawn_peer(&[("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY)]).await;
        let bearer = token(app, &key, &secret).await;
        let call = |base: String| {
            let req = app.client.get(format!("{base}/api/order-svc/orders/get")).bearer_auth(&bearer);
            async move { req.send().await.unwrap().status() }
        };
        assert_eq!(call(peer.public.clone()).await, 200, "the peer loaded the configuration at start");
        app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/disable"), Some(&owner), json!({}), StatusCode::OK).await;
        let mut refused = false;
        for _ in 0..40 {
            if call(peer.public.clone()).await == StatusCode::FORBIDDEN {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(refused, "the peer never saw the app disabled");
        peer.stop().await;
    }
}

engine_test! {
    env [("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY)]
    async fn keeps_serving_from_its_snapshot_when_the_database_is_gone(app: &TestApp) {
        let upstream = Upstream::start("one").await;
        register(app, &upstream, "order-1").await;
        let (_m, _app_id, key, secret, _owner) = setup(app).await;
        let bearer = token(app, &key, &secret).await;
        app.platform.store().close().await;
        let res = app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&bearer).send().await.unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        // Signed calls too: their keys are in the snapshot.
        let params = portico_sdk::Credentials::new(&key, &secret).sign_params(portico_sdk::SignMethod::HmacSha256, &[("method", "order.get"), ("v", "1.0")], now(), None);
        let res = app.client.get(format!("{}/router/rest", app.public)).query(&params).send().await.unwrap();
        assert_eq!(res.status(), 200);
        drop(upstream);
    }
}

/// In cluster mode a rate limit holds across instances: the counters live in Redis.
/// Runs when `PORTICO_TEST_REDIS_URL` is set (CI sets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_two_instances() {
    let Ok(redis) = std::env::var("PORTICO_TEST_REDIS_URL") else {
        eprintln!("PORTICO_TEST_REDIS_URL is not set; the cluster rate limit is tested in CI");
        return;
    };
    for engine in crate::helpers::engines() {
        let settings = [("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY), ("PORTICO_REDIS__URL", redis.as_str())];
        let app = TestApp::spawn_with(engine, &settings).await;
        let upstream = Upstream::start("one").await;
        register(&app, &upstream, "order-1").await;
        let (_m, _app_id, key, secret, _owner) = setup(&app).await;
        let peer = app.spawn_peer(&settings).await;
        let bearer = token(&app, &key, &secret).await;
        eventually("the peer knowing the app", || async {
            peer.client.get(format!("{}/api/order-svc/orders/get", peer.public)).bearer_auth(&bearer).send().await.unwrap().status() == 200
        })
        .await;
        // order.create allows 2/s with a burst of 2. Alternate instances: the third call
        // in quick succession is refused wherever it lands.
        let mut statuses = Vec::new();
        for i in 0..4 {
            let base = if i % 2 == 0 { &app.public } else { &peer.public };
            let res = app.client.post(format!("{base}/api/order-svc/orders/create")).bearer_auth(&bearer).json(&json!({ "sku": "x" })).send().await.unwrap();
            statuses.push(res.status().as_u16());
        }
        assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
        assert!(statuses[2..].contains(&429), "the limit held across instances: {statuses:?}");
        peer.stop().await;
        app.stop().await;
    }
}

engine_test! {
    env [("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY)]
    async fn services_register_themselves_with_the_sdk(app: &TestApp) {
        let upstream = Upstream::start("one").await;
        let registration = portico_sdk::registry::Registration::start(&app.internal, "order-svc", "127.0.0.1", upstream.addr.port()).await.unwrap();
        let (_m, _app_id, key, secret, _owner) = setup(app).await;
        let bearer = token(app, &key, &secret).await;
        let listed: Value = app.client.get(format!("{}/registry/v1/instances", app.internal)).send().await.unwrap().json().await.unwrap();
        assert!(listed["data"].as_array().unwrap().iter().any(|i| i["id"] == registration.id.as_str()));
        let res = app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&bearer).send().await.unwrap();
        assert_eq!(res.status(), 200);
        // Deregistration on shutdown takes the instance out of rotation at once.
        registration.stop().await.unwrap();
        let (status, _, v) = json_of(app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&bearer).send().await.unwrap()).await;
        assert_eq!((status, v["code"].as_u64()), (StatusCode::SERVICE_UNAVAILABLE, Some(41001)));
        // Bad registrations are refused with the field named.
        let res = app.client.post(format!("{}/registry/v1/instances", app.internal)).json(&json!({ "service": "Bad Name", "host": "127.0.0.1", "port": 1 })).send().await.unwrap();
        assert_eq!(res.status(), 400);
        assert_eq!(res.json::<Value>().await.unwrap()["data"]["field"], "service");
        let res = app.client.put(format!("{}/registry/v1/instances/nope/heartbeat", app.internal)).send().await.unwrap();
        assert_eq!(res.status(), 404);
    }
}

engine_test! {
    env [("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY)]
    async fn active_health_checks_take_a_failing_instance_out(app: &TestApp) {
        let healthy = Upstream::start("healthy").await;
        let sick = Upstream::start("sick").await;
        for (u, id) in [(&healthy, "order-healthy"), (&sick, "order-sick")] {
            let res = app
                .client
                .post(format!("{}/registry/v1/instances", app.internal))
                .json(&json!({ "id": id, "service": "order-svc", "host": "127.0.0.1", "port": u.addr.port(), "health_path": "/health" }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
        }
        let (_m, _app_id, key, secret, _owner) = setup(app).await;
        let bearer = token(app, &key, &secret).await;
        // The sick instance answers calls fine but fails its probes (every 2 s, ejected
        // after three): soon every call goes to the healthy one.
        let instance_of = || async {
            let (_, _, v) = json_of(app.client.get(format!("{}/api/order-svc/orders/get", app.public)).bearer_auth(&bearer).send().await.unwrap()).await;
            v["data"]["instance"].as_str().unwrap_or_default().to_string()
        };
        for _ in 0..100 {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..4 {
                seen.insert(instance_of().await);
            }
            if seen.len() == 1 && seen.contains("healthy") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the instance failing its health checks was never taken out");
    }
}

/// An upstream written at the socket level, for answers no framework sends: a chunked
/// body, a body ended by closing (HTTP/1.0), something that is not HTTP, a length over
/// the limit, and a keep-alive answer after which the connection is closed anyway.
async fn raw_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let (answer, close): (&[u8], bool) = match path.as_str() {
                        "/raw/chunked" => (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n9;x=y\r\n{\"count\":\r\n2\r\n3}\r\n0\r\nx-trailer: 1\r\n\r\n", false),
                        "/raw/close" => (b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"closed\":true}", true),
                        "/raw/garbage" => (b"220 smtp.example ESMTP ready\r\n\r\n", true),
                        "/raw/huge" => (b"HTTP/1.1 200 OK\r\ncontent-length: 9000000\r\n\r\n{", true),
                        // Keep-alive by its headers, closed right after all the same.
                        _ => (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{\"once\":1}", true),
                    };
                    if s.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Writes raw bytes to the public listener and reads until it closes the connection.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.public.trim_start_matches("http://")).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.expect("the gateway closed the connection").unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

engine_test! {
    env [("PORTICO_GATEWAY__IDENTITY_KEY", IDENTITY_KEY)]
    async fn http_at_the_wire_on_both_sides(app: &TestApp) {
        let upstream = Upstream::start("one").await;
        register(app, &upstream, "order-1").await;
        let raw = raw_upstream().await;
        let res = app.client.post(format!("{}/registry/v1/instances", app.internal)).json(&json!({ "id": "raw-1", "service": "raw-svc", "host": "127.0.0.1", "port": raw.port() })).send().await.unwrap();
        assert_eq!(res.status(), 201);
        let (_m, _app_id, key, secret, _owner) = setup(app).await;
        let admin = app.admin().await;
        for name in ["chunked", "close", "garbage", "huge", "once"] {
            let v = app.post("/api/v1/catalog/apis", Some(&admin), json!({ "name": format!("raw.{name}"), "version": "1.0", "group": "orders", "service": "raw-svc", "upstream_path": format!("/raw/{name}"), "http_method": "GET" }), StatusCode::CREATED).await;
            app.post(&format!("/api/v1/catalog/apis/{}/publish", v["data"]["id"].as_str().unwrap()), Some(&admin), json!({}), StatusCode::OK).await;
        }
        let bearer = token(app, &key, &secret).await;
        let call = |name: &'static str| {
            let req = app.client.get(format!("{}/api/raw-svc/raw/{name}", app.public)).bearer_auth(&bearer);
            async move { json_of(req.send().await.unwrap()).await }
        };
        eventually("the raw APIs published", || async { call("close").await.0 != StatusCode::NOT_FOUND }).await;

        // Upstream side: a chunked body (extensions and trailers included) and a body
        // ended by closing are read whole and wrapped in the envelope.
        let (status, _, v) = call("chunked").await;
        assert_eq!((status, &v["data"]), (StatusCode::OK, &json!({ "count": 3 })), "{v}");
        let (status, _, v) = call("close").await;
        assert_eq!((status, &v["data"]), (StatusCode::OK, &json!({ "closed": true })), "{v}");
        // Not HTTP, or longer than the gateway reads: 502 with 41003, never a hang.
        for name in ["garbage", "huge"] {
            let (status, _, v) = call(name).await;
            assert_eq!((status, v["code"].as_u64()), (StatusCode::BAD_GATEWAY, Some(41003)), "{name}: {v}");
        }
        // A pooled connection the instance closed is noticed and the call sent again on a
        // new one: every call succeeds (the instance is not ejected either).
        for _ in 0..5 {
            let (status, _, v) = call("once").await;
            assert_eq!((status, &v["data"]), (StatusCode::OK, &json!({ "once": 1 })), "{v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Client side, raw bytes on one connection each.
        let get = format!("GET /api/order-svc/orders/get HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bearer}\r\n\r\n");
        let get_close = format!("GET /api/order-svc/orders/get HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bearer}\r\nconnection: close\r\n\r\n");
        // Pipelined calls are answered in order.
        let out = raw_exchange(app, format!("{get}{get}{get_close}").as_bytes()).await;
        assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{out}");
        assert_eq!(out.matches("2012120112304512").count(), 3, "{out}");
        // A gateway call, then a path of the router on the same connection.
        let out = raw_exchange(app, format!("{get}GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await;
        assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{out}");
        // HTTP/1.0 and a chunked request body (hyper's side of the listener).
        let out = raw_exchange(app, format!("GET /api/order-svc/orders/get HTTP/1.0\r\nauthorization: Bearer {bearer}\r\n\r\n").as_bytes()).await;
        assert!(out.starts_with("HTTP/1.0 200 OK\r\n") && out.contains("2012120112304512"), "{out}");
        // A client's acceptable trace id is kept on both sides of the listener, another is replaced.
        for version in ["1.1", "1.0"] {
            let out = raw_exchange(app, format!("GET /api/order-svc/orders/get HTTP/{version}\r\nauthorization: Bearer {bearer}\r\nX-Trace-Id: abcdef0123456789\r\nconnection: close\r\n\r\n").as_bytes()).await;
            assert!(out.to_ascii_lowercase().contains("\r\nx-trace-id: abcdef0123456789\r\n") && out.contains(r#""trace_id":"abcdef0123456789""#), "{out}");
            let out = raw_exchange(app, format!("GET /api/order-svc/orders/get HTTP/{version}\r\nauthorization: Bearer {bearer}\r\nx-trace-id: <bad>\r\nconnection: close\r\n\r\n").as_bytes()).await;
            assert!(out.contains("\r\nx-trace-id: ") && !out.contains("<bad>"), "{out}");
        }
        let chunked = format!("POST /api/order-svc/orders/create HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bearer}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\n{{\"sku\r\n6\r\n\":\"a\"}}\r\n0\r\n\r\n");
        let out = raw_exchange(app, chunked.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.contains(r#""created":true"#), "{out}");
        // Bad input: an envelope with its code, then the connection is closed.
        let out = raw_exchange(app, b"GET /api/x HTTP/1.1\r\nbad header\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n") && out.contains(r#""code":10007"#) && out.contains("trace_id"), "{out}");
        assert!(out.contains("\r\nx-trace-id: "), "refusals carry the trace id in the header too: {out}");
        let out = raw_exchange(app, b"GET /api/x HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n").await;
        assert!(out.contains(r#""code":10007"#) && out.contains("Content-Length"), "{out}");
        let out = raw_exchange(app, b"POST /api/order-svc/orders/create HTTP/1.1\r\ncontent-length: 999999999\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 413 Payload Too Large\r\n") && out.contains(r#""code":10003"#), "{out}");
    }
}

//! Bad input gets a 4xx envelope that names the problem; never a 500, and never a
//! half-written change.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{TestApp, PASSWORD};

async fn raw(app: &TestApp, path: &str, token: Option<&str>, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let mut req = app.client.post(format!("{}{path}", app.console)).header("content-type", content_type).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    crate::helpers::assert_envelope(&v);
    (status, v)
}

engine_test! {
    // A small limit, so that the oversized body fits in the socket buffers and the client
    // reads the 413 instead of a broken pipe.
    env [("PORTICO_HTTP__MAX_BODY_BYTES", "4096")]
    async fn malformed_oversized_and_mistyped_bodies(app: &TestApp) {
        let (status, v) = raw(app, "/api/v1/merchants/sign-up", None, "application/json", b"{\"email\": ".to_vec()).await;
        assert_eq!((status, v["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(10001)), "{v}");
        let (status, v) = raw(app, "/api/v1/merchants/sign-up", None, "text/plain", b"{}".to_vec()).await;
        assert_eq!((status, v["code"].as_u64()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(10006)), "{v}");
        let big = format!("{{\"email\":\"a@b.cn\",\"password\":\"{}\",\"merchant_name\":\"x\"}}", "x".repeat(8 * 1024));
        let (status, v) = raw(app, "/api/v1/merchants/sign-up", None, "application/json", big.into_bytes()).await;
        assert_eq!((status, v["code"].as_u64()), (StatusCode::PAYLOAD_TOO_LARGE, Some(10003)), "{v}");
        let (status, v) = raw(app, "/api/v1/merchants/sign-up", None, "application/json", br#"{"email":"a@b.cn","password":"long enough 1"}"#.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["data"]["field"], "merchant_name", "a missing field is named: {v}");
        let (status, v) = raw(app, "/api/v1/merchants/sign-up", None, "application/json", br#"{"email":7,"password":"long enough 1","merchant_name":"x"}"#.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["data"]["field"], "email", "{v}");
        let (status, v) = raw(app, "/api/v1/merchants/sign-up", None, "application/json", b"[]".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        let (status, v) = raw(app, "/api/v1/merchants/sign-up", None, "application/json", vec![0xff, 0xfe, 0x00]).await;
        assert_eq!((status, v["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(10001)), "{v}");
    }
}

engine_test! {
    async fn invalid_fields_are_named(app: &TestApp) {
        for (body, field) in [
            (json!({ "email": "not-an-email", "password": PASSWORD, "merchant_name": "x" }), "email"),
            (json!({ "email": "a@b.cn", "password": "short", "merchant_name": "x" }), "password"),
            (json!({ "email": "a@b.cn", "password": PASSWORD, "merchant_name": "   " }), "merchant_name"),
            (json!({ "email": "a@b.cn", "password": PASSWORD, "merchant_name": "x".repeat(500) }), "merchant_name"),
        ] {
            let v = app.post("/api/v1/merchants/sign-up", None, body, StatusCode::BAD_REQUEST).await;
            assert_eq!(v["code"], 10002);
            assert_eq!(v["data"]["field"], field, "{v}");
        }
        let (m, owner) = app.active_merchant("owner@shop.cn").await;
        let path = format!("/api/v1/merchants/{m}/apps");
        for (body, field) in [
            (json!({ "name": "x", "integration_mode": "api", "callback_url": "http://merchant.example.cn/cb" }), "callback_url"),
            (json!({ "name": "x", "integration_mode": "api", "callback_url": "not a url" }), "callback_url"),
            (json!({ "name": "x", "integration_mode": "api", "ip_allowlist": ["10.0.0.0/8", "10.1.2.3/16"] }), "ip_allowlist[1]"),
            (json!({ "name": "x", "integration_mode": "api", "ip_allowlist": ["300.0.0.1"] }), "ip_allowlist[0]"),
            (json!({ "name": "x", "integration_mode": "api", "ip_allowlist": "10.0.0.0/8" }), "ip_allowlist"),
            (json!({ "name": "x", "integration_mode": "desktop" }), "integration_mode"),
            (json!({ "name": "x", "integration_mode": "api", "rsa_public_key": "garbage" }), "rsa_public_key"),
        ] {
            let v = app.post(&path, Some(&owner), body.clone(), StatusCode::BAD_REQUEST).await;
            assert_eq!(v["code"], 10002, "{body}: {v}");
            assert_eq!(v["data"]["field"], field, "{body}: {v}");
        }
        let mut docs = crate::helpers::documents();
        docs["contact_phone"] = json!("call me maybe");
        let (m2, owner2) = app.sign_up("other@shop.cn").await;
        let v = app.call(reqwest::Method::PUT, &format!("/api/v1/merchants/{m2}/documents"), Some(&owner2), Some(docs), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "contact_phone");
        // None of those left anything behind.
        let apps = app.get(&path, &owner, StatusCode::OK).await;
        assert_eq!(apps["data"]["items"].as_array().unwrap().len(), 0);
        let v = app.get(&format!("/api/v1/merchants/{m2}"), &owner2, StatusCode::OK).await;
        assert!(v["data"]["company_name"].is_null());
    }
}

engine_test! {
    async fn a_failed_sign_up_writes_nothing(app: &TestApp) {
        let admin = app.admin().await;
        app.sign_up("taken@shop.cn").await;
        let count = |v: &Value| v["data"]["items"].as_array().unwrap().len();
        let before = count(&app.get("/api/v1/merchants", &admin, StatusCode::OK).await);
        // The merchant row is written before the account insert fails on the taken email:
        // the transaction must take the merchant back out.
        let v = app
            .post("/api/v1/merchants/sign-up", None, json!({ "email": "TAKEN@shop.cn", "password": PASSWORD, "merchant_name": "Dup" }), StatusCode::BAD_REQUEST)
            .await;
        assert_eq!(v["data"]["field"], "email");
        let after = count(&app.get("/api/v1/merchants", &admin, StatusCode::OK).await);
        assert_eq!(before, after);
        let log = app.get("/api/v1/audit", &admin, StatusCode::OK).await;
        let sign_ups = log["data"]["items"].as_array().unwrap().iter().filter(|e| e["action"] == "merchant.signed_up").count();
        assert_eq!(sign_ups, 1);
    }
}

engine_test! {
    async fn malformed_authorization_headers(app: &TestApp) {
        for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "pt_at_abc", "Bearer pt_rt_notanaccesstoken", "Bearer \u{7f}"] {
            let res = app.client.get(format!("{}/api/v1/auth/me", app.console)).header("authorization", header).send().await;
            let Ok(res) = res else { continue };
            assert_eq!(res.status(), 401, "{header:?}");
            let v: Value = res.json().await.unwrap();
            assert_eq!(v["code"], 20001, "{header:?}");
        }
    }
}

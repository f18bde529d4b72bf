//! The program itself: listeners, probes, trace ids, the OpenAPI document, outages.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::assert_envelope;

engine_test! {
    async fn every_listener_has_health_and_readiness(app: &TestApp) {
        for base in [&app.public, &app.console, &app.internal] {
            for (path, status) in [("/healthz", "alive"), ("/readyz", "ready")] {
                let res = app.client.get(format!("{base}{path}")).send().await.unwrap();
                assert_eq!(res.status(), 200, "{base}{path}");
                let v: Value = res.json().await.unwrap();
                assert_envelope(&v);
                assert_eq!(v["data"]["status"], status);
            }
        }
        // The public listener's readiness also counts call records dropped (none here).
        let v: Value = app.client.get(format!("{}/readyz", app.public)).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["data"]["call_records_dropped"], 0, "{v}");
    }
}

engine_test! {
    async fn trace_ids_are_assigned_or_kept(app: &TestApp) {
        let res = app.client.get(format!("{}/healthz", app.console)).header("x-trace-id", "abcdef0123456789").send().await.unwrap();
        assert_eq!(res.headers()["x-trace-id"], "abcdef0123456789");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["trace_id"], "abcdef0123456789");
        // A malformed incoming id is replaced, not echoed.
        let res = app.client.get(format!("{}/healthz", app.console)).header("x-trace-id", "<script>").send().await.unwrap();
        assert_ne!(res.headers()["x-trace-id"], "<script>");
    }
}

engine_test! {
    async fn unknown_routes_and_methods_get_envelopes(app: &TestApp) {
        for (base, code) in [(&app.public, 40001), (&app.console, 10004), (&app.internal, 10004)] {
            // On the public listener every other path is the gateway's: an unknown API.
            let res = app.client.get(format!("{base}/no/such/route")).send().await.unwrap();
            assert_eq!(res.status(), 404);
            let v: Value = res.json().await.unwrap();
            assert_envelope(&v);
            assert_eq!(v["code"], code, "{base}");
        }
        let v = app.call(Method::DELETE, "/api/v1/auth/token", None, None, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(v["code"], 10005);
    }
}

engine_test! {
    async fn openapi_document_describes_the_api(app: &TestApp) {
        let doc: Value = app.client.get(format!("{}/openapi.json", app.console)).send().await.unwrap().json().await.unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/v1/auth/token",
            "/api/v1/merchants/sign-up",
            "/api/v1/merchants/{merchant_id}/approve",
            "/api/v1/merchants/{merchant_id}/apps",
            "/api/v1/merchants/{merchant_id}/apps/{app_id}/credentials/{environment}/rotate",
            "/api/v1/operators",
        ] {
            assert!(paths.contains_key(p), "{p} documented");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        // Every documented operation is served: none answers "no such route".
        for (path, ops) in paths {
            let concrete = path.replace("{merchant_id}", "mch_x").replace("{app_id}", "app_x").replace("{environment}", "sandbox");
            for method in ops.as_object().unwrap().keys() {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let res = app.client.request(m, format!("{}{concrete}", app.console)).send().await.unwrap();
                let v: Value = res.json().await.unwrap();
                assert_ne!(v["code"], 10004, "{method} {path} is documented but not routed");
                assert_ne!(v["code"], 10005, "{method} {path} is documented but not routed");
            }
        }
    }
}

engine_test! {
    async fn database_outage_gives_503_and_readyz_says_so(app: &TestApp) {
        let admin = app.admin().await;
        app.platform.store().close().await;
        // The public listener's gateway serves from its snapshot: ready, degraded.
        let v: Value = app.client.get(format!("{}/readyz", app.public)).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["data"]["status"], "degraded");
        assert_eq!(v["data"]["database"], "unreachable");
        assert_eq!(v["data"]["call_records_dropped"], 0, "{v}");
        let res = app.client.get(format!("{}/readyz", app.console)).send().await.unwrap();
        assert_eq!(res.status(), 503);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["code"], 50003);
        assert_eq!(v["data"]["database"], "unreachable");
        let v = app.get("/api/v1/merchants", &admin, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(v["code"], 50003);
        let v = app
            .post("/api/v1/merchants/sign-up", None, serde_json::json!({"email": "x@y.cn", "password": "long enough pw", "merchant_name": "X"}), StatusCode::SERVICE_UNAVAILABLE)
            .await;
        assert_eq!(v["code"], 50003);
        // Liveness does not depend on the database.
        assert_eq!(app.client.get(format!("{}/healthz", app.console)).send().await.unwrap().status(), 200);
    }
}

engine_test! {
    async fn migrations_are_recorded(app: &TestApp) {
        let applied = app.platform.store().applied_migrations().await.unwrap();
        let known: Vec<i64> = portico_store::MIGRATIONS.iter().map(|m| m.0).collect();
        assert_eq!(applied, known);
        // Opening the same database again applies nothing twice.
        let again = portico_store::Store::open(&app.database_url, 2).await.unwrap();
        assert_eq!(again.applied_migrations().await.unwrap(), known);
    }
}

#[tokio::test]
async fn embedded_mode_generates_an_owner_only_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("PORTICO_PUBLIC__ADDR".to_string(), "127.0.0.1:0".to_string()),
        ("PORTICO_CONSOLE__ADDR".into(), "127.0.0.1:0".into()),
        ("PORTICO_INTERNAL__ADDR".into(), "127.0.0.1:0".into()),
        ("PORTICO_ADMIN_PASSWORD".into(), "admin password 1".into()),
    ];
    let overrides = portico::config::Overrides { data_dir: Some(dir.path().join("data")), ..Default::default() };
    let (config, _) = portico::config::Config::load(None, &env, &overrides).unwrap();
    let app = portico::App::build(config.clone()).await.unwrap();
    let key_path = dir.path().join("data/master.key");
    let key = std::fs::read_to_string(&key_path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(dir.path().join("data/portico.db").exists());
    drop(app);
    // A second start reads the same key instead of generating another.
    let app = portico::App::build(config).await.unwrap();
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), key);
    drop(app);
}

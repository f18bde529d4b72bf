//! Apps and credentials: creation, secrets shown once, rotation with grace, disabling.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;



fn rsa_public_key_pem(bits: usize) -> String {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), bits).unwrap();
    rsa::RsaPublicKey::from(&key).to_public_key_pem(LineEnding::LF).unwrap()
}

engine_test! {
    async fn apps_get_sandbox_and_production_credentials_shown_once(app: &TestApp) {
        let (m, owner) = app.active_merchant("owner@shop.cn").await;
        let pem = rsa_public_key_pem(2048);
        let v = app
            .post(
                &format!("/api/v1/merchants/{m}/apps"),
                Some(&owner),
                json!({
                    "name": "Checkout",
                    "integration_mode": "h5",
                    "callback_url": "https://shop.example.cn/portico/events",
                    "ip_allowlist": ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"],
                    "rsa_public_key": pem,
                }),
                StatusCode::CREATED,
            )
            .await;
        let d = &v["data"];
        let app_id = d["app"]["id"].as_str().unwrap();
        assert_eq!(d["app"]["integration_mode"], "h5");
        assert_eq!(d["app"]["ip_allowlist"], json!(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"]));
        let secrets = d["secrets"].as_array().unwrap();
        assert_eq!(secrets.len(), 2);
        let sandbox = secrets.iter().find(|s| s["environment"] == "sandbox").unwrap();
        let production = secrets.iter().find(|s| s["environment"] == "production").unwrap();
        assert!(sandbox["app_key"].as_str().unwrap().starts_with("ak_test_"));
        assert!(production["app_key"].as_str().unwrap().starts_with("ak_live_"));
        let prod_secret = production["app_secret"].as_str().unwrap().to_string();
        assert!(prod_secret.starts_with("sk_live_"));
        assert_ne!(sandbox["app_secret"], production["app_secret"]);

        // Never returned again, and stored only as ciphertext.
        let again = app.get(&format!("/api/v1/merchants/{m}/apps/{app_id}"), &owner, StatusCode::OK).await;
        assert!(!again.to_string().contains(&prod_secret));
        assert_eq!(again["data"]["credentials"].as_array().unwrap().len(), 2);
        let list = app.get(&format!("/api/v1/merchants/{m}/apps"), &owner, StatusCode::OK).await;
        assert!(!list.to_string().contains(&prod_secret));
        let store = portico_store::Store::open(&app.database_url, 1).await.unwrap();
        let mut conn = store.read().await.unwrap();
        let rows = sqlx::query("SELECT secret_sealed FROM app_credentials").fetch_all(&mut *conn).await.unwrap();
        for r in rows {
            let sealed: String = r.get(0);
            assert!(sealed.starts_with("v1.") && !sealed.contains("sk_"));
        }

        // The credentials work, for the right environment.
        let prod_key = production["app_key"].as_str().unwrap();
        let id = app.platform.authenticate_app(prod_key, &prod_secret).await.unwrap();
        assert_eq!(id.merchant_id, m);
        assert_eq!(id.environment, portico_console::apps::Environment::Production);
        assert!(app.platform.authenticate_app(prod_key, sandbox["app_secret"].as_str().unwrap()).await.is_err());
    }
}

engine_test! {
    async fn rotation_keeps_the_old_secret_for_the_grace_period(app: &TestApp) {
        let (m, owner) = app.active_merchant("owner@shop.cn").await;
        let created = app.create_app(&m, &owner).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        let old = created["secrets"][1]["app_secret"].as_str().unwrap().to_string();
        let key = created["secrets"][1]["app_key"].as_str().unwrap().to_string();
        assert_eq!(created["secrets"][1]["environment"], "production");

        let v = app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/credentials/production/rotate"), Some(&owner), json!({}), StatusCode::OK).await;
        let new = v["data"]["app_secret"].as_str().unwrap().to_string();
        assert_ne!(new, old);
        assert_eq!(v["data"]["app_key"], key.as_str(), "the key stays, the secret changes");
        assert!(v["data"]["previous_secret_expires_at"].is_string());
        assert!(app.platform.authenticate_app(&key, &new).await.is_ok());
        assert!(app.platform.authenticate_app(&key, &old).await.is_ok(), "old secret works during the grace period");
        let shown = app.get(&format!("/api/v1/merchants/{m}/apps/{app_id}"), &owner, StatusCode::OK).await;
        assert!(shown["data"]["credentials"][1]["previous_secret_expires_at"].is_string());

        // A rotation without grace ends the previous secret at once.
        let v = app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/credentials/production/rotate"), Some(&owner), json!({ "grace_seconds": 0 }), StatusCode::OK).await;
        let newest = v["data"]["app_secret"].as_str().unwrap().to_string();
        assert!(app.platform.authenticate_app(&key, &newest).await.is_ok());
        assert!(app.platform.authenticate_app(&key, &new).await.is_err());
        assert!(app.platform.authenticate_app(&key, &old).await.is_err());

        let v = app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/credentials/staging/rotate"), Some(&owner), json!({}), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "environment");
        let v = app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/credentials/sandbox/rotate"), Some(&owner), json!({ "grace_seconds": 99999999 }), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "grace_seconds");
        // Rotation is audited, without the secret.
        let log = app.get(&format!("/api/v1/merchants/{m}/audit"), &owner, StatusCode::OK).await;
        assert!(log["data"]["items"].as_array().unwrap().iter().any(|e| e["action"] == "app.secret_rotated"));
        assert!(!log.to_string().contains(&newest));
    }
}

engine_test! {
    async fn disabled_apps_and_suspended_merchants_stop_working(app: &TestApp) {
        let admin = app.admin().await;
        let (m, owner) = app.active_merchant("owner@shop.cn").await;
        let created = app.create_app(&m, &owner).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        let key = created["secrets"][0]["app_key"].as_str().unwrap().to_string();
        let secret = created["secrets"][0]["app_secret"].as_str().unwrap().to_string();
        assert!(app.platform.authenticate_app(&key, &secret).await.is_ok());

        let v = app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/disable"), Some(&owner), json!({}), StatusCode::OK).await;
        assert_eq!(v["data"]["status"], "disabled");
        assert!(app.platform.authenticate_app(&key, &secret).await.is_err());
        app.post(&format!("/api/v1/merchants/{m}/apps/{app_id}/enable"), Some(&owner), json!({}), StatusCode::OK).await;
        assert!(app.platform.authenticate_app(&key, &secret).await.is_ok());

        app.post(&format!("/api/v1/merchants/{m}/suspend"), Some(&admin), json!({ "reason": "unpaid fees" }), StatusCode::OK).await;
        assert!(matches!(app.platform.authenticate_app(&key, &secret).await, Err(portico_core::Error::MerchantNotActive)));
        // A suspended merchant cannot create apps either.
        let v = app.post(&format!("/api/v1/merchants/{m}/apps"), Some(&owner), json!({ "name": "Another", "integration_mode": "api" }), StatusCode::CONFLICT).await;
        assert_eq!(v["code"], 30004);
        app.post(&format!("/api/v1/merchants/{m}/reactivate"), Some(&admin), json!({}), StatusCode::OK).await;
        assert!(app.platform.authenticate_app(&key, &secret).await.is_ok());
    }
}

engine_test! {
    async fn only_active_merchants_create_apps_and_patches_validate(app: &TestApp) {
        let (draft, draft_owner) = app.sign_up("draft@shop.cn").await;
        let v = app.post(&format!("/api/v1/merchants/{draft}/apps"), Some(&draft_owner), json!({ "name": "X", "integration_mode": "api" }), StatusCode::CONFLICT).await;
        assert_eq!(v["code"], 30004);

        let (m, owner) = app.active_merchant("owner@shop.cn").await;
        let created = app.create_app(&m, &owner).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        let path = format!("/api/v1/merchants/{m}/apps/{app_id}");
        let v = app.call(Method::PATCH, &path, Some(&owner), Some(json!({ "callback_url": "http://127.0.0.1:9000/cb", "ip_allowlist": ["10.0.0.0/8"] })), StatusCode::OK).await;
        assert_eq!(v["data"]["callback_url"], "http://127.0.0.1:9000/cb");
        assert_eq!(v["data"]["name"], "Checkout", "absent fields stay");
        let v = app.call(Method::PATCH, &path, Some(&owner), Some(json!({ "callback_url": null })), StatusCode::OK).await;
        assert!(v["data"]["callback_url"].is_null(), "null clears");
        assert_eq!(v["data"]["ip_allowlist"], json!(["10.0.0.0/8"]));
        let v = app.call(Method::PATCH, &path, Some(&owner), Some(json!({ "rsa_public_key": rsa_public_key_pem(1024) })), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "rsa_public_key");
        assert!(v["msg"].as_str().unwrap().contains("2048"));
        let v = app.call(Method::PATCH, &path, Some(&owner), Some(json!({ "rsa_public_key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----" })), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "rsa_public_key");
        // A bare base64 DER key (as Alipay shows them) is accepted and stored as PEM.
        let pem = rsa_public_key_pem(2048);
        let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let v = app.call(Method::PATCH, &path, Some(&owner), Some(json!({ "rsa_public_key": bare })), StatusCode::OK).await;
        assert_eq!(v["data"]["rsa_public_key"], pem.as_str());
    }
}

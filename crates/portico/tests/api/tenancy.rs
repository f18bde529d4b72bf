//! A merchant's members see and change only their own merchant's objects. This test
//! walks every route of the OpenAPI document that names a merchant or an app, with
//! merchant A's token and merchant B's ids, and checks that each is refused and that B's
//! objects are unchanged afterwards.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};



engine_test! {
    async fn merchant_a_cannot_reach_merchant_b_through_any_route(app: &TestApp) {
        let (a, a_owner) = app.active_merchant("a@shop.cn").await;
        let (b, b_owner) = app.active_merchant("b@shop.cn").await;
        let b_app = app.create_app(&b, &b_owner).await;
        let b_app_id = b_app["app"]["id"].as_str().unwrap().to_string();
        let b_secret = b_app["secrets"][1]["app_secret"].as_str().unwrap().to_string();
        let b_key = b_app["secrets"][1]["app_key"].as_str().unwrap().to_string();
        let a_app = app.create_app(&a, &a_owner).await;
        let a_app_id = a_app["app"]["id"].as_str().unwrap().to_string();
        let before = app.get(&format!("/api/v1/merchants/{b}/apps/{b_app_id}"), &b_owner, StatusCode::OK).await;
        let b_before = app.get(&format!("/api/v1/merchants/{b}"), &b_owner, StatusCode::OK).await;

        let doc: Value = app.client.get(format!("{}/openapi.json", app.console)).send().await.unwrap().json().await.unwrap();
        let mut probed = 0;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            if !path.contains("{merchant_id}") {
                continue;
            }
            // B's merchant with B's app, and B's merchant with A's own app id: both refused.
            for app_id in [&b_app_id, &a_app_id] {
                let concrete = path.replace("{merchant_id}", &b).replace("{app_id}", app_id).replace("{environment}", "production");
                for method in ops.as_object().unwrap().keys() {
                    let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                    let body = json!({
                        "name": "pwned", "integration_mode": "api", "reason": "x", "internal_user_id": "x",
                        "email": "evil@a.cn", "password": "evil password 1", "role": "owner",
                        "company_name": "x", "licence_number": "12345", "contact_name": "x", "contact_phone": "12345", "business_description": "x",
                        "group": "x", "topic": "x", "since": "2020-01-01T00:00:00Z",
                    });
                    let res = app.client.request(m.clone(), format!("{}{concrete}", app.console)).bearer_auth(&a_owner).json(&body).send().await.unwrap();
                    let status = res.status();
                    let v: Value = res.json().await.unwrap();
                    assert!(status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN, "{method} {concrete} with A's token answered {status}: {v}");
                    assert!(!v.to_string().contains(&b_key), "{method} {concrete} leaked B's app key");
                    probed += 1;
                }
            }
        }
        assert!(probed >= 20, "probed {probed} route/method pairs");

        // A's own app is not reachable under B's merchant id, and B's app not under A's.
        app.get(&format!("/api/v1/merchants/{a}/apps/{b_app_id}"), &a_owner, StatusCode::NOT_FOUND).await;
        app.post(&format!("/api/v1/merchants/{a}/apps/{b_app_id}/credentials/production/rotate"), Some(&a_owner), json!({}), StatusCode::NOT_FOUND).await;
        app.post(&format!("/api/v1/merchants/{a}/apps/{b_app_id}/disable"), Some(&a_owner), json!({}), StatusCode::NOT_FOUND).await;
        // Listing merchants shows A only its own.
        let list = app.get("/api/v1/merchants", &a_owner, StatusCode::OK).await;
        let ids: Vec<&str> = list["data"]["items"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![a.as_str()]);

        // B is exactly as it was, and its secret still works.
        let after = app.get(&format!("/api/v1/merchants/{b}/apps/{b_app_id}"), &b_owner, StatusCode::OK).await;
        assert_eq!(after["data"], before["data"]);
        let b_after = app.get(&format!("/api/v1/merchants/{b}"), &b_owner, StatusCode::OK).await;
        assert_eq!(b_after["data"], b_before["data"]);
        assert!(app.platform.authenticate_app(&b_key, &b_secret).await.is_ok());
        let members = app.get(&format!("/api/v1/merchants/{b}/members"), &b_owner, StatusCode::OK).await;
        assert_eq!(members["data"]["items"].as_array().unwrap().len(), 1);
    }
}

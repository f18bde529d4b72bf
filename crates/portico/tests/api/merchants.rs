//! Merchant onboarding: documents, review, the state machine, masking, audit, members.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;

use crate::helpers::{documents, PASSWORD};

engine_test! {
    async fn onboarding_goes_through_review_with_an_audit_trail(app: &TestApp) {
        let admin = app.admin().await;
        let (id, owner) = app.sign_up("owner@shop.cn").await;
        let v = app.get(&format!("/api/v1/merchants/{id}"), &owner, StatusCode::OK).await;
        assert_eq!(v["data"]["state"], "draft");

        // Nothing to review yet.
        let v = app.post(&format!("/api/v1/merchants/{id}/submit"), Some(&owner), json!({}), StatusCode::CONFLICT).await;
        assert_eq!(v["code"], 30003);
        app.call(Method::PUT, &format!("/api/v1/merchants/{id}/documents"), Some(&owner), Some(documents()), StatusCode::OK).await;
        let v = app.post(&format!("/api/v1/merchants/{id}/submit"), Some(&owner), json!({}), StatusCode::OK).await;
        assert_eq!(v["data"]["state"], "pending_review");
        assert!(v["data"]["submitted_at"].is_string());
        // Documents are frozen while under review.
        app.call(Method::PUT, &format!("/api/v1/merchants/{id}/documents"), Some(&owner), Some(documents()), StatusCode::CONFLICT).await;

        // The review queue shows it; a rejection needs a reason, which the merchant reads.
        let queue = app.get("/api/v1/merchants?state=pending_review", &admin, StatusCode::OK).await;
        assert!(queue["data"]["items"].as_array().unwrap().iter().any(|m| m["id"] == id));
        let v = app.post(&format!("/api/v1/merchants/{id}/reject"), Some(&admin), json!({}), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "reason");
        app.post(&format!("/api/v1/merchants/{id}/reject"), Some(&admin), json!({ "reason": "licence photo unreadable" }), StatusCode::OK).await;
        let v = app.get(&format!("/api/v1/merchants/{id}"), &owner, StatusCode::OK).await;
        assert_eq!(v["data"]["state"], "rejected");
        assert_eq!(v["data"]["rejection_reason"], "licence photo unreadable");

        // Edit and resubmit, then approval.
        let mut docs = documents();
        docs["company_name"] = json!("Hangzhou Example Trading Co., Ltd. (renamed)");
        app.call(Method::PUT, &format!("/api/v1/merchants/{id}/documents"), Some(&owner), Some(docs), StatusCode::OK).await;
        app.post(&format!("/api/v1/merchants/{id}/submit"), Some(&owner), json!({}), StatusCode::OK).await;
        let v = app.post(&format!("/api/v1/merchants/{id}/approve"), Some(&admin), json!({}), StatusCode::OK).await;
        assert_eq!(v["data"]["state"], "active");
        assert!(v["data"]["rejection_reason"].is_null());

        // Suspension needs a reason; reactivation brings it back; wrong moves are 409.
        app.post(&format!("/api/v1/merchants/{id}/approve"), Some(&admin), json!({}), StatusCode::CONFLICT).await;
        app.post(&format!("/api/v1/merchants/{id}/suspend"), Some(&admin), json!({ "reason": "chargeback fraud" }), StatusCode::OK).await;
        app.post(&format!("/api/v1/merchants/{id}/suspend"), Some(&admin), json!({ "reason": "again" }), StatusCode::CONFLICT).await;
        let v = app.post(&format!("/api/v1/merchants/{id}/reactivate"), Some(&admin), json!({ "reason": "cleared" }), StatusCode::OK).await;
        assert_eq!(v["data"]["state"], "active");

        // Every transition is audited with actor and reason.
        let log = app.get(&format!("/api/v1/merchants/{id}/audit"), &admin, StatusCode::OK).await;
        let entries = log["data"]["items"].as_array().unwrap();
        let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
        for a in ["merchant.signed_up", "merchant.documents_updated", "merchant.submitted", "merchant.rejected", "merchant.approved", "merchant.suspended", "merchant.reactivated"] {
            assert!(actions.contains(&a), "{a} in {actions:?}");
        }
        let rejected = entries.iter().find(|e| e["action"] == "merchant.rejected").unwrap();
        assert_eq!(rejected["reason"], "licence photo unreadable");
        assert_eq!(rejected["actor_kind"], "operator");
        assert_eq!(rejected["detail"]["from"], "pending_review");
        assert_eq!(rejected["detail"]["to"], "rejected");
        assert_eq!(actions[0], "merchant.reactivated", "newest first");
        // The owner reads its own log too.
        app.get(&format!("/api/v1/merchants/{id}/audit"), &owner, StatusCode::OK).await;
    }
}

engine_test! {
    async fn sensitive_fields_are_encrypted_and_masked(app: &TestApp) {
        let admin = app.admin().await;
        let (id, owner) = app.active_merchant("owner@shop.cn").await;
        app.post("/api/v1/operators", Some(&admin), json!({ "email": "pm@portico.test", "password": PASSWORD, "role": "product_manager" }), StatusCode::CREATED).await;
        app.post("/api/v1/operators", Some(&admin), json!({ "email": "bm@portico.test", "password": PASSWORD, "role": "business_manager" }), StatusCode::CREATED).await;
        let pm = app.sign_in("pm@portico.test", PASSWORD).await;
        let bm = app.sign_in("bm@portico.test", PASSWORD).await;
        let dev_email = "dev@shop.cn";
        app.post(&format!("/api/v1/merchants/{id}/members"), Some(&owner), json!({ "email": dev_email, "password": PASSWORD, "role": "developer" }), StatusCode::CREATED).await;
        let dev = app.sign_in(dev_email, PASSWORD).await;

        for (who, token, masked) in [("owner", &owner, false), ("developer", &dev, false), ("business manager", &bm, false), ("super admin", &admin, false), ("product manager", &pm, true)] {
            let v = app.get(&format!("/api/v1/merchants/{id}"), token, StatusCode::OK).await;
            let d = &v["data"];
            assert_eq!(d["sensitive_masked"], masked, "{who}");
            if masked {
                assert_eq!(d["licence_number"], "**************XX1Q", "{who}");
                assert!(d["contact_phone"].as_str().unwrap().starts_with("*******"), "{who}");
                assert!(d["contact_phone"].as_str().unwrap().ends_with("8000"), "{who}");
            } else {
                assert_eq!(d["licence_number"], "91330100MA27XXXX1Q", "{who}");
                assert_eq!(d["contact_phone"], "+86 138 0013 8000", "{who}");
            }
        }

        // At rest the values are ciphertext.
        let store = portico_store::Store::open(&app.database_url, 1).await.unwrap();
        let mut conn = store.read().await.unwrap();
        let row = sqlx::query("SELECT licence_number_sealed, contact_phone_sealed FROM merchants WHERE id = $1").bind(&id).fetch_one(&mut *conn).await.unwrap();
        let licence: String = row.get(0);
        let phone: String = row.get(1);
        assert!(licence.starts_with("v1.") && !licence.contains("91330100"));
        assert!(phone.starts_with("v1.") && !phone.contains("138"));
    }
}

engine_test! {
    async fn internal_user_binding_and_members(app: &TestApp) {
        let admin = app.admin().await;
        let (id, owner) = app.active_merchant("owner@shop.cn").await;
        let v = app.call(Method::PUT, &format!("/api/v1/merchants/{id}/internal-user"), Some(&owner), Some(json!({ "internal_user_id": "u-1001" })), StatusCode::FORBIDDEN).await;
        assert_eq!(v["code"], 20004);
        let v = app.call(Method::PUT, &format!("/api/v1/merchants/{id}/internal-user"), Some(&admin), Some(json!({ "internal_user_id": "u-1001" })), StatusCode::OK).await;
        assert_eq!(v["data"]["internal_user_id"], "u-1001");
        let v = app.call(Method::PUT, &format!("/api/v1/merchants/{id}/internal-user"), Some(&admin), Some(json!({ "internal_user_id": "has space" })), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "internal_user_id");
        let v = app.call(Method::PUT, &format!("/api/v1/merchants/{id}/internal-user"), Some(&admin), Some(json!({ "internal_user_id": null })), StatusCode::OK).await;
        assert!(v["data"]["internal_user_id"].is_null());

        // Members: the owner adds a developer, who signs in to the same merchant but may
        // not add members or edit documents.
        app.post(&format!("/api/v1/merchants/{id}/members"), Some(&owner), json!({ "email": "dev@shop.cn", "password": PASSWORD, "role": "developer", "display_name": "Han Meimei" }), StatusCode::CREATED).await;
        let dev = app.sign_in("dev@shop.cn", PASSWORD).await;
        let me = app.get("/api/v1/auth/me", &dev, StatusCode::OK).await;
        assert_eq!(me["data"]["merchant_id"], id.as_str());
        assert_eq!(me["data"]["role"], "developer");
        app.post(&format!("/api/v1/merchants/{id}/members"), Some(&dev), json!({ "email": "x@shop.cn", "password": PASSWORD, "role": "developer" }), StatusCode::FORBIDDEN).await;
        let members = app.get(&format!("/api/v1/merchants/{id}/members"), &dev, StatusCode::OK).await;
        assert_eq!(members["data"]["items"].as_array().unwrap().len(), 2);
        // A duplicate email is refused, naming the field.
        let v = app.post(&format!("/api/v1/merchants/{id}/members"), Some(&owner), json!({ "email": "DEV@shop.cn", "password": PASSWORD, "role": "developer" }), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "email");
    }
}

engine_test! {
    async fn lists_paginate(app: &TestApp) {
        let admin = app.admin().await;
        for i in 0..5 {
            app.sign_up(&format!("m{i}@shop.cn")).await;
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/merchants?limit=2&cursor={c}"),
                None => "/api/v1/merchants?limit=2".to_string(),
            };
            let v = app.get(&path, &admin, StatusCode::OK).await;
            let items = v["data"]["items"].as_array().unwrap();
            assert!(items.len() <= 2);
            seen.extend(items.iter().map(|m| m["id"].as_str().unwrap().to_string()));
            match v["data"]["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 5);
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, seen, "in order, no repeats");
        let v = app.get("/api/v1/merchants?limit=0", &admin, StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "limit");
        let v = app.get("/api/v1/merchants?state=sleeping", &admin, StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "state");
    }
}

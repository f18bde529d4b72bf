//! Operator and member sign-in: tokens, cookies, refresh rotation, lockout, roles.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD};

engine_test! {
    async fn super_admin_signs_in_and_refreshes_with_rotation(app: &TestApp) {
        let v = app.post("/api/v1/auth/token", None, json!({ "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD }), StatusCode::OK).await;
        let d = &v["data"];
        assert_eq!(d["token_type"], "Bearer");
        assert_eq!(d["expires_in"], 1800);
        assert_eq!(d["refresh_expires_in"], 604800);
        assert_eq!(d["account"]["role"], "super_admin");
        let access = d["access_token"].as_str().unwrap();
        let refresh = d["refresh_token"].as_str().unwrap().to_string();
        assert!(access.starts_with("pt_at_") && refresh.starts_with("pt_rt_"));
        let me = app.get("/api/v1/auth/me", access, StatusCode::OK).await;
        assert_eq!(me["data"]["email"], ADMIN_EMAIL);

        let v = app.post("/api/v1/auth/refresh", None, json!({ "refresh_token": refresh }), StatusCode::OK).await;
        let new_access = v["data"]["access_token"].as_str().unwrap().to_string();
        app.get("/api/v1/auth/me", &new_access, StatusCode::OK).await;
        // The old refresh token is spent; presenting it again ends the whole sign-in.
        let v = app.post("/api/v1/auth/refresh", None, json!({ "refresh_token": refresh }), StatusCode::UNAUTHORIZED).await;
        assert_eq!(v["code"], 20001);
        app.get("/api/v1/auth/me", &new_access, StatusCode::UNAUTHORIZED).await;
    }
}

engine_test! {
    async fn sign_out_ends_the_sign_in(app: &TestApp) {
        let t = app.admin().await;
        app.post("/api/v1/auth/sign-out", Some(&t), json!({}), StatusCode::OK).await;
        app.get("/api/v1/auth/me", &t, StatusCode::UNAUTHORIZED).await;
        let v = app.get("/api/v1/auth/me", "pt_at_forged", StatusCode::UNAUTHORIZED).await;
        assert_eq!(v["code"], 20001);
        let v = app.call(Method::GET, "/api/v1/auth/me", None, None, StatusCode::UNAUTHORIZED).await;
        assert_eq!(v["code"], 20001);
    }
}

engine_test! {
    async fn repeated_failures_lock_the_account(app: &TestApp) {
        for _ in 0..4 {
            let v = app.post("/api/v1/auth/token", None, json!({ "email": ADMIN_EMAIL, "password": "wrong password" }), StatusCode::UNAUTHORIZED).await;
            assert_eq!(v["code"], 20002);
        }
        let v = app.post("/api/v1/auth/token", None, json!({ "email": ADMIN_EMAIL, "password": "wrong password" }), StatusCode::LOCKED).await;
        assert_eq!(v["code"], 20003);
        assert!(v["data"]["retry_after_secs"].as_u64().unwrap() > 0);
        // Locked means locked: the right password does not get in either.
        let v = app.post("/api/v1/auth/token", None, json!({ "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD }), StatusCode::LOCKED).await;
        assert_eq!(v["code"], 20003);
        // Unknown emails fail exactly like wrong passwords.
        let v = app.post("/api/v1/auth/token", None, json!({ "email": "nobody@nowhere.cn", "password": "whatever pw" }), StatusCode::UNAUTHORIZED).await;
        assert_eq!(v["code"], 20002);
    }
}

engine_test! {
    async fn password_change_ends_older_tokens(app: &TestApp) {
        let (_, owner) = app.sign_up("owner@shop.cn").await;
        let other_session = app.sign_in("owner@shop.cn", PASSWORD).await;
        let v = app
            .post("/api/v1/auth/password", Some(&owner), json!({ "current_password": "not it at all", "new_password": "a brand new password" }), StatusCode::BAD_REQUEST)
            .await;
        assert_eq!(v["data"]["field"], "current_password");
        app.post("/api/v1/auth/password", Some(&owner), json!({ "current_password": PASSWORD, "new_password": "a brand new password" }), StatusCode::OK).await;
        app.get("/api/v1/auth/me", &owner, StatusCode::UNAUTHORIZED).await;
        app.get("/api/v1/auth/me", &other_session, StatusCode::UNAUTHORIZED).await;
        app.post("/api/v1/auth/token", None, json!({ "email": "owner@shop.cn", "password": PASSWORD }), StatusCode::UNAUTHORIZED).await;
        app.sign_in("owner@shop.cn", "a brand new password").await;
    }
}

engine_test! {
    async fn roles_decide_what_operators_may_do(app: &TestApp) {
        let admin = app.admin().await;
        for (email, role) in [("bm@portico.test", "business_manager"), ("pm@portico.test", "product_manager")] {
            let v = app.post("/api/v1/operators", Some(&admin), json!({ "email": email, "password": PASSWORD, "role": role }), StatusCode::CREATED).await;
            assert_eq!(v["data"]["role"], role);
        }
        let bm = app.sign_in("bm@portico.test", PASSWORD).await;
        let pm = app.sign_in("pm@portico.test", PASSWORD).await;
        let (id, owner) = app.sign_up("owner@shop.cn").await;
        app.call(Method::PUT, &format!("/api/v1/merchants/{id}/documents"), Some(&owner), Some(crate::helpers::documents()), StatusCode::OK).await;
        app.post(&format!("/api/v1/merchants/{id}/submit"), Some(&owner), json!({}), StatusCode::OK).await;

        // A product manager may not review; the refusal is a 403 envelope.
        let v = app.post(&format!("/api/v1/merchants/{id}/approve"), Some(&pm), json!({}), StatusCode::FORBIDDEN).await;
        assert_eq!(v["code"], 20004);
        // Nor may a merchant approve itself.
        app.post(&format!("/api/v1/merchants/{id}/approve"), Some(&owner), json!({}), StatusCode::FORBIDDEN).await;
        // Only super admins manage operators.
        app.post("/api/v1/operators", Some(&bm), json!({ "email": "x@portico.test", "password": PASSWORD, "role": "super_admin" }), StatusCode::FORBIDDEN).await;
        app.get("/api/v1/operators", &pm, StatusCode::FORBIDDEN).await;
        // A business manager reviews.
        let v = app.post(&format!("/api/v1/merchants/{id}/approve"), Some(&bm), json!({}), StatusCode::OK).await;
        assert_eq!(v["data"]["state"], "active");
        // Operators cannot be created with member roles, nor members with operator roles.
        let v = app.post("/api/v1/operators", Some(&admin), json!({ "email": "y@portico.test", "password": PASSWORD, "role": "owner" }), StatusCode::BAD_REQUEST).await;
        assert_eq!(v["data"]["field"], "role");
        let v = app
            .post(&format!("/api/v1/merchants/{id}/members"), Some(&owner), json!({ "email": "z@shop.cn", "password": PASSWORD, "role": "super_admin" }), StatusCode::BAD_REQUEST)
            .await;
        assert_eq!(v["data"]["field"], "role");
    }
}

engine_test! {
    async fn browser_sessions_use_cookies_with_csrf_protection(app: &TestApp) {
        let jar = reqwest::Client::builder().cookie_store(true).build().unwrap();
        let res = jar
            .post(format!("{}/api/v1/session", app.console))
            .json(&json!({ "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let cookies: Vec<String> = res.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
        let session = cookies.iter().find(|c| c.starts_with("portico_session=")).expect("session cookie");
        assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"), "{session}");
        let csrf = cookies.iter().find(|c| c.starts_with("portico_csrf=")).unwrap();
        let csrf_value = csrf.split(';').next().unwrap().trim_start_matches("portico_csrf=").to_string();

        let me: Value = jar.get(format!("{}/api/v1/auth/me", app.console)).send().await.unwrap().json().await.unwrap();
        assert_eq!(me["data"]["email"], ADMIN_EMAIL);
        // A change without the CSRF header is refused...
        let body = json!({ "email": "pm2@portico.test", "password": PASSWORD, "role": "product_manager" });
        let res = jar.post(format!("{}/api/v1/operators", app.console)).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(res.json::<Value>().await.unwrap()["code"], 20006);
        // ...and accepted with it.
        let res = jar.post(format!("{}/api/v1/operators", app.console)).header("x-csrf-token", &csrf_value).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 201);
        // Signing out clears the session.
        let res = jar.delete(format!("{}/api/v1/session", app.console)).header("x-csrf-token", &csrf_value).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let res = jar.get(format!("{}/api/v1/auth/me", app.console)).send().await.unwrap();
        assert_eq!(res.status(), 401);
    }
}

//! The OAuth2 server driven by a client library nobody here wrote (the `oauth2` crate),
//! configured from our RFC 8414 metadata, through the real sign-in and consent pages.

use oauth2::{
    basic::BasicClient, AccessToken, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IntrospectionUrl, PkceCodeChallenge,
    RedirectUrl, RefreshToken, RevocationUrl, Scope, StandardRevocableToken, TokenIntrospectionResponse, TokenResponse, TokenUrl,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// An active merchant with an app granted `orders` and `profile`; returns
/// (merchant id, app id, [(environment, key, secret)]).
async fn oauth_app(app: &TestApp, client_type: &str) -> (String, String, Vec<(String, String, String)>) {
    let (m, owner) = app.active_merchant("owner@shop.cn").await;
    let v = app
        .post(
            &format!("/api/v1/merchants/{m}/apps"),
            Some(&owner),
            json!({ "name": "Hoodie Store", "integration_mode": "h5", "redirect_uris": [REDIRECT], "client_type": client_type }),
            StatusCode::CREATED,
        )
        .await;
    let app_id = v["data"]["app"]["id"].as_str().unwrap().to_string();
    let admin = app.admin().await;
    for scope in ["orders", "profile"] {
        app.call(Method::PUT, &format!("/api/v1/merchants/{m}/apps/{app_id}/scopes/{scope}"), Some(&admin), None, StatusCode::OK).await;
    }
    let creds = v["data"]["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["environment"].as_str().unwrap().to_string(), s["app_key"].as_str().unwrap().to_string(), s["app_secret"].as_str().unwrap().to_string()))
        .collect();
    (m, app_id, creds)
}

fn production(creds: &[(String, String, String)]) -> (String, String) {
    let c = creds.iter().find(|c| c.0 == "production").unwrap();
    (c.1.clone(), c.2.clone())
}

async fn metadata(app: &TestApp) -> Value {
    app.client.get(format!("{}/.well-known/oauth-authorization-server", app.public)).send().await.unwrap().json().await.unwrap()
}

type Client = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::basic::BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
    oauth2::EndpointSet,
    oauth2::EndpointSet,
>;

/// A client configured from the discovery document alone.
fn client_from(meta: &Value, id: &str, secret: Option<&str>) -> Client {
    let mut c = BasicClient::new(ClientId::new(id.to_string()));
    if let Some(s) = secret {
        c = c.set_client_secret(ClientSecret::new(s.to_string()));
    }
    c.set_auth_uri(AuthUrl::new(meta["authorization_endpoint"].as_str().unwrap().to_string()).unwrap())
        .set_token_uri(TokenUrl::new(meta["token_endpoint"].as_str().unwrap().to_string()).unwrap())
        .set_introspection_url(IntrospectionUrl::new(meta["introspection_endpoint"].as_str().unwrap().to_string()).unwrap())
        .set_revocation_url(RevocationUrl::new(meta["revocation_endpoint"].as_str().unwrap().to_string()).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.to_string()).unwrap())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A browser: keeps cookies, does not follow redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no hidden {name} in {html}")) + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&#39;", "'").replace("&amp;", "&")
}

fn query_of(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location).unwrap().query_pairs().into_owned().collect()
}

fn param(q: &[(String, String)], k: &str) -> Option<String> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// Drives the browser through sign-in and consent; returns the final redirect's query.
async fn consent_through_pages(app: &TestApp, browser: &reqwest::Client, authorize_url: &str, email: &str, password: &str, expect_app: &str) -> Vec<(String, String)> {
    let res = browser.get(authorize_url).send().await.unwrap();
    if res.status() == StatusCode::FOUND {
        return query_of(res.headers()["location"].to_str().unwrap());
    }
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    let mut page = res.text().await.unwrap();
    let request = hidden(&page, "request");
    if !page.contains("Allow access?") {
        // Not signed in yet: the sign-in page first.
        assert!(page.contains("Sign in") && page.contains(expect_app), "{page}");
        let res = browser
            .post(format!("{}/oauth2/authorize", app.public))
            .form(&[("request", request.as_str()), ("action", "sign_in"), ("email", email), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        page = res.text().await.unwrap();
    }
    assert!(page.contains("Allow access?"), "{page}");
    assert!(page.contains(expect_app) && page.contains("Hangzhou Example Trading"), "names the app and its merchant: {page}");
    assert!(page.contains("<code>orders</code>"), "names the scopes: {page}");
    let csrf = hidden(&page, "csrf");
    // Without the CSRF token the consent is refused.
    let res = browser.post(format!("{}/oauth2/authorize", app.public)).form(&[("request", request.as_str()), ("action", "allow"), ("csrf", "forged")]).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let res = browser.post(format!("{}/oauth2/authorize", app.public)).form(&[("request", request.as_str()), ("action", "allow"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    query_of(res.headers()["location"].to_str().unwrap())
}

async fn sign_up_user(app: &TestApp, email: &str) {
    let res = app.client.post(format!("{}/users/v1/sign-up", app.public)).json(&json!({ "email": email, "password": "user password 1" })).send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

async fn introspect_raw(app: &TestApp, token: &str) -> Value {
    app.client.post(format!("{}/oauth2/introspect", app.internal)).form(&[("token", token)]).send().await.unwrap().json().await.unwrap()
}

engine_test! {
    env [("PORTICO_OAUTH__REFRESH_GRACE_SECS", "0")]
    async fn every_flow_through_an_external_client(app: &TestApp) {
        let (_m, _app_id, creds) = oauth_app(app, "confidential").await;
        let (key, secret) = production(&creds);
        let meta = metadata(app).await;
        assert_eq!(meta["issuer"].as_str().unwrap(), app.public);
        assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
        let client = client_from(&meta, &key, Some(&secret));
        let http = http();

        // Client credentials, scoped to the app's grants.
        let t = client.exchange_client_credentials().add_scope(Scope::new("orders".into())).request_async(&http).await.unwrap();
        assert!(t.access_token().secret().starts_with("pat_"));
        assert!(t.refresh_token().is_none(), "no refresh token for client credentials");
        assert_eq!(t.expires_in().unwrap().as_secs(), 7200);
        let info = client.introspect(t.access_token()).request_async(&http).await.unwrap();
        assert!(info.active());
        assert_eq!(info.client_id().unwrap().as_str(), key);
        assert_eq!(info.scopes().unwrap().iter().map(|s| s.to_string()).collect::<Vec<_>>(), vec!["orders"]);
        let all = client.exchange_client_credentials().request_async(&http).await.unwrap();
        assert_eq!(all.scopes().unwrap().len(), 2, "no scope asked: every granted scope");

        // Sandbox credentials get sandbox tokens.
        let sandbox = creds.iter().find(|c| c.0 == "sandbox").unwrap();
        let sc = client_from(&meta, &sandbox.1, Some(&sandbox.2));
        let st = sc.exchange_client_credentials().request_async(&http).await.unwrap();
        assert_eq!(introspect_raw(app, st.access_token().secret()).await["environment"], "sandbox");

        // Authorization code with PKCE through the real pages.
        sign_up_user(app, "buyer@example.cn").await;
        let browser = browser();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = client.authorize_url(CsrfToken::new_random).add_scope(Scope::new("orders".into())).set_pkce_challenge(challenge).url();
        let q = consent_through_pages(app, &browser, url.as_str(), "buyer@example.cn", "user password 1", "Hoodie Store").await;
        assert_eq!(param(&q, "state").as_deref(), Some(state.secret().as_str()), "state round-trips");
        let code = param(&q, "code").expect("a code");
        let tokens = client.exchange_code(AuthorizationCode::new(code.clone())).set_pkce_verifier(verifier).request_async(&http).await.unwrap();
        assert_eq!(tokens.expires_in().unwrap().as_secs(), 1800, "user tokens live 30 minutes");
        let refresh = tokens.refresh_token().unwrap().clone();
        let info = introspect_raw(app, tokens.access_token().secret()).await;
        assert_eq!(info["active"], true);
        assert!(info["user_id"].as_str().unwrap().starts_with("usr_"));
        assert_eq!(info["scope"], "orders");

        // The code works once; replaying it revokes what it produced.
        let replay = client.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(oauth2::PkceCodeVerifier::new("x".repeat(43))).request_async(&http).await;
        assert!(replay.is_err());
        assert_eq!(introspect_raw(app, tokens.access_token().secret()).await["active"], false, "tokens from a replayed code are revoked");
        assert!(client.exchange_refresh_token(&refresh).request_async(&http).await.is_err());

        // Consent is remembered: a second authorization goes straight back with a code.
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, _) = client.authorize_url(CsrfToken::new_random).add_scope(Scope::new("orders".into())).set_pkce_challenge(challenge).url();
        let res = browser.get(url.as_str()).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        let q = query_of(res.headers()["location"].to_str().unwrap());
        let tokens = client.exchange_code(AuthorizationCode::new(param(&q, "code").unwrap())).set_pkce_verifier(verifier).request_async(&http).await.unwrap();

        // Refresh with rotation: the new pair works, the old refresh token is spent, and
        // presenting it again revokes the whole family.
        let old_refresh = tokens.refresh_token().unwrap().clone();
        let rotated = client.exchange_refresh_token(&old_refresh).request_async(&http).await.unwrap();
        assert_ne!(rotated.refresh_token().unwrap().secret(), old_refresh.secret());
        assert!(client.introspect(rotated.access_token()).request_async(&http).await.unwrap().active());
        assert!(client.exchange_refresh_token(&old_refresh).request_async(&http).await.is_err());
        assert_eq!(introspect_raw(app, rotated.access_token().secret()).await["active"], false, "reuse revoked the family");
        assert!(client.exchange_refresh_token(rotated.refresh_token().unwrap()).request_async(&http).await.is_err());

        // Revocation (RFC 7009). The oauth2 crate refuses to send a revocation request to
        // a non-https endpoint (`InsecureUrl`), so over this test's plain loopback HTTP the
        // request is sent as that crate would build it: client credentials in Basic, the
        // token and its type hint in the form.
        assert!(matches!(
            client.revoke_token(StandardRevocableToken::AccessToken(AccessToken::new("x".into()))),
            Err(oauth2::ConfigurationError::InsecureUrl(_))
        ));
        let revoke = |token: String, hint: &'static str| {
            let req = app.client.post(meta["revocation_endpoint"].as_str().unwrap()).basic_auth(&key, Some(&secret)).form(&[("token", token), ("token_type_hint", hint.to_string())]);
            async move { req.send().await.unwrap().status() }
        };
        let t = client.exchange_client_credentials().request_async(&http).await.unwrap();
        assert_eq!(revoke(t.access_token().secret().clone(), "access_token").await, 200);
        assert!(!client.introspect(t.access_token()).request_async(&http).await.unwrap().active());
        // Unknown tokens revoke "successfully" and reveal nothing.
        assert_eq!(revoke("pat_nope".into(), "access_token").await, 200);
        assert_eq!(introspect_raw(app, "garbage").await, json!({ "active": false }));
        // Revoking a refresh token ends the access tokens issued with it.
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, _) = client.authorize_url(CsrfToken::new_random).add_scope(Scope::new("orders".into())).set_pkce_challenge(challenge).url();
        let res = browser.get(url.as_str()).send().await.unwrap();
        let q = query_of(res.headers()["location"].to_str().unwrap());
        let pair = client.exchange_code(AuthorizationCode::new(param(&q, "code").unwrap())).set_pkce_verifier(verifier).request_async(&http).await.unwrap();
        assert_eq!(revoke(pair.refresh_token().unwrap().secret().clone(), "refresh_token").await, 200);
        assert_eq!(introspect_raw(app, pair.access_token().secret()).await["active"], false);
    }
}

engine_test! {
    async fn public_clients_must_use_pkce(app: &TestApp) {
        let (_m, _a, creds) = oauth_app(app, "public").await;
        let (key, _) = production(&creds);
        let meta = metadata(app).await;
        let client = client_from(&meta, &key, None).set_auth_type(oauth2::AuthType::RequestBody);
        sign_up_user(app, "buyer@example.cn").await;
        let browser = browser();
        // Without PKCE the request goes back with invalid_request.
        let (url, _) = client.authorize_url(CsrfToken::new_random).url();
        let res = browser.get(url.as_str()).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(param(&query_of(res.headers()["location"].to_str().unwrap()), "error").as_deref(), Some("invalid_request"));
        // The plain method is refused too.
        let res = browser.get(format!("{}&code_challenge={}&code_challenge_method=plain", url, "a".repeat(43))).send().await.unwrap();
        assert_eq!(param(&query_of(res.headers()["location"].to_str().unwrap()), "error").as_deref(), Some("invalid_request"));
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, _) = client.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge).url();
        let q = consent_through_pages(app, &browser, url.as_str(), "buyer@example.cn", "user password 1", "Hoodie Store").await;
        let http = http();
        let code = param(&q, "code").unwrap();
        // A wrong verifier fails; the right one succeeds, with no secret at all.
        let (_, wrong) = PkceCodeChallenge::new_random_sha256();
        assert!(client.exchange_code(AuthorizationCode::new(code.clone())).set_pkce_verifier(wrong).request_async(&http).await.is_err());
        // (A failed exchange spends the code, so a new authorization gets a new one.)
        let (challenge, verifier2) = PkceCodeChallenge::new_random_sha256();
        let (url, _) = client.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge).url();
        let res = browser.get(url.as_str()).send().await.unwrap();
        let code = param(&query_of(res.headers()["location"].to_str().unwrap()), "code").unwrap();
        let t = client.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(verifier2).request_async(&http).await.unwrap();
        assert!(t.refresh_token().is_some());
        drop(verifier);
        // Public clients may not use client_credentials.
        let res = app.client.post(format!("{}/oauth2/token", app.public)).form(&[("grant_type", "client_credentials"), ("client_id", key.as_str())]).send().await.unwrap();
        assert_eq!(res.status(), 400);
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "unauthorized_client");
    }
}

engine_test! {
    env [("PORTICO_OAUTH__FAILURE_LIMIT", "3")]
    async fn bad_requests_get_the_right_rfc_errors(app: &TestApp) {
        let (_m, _a, creds) = oauth_app(app, "confidential").await;
        let (key, secret) = production(&creds);
        let token_url = format!("{}/oauth2/token", app.public);
        let post = |form: Vec<(&'static str, String)>, basic: Option<(String, String)>| {
            let mut req = app.client.post(&token_url).form(&form);
            if let Some((u, p)) = basic {
                req = req.basic_auth(u, Some(p));
            }
            async move {
                let res = req.send().await.unwrap();
                let status = res.status();
                let www = res.headers().get("www-authenticate").is_some();
                let body: Value = res.json().await.unwrap();
                assert!(body["error"].is_string() && body["error_description"].is_string(), "RFC 6749 §5.2 shape: {body}");
                (status, body["error"].as_str().unwrap().to_string(), www)
            }
        };
        let cc = || vec![("grant_type", "client_credentials".to_string())];
        assert_eq!(post(vec![("grant_type", "password".into())], Some((key.clone(), secret.clone()))).await.1, "unsupported_grant_type");
        assert_eq!(post(vec![], Some((key.clone(), secret.clone()))).await.1, "invalid_request");
        let mut scoped = cc();
        scoped.push(("scope", "admin".into()));
        assert_eq!(post(scoped, Some((key.clone(), secret.clone()))).await.1, "invalid_scope");
        let (status, error, www) = post(cc(), Some((key.clone(), "sk_live_wrong".into()))).await;
        assert_eq!((status, error.as_str(), www), (StatusCode::UNAUTHORIZED, "invalid_client", true));
        let (status, error, _) = post(cc(), Some(("ak_live_unknown".into(), "x".into()))).await;
        assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "invalid_client"));
        // Malformed Authorization headers.
        let res = app.client.post(&token_url).header("authorization", "Basic %%%").form(&cc()).send().await.unwrap();
        assert_eq!(res.status(), 401);
        let res = app.client.post(&token_url).header("content-type", "application/json").body("{}").send().await.unwrap();
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_request");
        // Brute force: the third failure for this client blocks it, even with the right secret.
        let (status, error, _) = post(cc(), Some((key.clone(), "sk_live_wrong".into()))).await;
        assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "invalid_client"));
        let (status, _, _) = post(cc(), Some((key.clone(), secret.clone()))).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

        // Authorization requests that cannot be trusted get a page, never a redirect.
        let browser = browser();
        for q in [
            format!("response_type=code&client_id={key}&redirect_uri=https%3A%2F%2Fevil.example%2Fcb"),
            "response_type=code&client_id=ak_live_unknown".to_string(),
            format!("response_type=code&client_id={key}&client_id={key}"),
        ] {
            let res = browser.get(format!("{}/oauth2/authorize?{q}", app.public)).send().await.unwrap();
            assert_eq!(res.status(), 400, "{q}");
            assert!(res.headers().get("location").is_none());
        }
        // Others go back to the client with the error and the state.
        let res = browser.get(format!("{}/oauth2/authorize?response_type=token&client_id={key}&state=s1", app.public)).send().await.unwrap();
        let q = query_of(res.headers()["location"].to_str().unwrap());
        assert_eq!(param(&q, "error").as_deref(), Some("unsupported_response_type"));
        assert_eq!(param(&q, "state").as_deref(), Some("s1"));
        let res = browser.get(format!("{}/oauth2/authorize?response_type=code&client_id={key}&scope=admin", app.public)).send().await.unwrap();
        assert_eq!(param(&query_of(res.headers()["location"].to_str().unwrap()), "error").as_deref(), Some("invalid_scope"));
        // Escaping: a hostile state cannot inject markup into the page.
        let res = browser.get(format!("{}/oauth2/authorize?response_type=code&client_id={key}&state=%22%3E%3Cscript%3E", app.public)).send().await.unwrap();
        let page = res.text().await.unwrap();
        assert!(!page.contains("\"><script>"), "{page}");
    }
}

engine_test! {
    async fn users_list_and_revoke_authorizations_and_password_change_ends_tokens(app: &TestApp) {
        let (_m, app_id, creds) = oauth_app(app, "confidential").await;
        let (key, secret) = production(&creds);
        let meta = metadata(app).await;
        let client = client_from(&meta, &key, Some(&secret));
        sign_up_user(app, "buyer@example.cn").await;
        // A duplicate sign-up names the field.
        let res = app.client.post(format!("{}/users/v1/sign-up", app.public)).json(&json!({ "email": "BUYER@example.cn", "password": "user password 1" })).send().await.unwrap();
        assert_eq!(res.status(), 400);
        assert_eq!(res.json::<Value>().await.unwrap()["data"]["field"], "email");
        let browser = browser();
        let http = http();
        let get_tokens = || async {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            let (url, _) = client.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge).url();
            let q = consent_through_pages(app, &browser, url.as_str(), "buyer@example.cn", "user password 1", "Hoodie Store").await;
            client.exchange_code(AuthorizationCode::new(param(&q, "code").unwrap())).set_pkce_verifier(verifier).request_async(&http).await.unwrap()
        };
        let tokens = get_tokens().await;

        let session: Value = app.client.post(format!("{}/users/v1/sessions", app.public)).json(&json!({ "email": "buyer@example.cn", "password": "user password 1" })).send().await.unwrap().json().await.unwrap();
        let user_token = session["data"]["session_token"].as_str().unwrap().to_string();
        let list: Value = app.client.get(format!("{}/users/v1/authorizations", app.public)).bearer_auth(&user_token).send().await.unwrap().json().await.unwrap();
        let items = list["data"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["app_name"], "Hoodie Store");
        assert_eq!(items[0]["merchant_name"], "Hangzhou Example Trading Co., Ltd.");
        let res = app.client.delete(format!("{}/users/v1/authorizations/{app_id}", app.public)).bearer_auth(&user_token).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(introspect_raw(app, tokens.access_token().secret()).await["active"], false);
        assert!(client.exchange_refresh_token(tokens.refresh_token().unwrap()).request_async(&http).await.is_err());
        let list: Value = app.client.get(format!("{}/users/v1/authorizations", app.public)).bearer_auth(&user_token).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 0);

        // Password change ends every older token and session at once.
        let tokens = get_tokens().await;
        let res = app
            .client
            .post(format!("{}/users/v1/password", app.public))
            .bearer_auth(&user_token)
            .json(&json!({ "current_password": "user password 1", "new_password": "user password 2" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(introspect_raw(app, tokens.access_token().secret()).await["active"], false);
        let res = app.client.get(format!("{}/users/v1/me", app.public)).bearer_auth(&user_token).send().await.unwrap();
        assert_eq!(res.status(), 401);
        let _ = RefreshToken::new(String::new());
    }
}

engine_test! {
    async fn suspended_merchants_tokens_stop_working(app: &TestApp) {
        let (m, _a, creds) = oauth_app(app, "confidential").await;
        let (key, secret) = production(&creds);
        let meta = metadata(app).await;
        let client = client_from(&meta, &key, Some(&secret));
        let http = http();
        let t = client.exchange_client_credentials().request_async(&http).await.unwrap();
        assert!(client.introspect(t.access_token()).request_async(&http).await.unwrap().active());
        let admin = app.admin().await;
        app.post(&format!("/api/v1/merchants/{m}/suspend"), Some(&admin), json!({ "reason": "fraud" }), StatusCode::OK).await;
        assert!(!client.introspect(t.access_token()).request_async(&http).await.unwrap().active());
        assert!(client.exchange_client_credentials().request_async(&http).await.is_err());
    }
}

engine_test! {
    async fn revocation_reaches_every_instance(app: &TestApp) {
        // A second instance on the same database, as in cluster mode. The SQLite file is
        // shared between the two the same way PostgreSQL is.
        let peer = app.spawn_peer(&[]).await;
        let (_m, _a, creds) = oauth_app(app, "confidential").await;
        let (key, secret) = production(&creds);
        let token: Value = app
            .client
            .post(format!("{}/oauth2/token", app.public))
            .basic_auth(&key, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["access_token"].as_str().unwrap().to_string();
        // Both instances validate it, and so cache it.
        assert_eq!(introspect_raw(app, &token).await["active"], true);
        assert_eq!(introspect_raw(&peer, &token).await["active"], true);
        // Revoked through the peer...
        let res = peer.client.post(format!("{}/oauth2/revoke", peer.public)).basic_auth(&key, Some(&secret)).form(&[("token", token.as_str())]).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(introspect_raw(&peer, &token).await["active"], false, "at once on the instance that revoked it");
        // ...and the first instance's cache lets go of it too (it polls every 500 ms).
        let mut seen_inactive = false;
        for _ in 0..100 {
            if introspect_raw(app, &token).await["active"] == false {
                seen_inactive = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(seen_inactive, "the other instance never noticed the revocation");
        peer.stop().await;
    }
}

engine_test! {
    env [("PORTICO_OAUTH__ACCESS_TOKEN_FORMAT", "jwt")]
    async fn jwt_access_tokens_verify_with_the_published_keys(app: &TestApp) {
        use base64::Engine;
        use rsa::{pkcs1v15::VerifyingKey, signature::Verifier};
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (_m, app_id, creds) = oauth_app(app, "confidential").await;
        let (key, secret) = production(&creds);
        let meta = metadata(app).await;
        let jwks_uri = meta["jwks_uri"].as_str().expect("jwks_uri is published").to_string();
        let client = client_from(&meta, &key, Some(&secret));
        let t = client.exchange_client_credentials().add_scope(Scope::new("orders".into())).request_async(&http()).await.unwrap();
        let jwt = t.access_token().secret().clone();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header["typ"], "at+jwt", "RFC 9068 §2.1");
        assert_eq!(header["alg"], "RS256");
        for c in ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"] {
            assert!(!claims[c].is_null(), "RFC 9068 §2.2 requires {c}: {claims}");
        }
        assert_eq!(claims["client_id"], key.as_str());
        assert_eq!(claims["sub"], app_id.as_str());
        assert_eq!(claims["scope"], "orders");
        assert_eq!(claims["iss"].as_str().unwrap(), app.public);
        // Verify offline with the key from the JWKS, as a resource server would.
        let jwks: Value = app.client.get(&jwks_uri).send().await.unwrap().json().await.unwrap();
        let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]).expect("the signing key is published");
        let n = rsa::BigUint::from_bytes_be(&b64.decode(jwk["n"].as_str().unwrap()).unwrap());
        let e = rsa::BigUint::from_bytes_be(&b64.decode(jwk["e"].as_str().unwrap()).unwrap());
        let public = rsa::RsaPublicKey::new(n, e).unwrap();
        let signature = rsa::pkcs1v15::Signature::try_from(b64.decode(parts[2]).unwrap().as_slice()).unwrap();
        VerifyingKey::<sha2::Sha256>::new(public.clone()).verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature).expect("signature verifies");
        let tampered = format!("{}.{}", parts[0], b64.encode(claims.to_string().replace("orders", "admin")));
        assert!(VerifyingKey::<sha2::Sha256>::new(public).verify(tampered.as_bytes(), &signature).is_err());
        // JWTs introspect and revoke like opaque tokens.
        assert!(client.introspect(t.access_token()).request_async(&http()).await.unwrap().active());
        let res = app.client.post(meta["revocation_endpoint"].as_str().unwrap()).basic_auth(&key, Some(&secret)).form(&[("token", jwt.as_str())]).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(!client.introspect(t.access_token()).request_async(&http()).await.unwrap().active());
        // A second instance signs with the same key set.
        let peer = app.spawn_peer(&[("PORTICO_OAUTH__ACCESS_TOKEN_FORMAT", "jwt")]).await;
        let peer_jwks: Value = peer.client.get(format!("{}/.well-known/jwks.json", peer.public)).send().await.unwrap().json().await.unwrap();
        assert_eq!(peer_jwks, jwks);
        peer.stop().await;
    }
}

engine_test! {
    async fn opaque_mode_publishes_no_jwks(app: &TestApp) {
        let meta = metadata(app).await;
        assert!(meta.get("jwks_uri").is_none());
        let res = app.client.get(format!("{}/.well-known/jwks.json", app.public)).send().await.unwrap();
        assert_eq!(res.status(), 404);
    }
}

engine_test! {
    env [("PORTICO_OAUTH__APP_ACCESS_TOKEN_TTL_SECS", "1")]
    async fn expired_tokens_are_inactive(app: &TestApp) {
        let (_m, _a, creds) = oauth_app(app, "confidential").await;
        let (key, secret) = production(&creds);
        let client = client_from(&metadata(app).await, &key, Some(&secret));
        let t = client.exchange_client_credentials().request_async(&http()).await.unwrap();
        assert_eq!(t.expires_in().unwrap().as_secs(), 1);
        assert!(client.introspect(t.access_token()).request_async(&http()).await.unwrap().active());
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert!(!client.introspect(t.access_token()).request_async(&http()).await.unwrap().active(), "expired, even though it was cached");
    }
}

engine_test! {
    async fn end_user_sign_in_locks_after_repeated_failures(app: &TestApp) {
        sign_up_user(app, "buyer@example.cn").await;
        let attempt = |password: &'static str| {
            let req = app.client.post(format!("{}/users/v1/sessions", app.public)).json(&json!({ "email": "buyer@example.cn", "password": password }));
            async move {
                let res = req.send().await.unwrap();
                (res.status(), res.json::<Value>().await.unwrap()["code"].as_u64().unwrap_or(0))
            }
        };
        for _ in 0..4 {
            assert_eq!(attempt("wrong password").await, (StatusCode::UNAUTHORIZED, 20002));
        }
        assert_eq!(attempt("wrong password").await, (StatusCode::LOCKED, 20003), "the fifth failure locks");
        assert_eq!(attempt("user password 1").await, (StatusCode::LOCKED, 20003), "locked even with the right password");
        // Unknown emails fail exactly like wrong passwords.
        let res = app.client.post(format!("{}/users/v1/sessions", app.public)).json(&json!({ "email": "nobody@example.cn", "password": "whatever pw" })).send().await.unwrap();
        assert_eq!(res.status(), 401);
    }
}

//! The authorization endpoint (RFC 6749 §4.1.1) with its server-rendered sign-in and
//! consent pages. Requests whose client or redirect URI cannot be trusted get an error
//! page and are never redirected; every later error goes back to the client's
//! redirect URI with `error` and the original `state`.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{Html, IntoResponse, Response},
};
use portico_auth::token;
use portico_console::apps::ClientType;
use portico_core::{id::new_id, time::now_ms};
use portico_store::oauth::{self, CodeRecord, EndUserRecord};
use sha2::{Digest, Sha256};

use crate::{
    clients::{covers, resolve_scope, Client},
    flows::Form,
    html_escape,
    users::Credentials,
    OAuth,
};

pub const USER_COOKIE: &str = "portico_user";

/// A checked authorization request.
struct Checked {
    client: Client,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    code_challenge: Option<String>,
    /// The original query string, carried through the pages' forms.
    raw: String,
}

enum Refusal {
    /// Shown to the user; the client cannot be trusted with a redirect.
    Page(String),
    /// Sent back to the client.
    Redirect { redirect_uri: String, error: &'static str, description: String, state: Option<String> },
}

impl OAuth {
    /// `GET /oauth2/authorize`.
    pub(crate) async fn authorize_page(&self, raw_query: &str, session: Option<&str>) -> Response {
        let checked = match self.check(raw_query).await {
            Ok(c) => c,
            Err(r) => return refusal(r),
        };
        let user = match session {
            Some(s) => self.user_of_session(s).await.ok().flatten(),
            None => None,
        };
        match user {
            None => sign_in_page(&checked, None),
            Some(user) => self.consent_or_code(checked, &user, session.unwrap_or_default()).await,
        }
    }

    /// `POST /oauth2/authorize`: the pages' forms (sign in, allow, deny).
    pub(crate) async fn authorize_submit(&self, body: &[u8], session: Option<&str>, ip: &str) -> Response {
        let form = match Form::parse(body) {
            Ok(f) => f,
            Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.description),
        };
        let checked = match self.check(form.get("request").unwrap_or_default()).await {
            Ok(c) => c,
            Err(r) => return refusal(r),
        };
        match form.get("action") {
            Some("sign_in") => {
                let creds = Credentials { email: form.get("email").unwrap_or_default().to_string(), password: form.get("password").unwrap_or_default().to_string() };
                match self.sign_in_user(creds, ip).await {
                    Ok(s) => {
                        let user = match self.user_of_session(&s.session_token).await {
                            Ok(Some(u)) => u,
                            _ => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Please try again."),
                        };
                        let mut response = self.consent_or_code(checked, &user, &s.session_token).await;
                        let secure = if self.settings().secure_cookies { "; Secure" } else { "" };
                        let cookie = format!("{USER_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}", s.session_token, s.expires_in);
                        response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII"));
                        response
                    }
                    Err(portico_core::Error::AccountLocked { retry_after_secs }) => {
                        sign_in_page(&checked, Some(&format!("Too many failed attempts. Try again in {retry_after_secs} seconds.")))
                    }
                    Err(portico_core::Error::Unavailable(_)) => error_page(StatusCode::SERVICE_UNAVAILABLE, "The service is temporarily unavailable."),
                    Err(_) => sign_in_page(&checked, Some("Wrong email or password.")),
                }
            }
            Some(action @ ("allow" | "deny")) => {
                let Some(session) = session else { return sign_in_page(&checked, Some("Please sign in.")) };
                let Ok(Some(user)) = self.user_of_session(session).await else { return sign_in_page(&checked, Some("Please sign in again.")) };
                let expected = csrf_of(session);
                if !token::constant_time_eq(form.get("csrf").unwrap_or_default().as_bytes(), expected.as_bytes()) {
                    return error_page(StatusCode::FORBIDDEN, "This form has expired. Go back and try again.");
                }
                if action == "deny" {
                    return refusal(Refusal::Redirect {
                        redirect_uri: checked.redirect_uri,
                        error: "access_denied",
                        description: "the user denied the request".into(),
                        state: checked.state,
                    });
                }
                if let Err(e) = self.remember_consent(&user, &checked).await {
                    tracing::warn!(error = %e, "could not save consent");
                    return error_page(StatusCode::SERVICE_UNAVAILABLE, "The service is temporarily unavailable.");
                }
                self.code_redirect(&checked, &user).await
            }
            _ => error_page(StatusCode::BAD_REQUEST, "Unknown action."),
        }
    }

    async fn consent_or_code(&self, checked: Checked, user: &EndUserRecord, session: &str) -> Response {
        let remembered = {
            let conn = self.platform().store().read().await;
            match conn {
                Ok(mut c) => oauth::consent(&mut c, &user.id, &checked.client.app.id).await.ok().flatten(),
                Err(_) => None,
            }
        };
        if remembered.is_some_and(|have| covers(&have, &checked.scope)) {
            return self.code_redirect(&checked, user).await;
        }
        consent_page(&checked, user, &csrf_of(session))
    }

    async fn remember_consent(&self, user: &EndUserRecord, checked: &Checked) -> Result<(), portico_core::Error> {
        let mut tx = self.platform().store().begin().await?;
        let mut scopes: Vec<String> = oauth::consent(&mut tx, &user.id, &checked.client.app.id)
            .await?
            .map(|s| s.split(' ').filter(|x| !x.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        for s in checked.scope.split(' ').filter(|x| !x.is_empty()) {
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_string());
            }
        }
        scopes.sort();
        oauth::save_consent(&mut tx, &user.id, &checked.client.app.id, &scopes.join(" "), now_ms()).await?;
        portico_store::commit(tx).await
    }

    async fn code_redirect(&self, checked: &Checked, user: &EndUserRecord) -> Response {
        let code = token::generate("pac_");
        let now = now_ms();
        let record = CodeRecord {
            id: new_id("cod"),
            code_digest: token::digest(&code),
            app_id: checked.client.app.id.clone(),
            credential_id: checked.client.credential.id.clone(),
            user_id: user.id.clone(),
            redirect_uri: checked.redirect_uri.clone(),
            scope: checked.scope.clone(),
            code_challenge: checked.code_challenge.clone(),
            expires_at: now + self.settings().code_ttl.as_millis() as i64,
            used_at: None,
            created_at: now,
        };
        let saved = async {
            let mut tx = self.platform().store().begin().await?;
            oauth::insert_code(&mut tx, &record).await?;
            portico_store::commit(tx).await
        }
        .await;
        if saved.is_err() {
            return error_page(StatusCode::SERVICE_UNAVAILABLE, "The service is temporarily unavailable.");
        }
        let mut params = vec![("code", code)];
        if let Some(s) = &checked.state {
            params.push(("state", s.clone()));
        }
        redirect(&checked.redirect_uri, &params)
    }

    async fn check(&self, raw: &str) -> Result<Checked, Refusal> {
        let form = Form::parse(raw.as_bytes()).map_err(|e| Refusal::Page(e.description))?;
        let client_id = form.get("client_id").ok_or_else(|| Refusal::Page("The request names no client (client_id).".into()))?;
        let client = match self.client(client_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(Refusal::Page("The application asking for access is unknown or disabled.".into())),
            Err(_) => return Err(Refusal::Page("The service is temporarily unavailable.".into())),
        };
        // Redirect URIs match exactly; with exactly one registered it may be left out.
        let redirect_uri = match form.get("redirect_uri") {
            Some(u) if client.redirect_uris.iter().any(|r| r == u) => u.to_string(),
            Some(_) => return Err(Refusal::Page("The redirect URI is not registered for this application.".into())),
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => return Err(Refusal::Page("The request must name one of the application's redirect URIs.".into())),
        };
        let state = form.get("state").map(str::to_string);
        let back = |error: &'static str, description: &str| Refusal::Redirect { redirect_uri: redirect_uri.clone(), error, description: description.into(), state: state.clone() };
        if form.get("response_type") != Some("code") {
            return Err(back("unsupported_response_type", "only response_type=code is supported"));
        }
        let scope = resolve_scope(form.get("scope"), &client.grants).map_err(|e| back("invalid_scope", &e.description))?;
        let code_challenge = match (form.get("code_challenge"), form.get("code_challenge_method")) {
            (Some(c), Some("S256")) if c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => Some(c.to_string()),
            (Some(_), Some("S256")) => return Err(back("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)")),
            (Some(_), _) => return Err(back("invalid_request", "code_challenge_method must be S256")),
            (None, _) if client.client_type == ClientType::Public => return Err(back("invalid_request", "public clients must use PKCE (code_challenge, S256)")),
            (None, _) => None,
        };
        Ok(Checked { client, redirect_uri, scope, state, code_challenge, raw: raw.to_string() })
    }
}

fn csrf_of(session: &str) -> String {
    let digest = Sha256::digest(format!("portico-consent:{session}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Page(msg) => error_page(StatusCode::BAD_REQUEST, &msg),
        Refusal::Redirect { redirect_uri, error, description, state } => {
            let mut params = vec![("error", error.to_string()), ("error_description", description)];
            if let Some(s) = state {
                params.push(("state", s));
            }
            redirect(&redirect_uri, &params)
        }
    }
}

fn redirect(uri: &str, params: &[(&str, String)]) -> Response {
    let mut url = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(_) => return error_page(StatusCode::BAD_REQUEST, "The redirect URI is invalid."),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_str(url.as_str()).unwrap_or(HeaderValue::from_static("/")));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;background:#f6f7f9;margin:0}}main{{max-width:26rem;margin:3rem auto;background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:1.5rem}}
label{{display:block;margin:.6rem 0 .2rem}}input[type=email],input[type=password]{{width:100%;padding:.45rem;border:1px solid #bbb;border-radius:4px;box-sizing:border-box}}
button{{margin:1rem .5rem 0 0;padding:.45rem 1.1rem;border:0;border-radius:4px;background:#1d3557;color:#fff;cursor:pointer}}button.secondary{{background:#888}}
.error{{color:#b00020}}.muted{{color:#666}}ul{{padding-left:1.2rem}}.badge{{background:#f4a261;border-radius:3px;padding:0 .3rem;font-size:.8rem}}</style></head>
<body><main>{body}</main></body></html>"#,
        title = html_escape(title),
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error_page(status: StatusCode, message: &str) -> Response {
    page(status, "Authorization failed", &format!("<h1>Authorization failed</h1><p class=\"error\">{}</p>", html_escape(message)))
}

fn sign_in_page(c: &Checked, error: Option<&str>) -> Response {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", html_escape(e))).unwrap_or_default();
    let body = format!(
        r#"<h1>Sign in</h1><p class="muted"><strong>{app}</strong> by {merchant} wants to access your account.</p>{error}
<form method="post" action="/oauth2/authorize">
<input type="hidden" name="request" value="{raw}"><input type="hidden" name="action" value="sign_in">
<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form>"#,
        app = html_escape(&c.client.app.name),
        merchant = html_escape(&c.client.merchant_name),
        raw = html_escape(&c.raw),
    );
    page(if error.is_empty() { StatusCode::OK } else { StatusCode::UNAUTHORIZED }, "Sign in", &body)
}

fn consent_page(c: &Checked, user: &EndUserRecord, csrf: &str) -> Response {
    let scopes: String = if c.scope.is_empty() {
        "<li>Know that you use it (no other data)</li>".to_string()
    } else {
        c.scope.split(' ').map(|s| format!("<li><code>{}</code></li>", html_escape(s))).collect()
    };
    let sandbox = if c.client.credential.environment == "sandbox" { " <span class=\"badge\">sandbox</span>" } else { "" };
    let body = format!(
        r#"<h1>Allow access?</h1>
<p><strong id="app-name">{app}</strong>{sandbox}, an application of <strong id="merchant-name">{merchant}</strong>, asks to:</p><ul id="scopes">{scopes}</ul>
<p class="muted">Signed in as {email}. You can withdraw this at any time.</p>
<form method="post" action="/oauth2/authorize">
<input type="hidden" name="request" value="{raw}"><input type="hidden" name="csrf" value="{csrf}">
<button type="submit" name="action" value="allow">Allow</button><button type="submit" name="action" value="deny" class="secondary">Deny</button></form>"#,
        app = html_escape(&c.client.app.name),
        merchant = html_escape(&c.client.merchant_name),
        email = html_escape(&user.email),
        raw = html_escape(&c.raw),
    );
    page(StatusCode::OK, "Allow access", &body)
}

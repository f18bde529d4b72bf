//! HTTP routes: the OAuth2 endpoints and the end-user account API on the public
//! listener, token introspection on the internal listener.

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use portico_core::{
    http::{cookie, ApiError, ApiJson, ApiResult, Created, Success},
    Error,
};
use portico_store::oauth::EndUserRecord;
use serde_json::json;

use crate::{
    flows::Form,
    pages::USER_COOKIE,
    users::{AuthorizationOut, Credentials, PasswordChange, SessionOut, UserOut},
    OAuth, OAuthError,
};

/// Routes of the public listener.
pub fn public_router(oauth: OAuth) -> Router {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/oauth2/authorize", get(authorize_page).post(authorize_submit))
        .route("/oauth2/revoke", post(revoke))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/users/v1/sign-up", post(sign_up))
        .route("/users/v1/sessions", post(sign_in).delete(sign_out))
        .route("/users/v1/me", get(me))
        .route("/users/v1/password", post(change_password))
        .route("/users/v1/authorizations", get(authorizations))
        .route("/users/v1/authorizations/{app_id}", delete(revoke_authorization))
        .with_state(oauth)
}

/// Routes of the internal listener.
pub fn internal_router(oauth: OAuth) -> Router {
    Router::new().route("/oauth2/introspect", post(introspect)).with_state(oauth)
}

fn form_body(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"));
    }
    Form::parse(body)
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

async fn token(State(o): State<OAuth>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let form = form_body(&headers, &body)?;
        let auth = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("invalid"));
        o.token(auth, &form, &peer.ip().to_string()).await
    }
    .await;
    match result {
        Ok(t) => no_store(Json(t).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn revoke(State(o): State<OAuth>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let form = form_body(&headers, &body)?;
        let auth = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("invalid"));
        o.revoke(auth, &form, &peer.ip().to_string()).await
    }
    .await;
    match result {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => e.into_response(),
    }
}

async fn introspect(State(o): State<OAuth>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let form = form_body(&headers, &body)?;
        let token = form.get("token").ok_or_else(|| OAuthError::invalid_request("missing parameter token"))?;
        Ok::<_, OAuthError>(o.introspect(token).await?)
    }
    .await;
    match result {
        Ok(v) => no_store(Json(v).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn authorize_page(State(o): State<OAuth>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let session = cookie(&headers, USER_COOKIE);
    o.authorize_page(q.as_deref().unwrap_or(""), session.as_deref()).await
}

async fn authorize_submit(State(o): State<OAuth>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: Bytes) -> Response {
    let session = cookie(&headers, USER_COOKIE);
    o.authorize_submit(&body, session.as_deref(), &peer.ip().to_string()).await
}

/// The public keys of JWT access tokens (404 while tokens are opaque).
async fn jwks(State(o): State<OAuth>) -> Response {
    match o.jwt() {
        Some(keys) => Json(keys.jwks()).into_response(),
        None => ApiError::new(portico_core::Code::RouteNotFound, "JWT access tokens are not enabled").into_response(),
    }
}

/// RFC 8414 authorization-server metadata.
async fn metadata(State(o): State<OAuth>) -> Response {
    let s = o.settings();
    let issuer = s.issuer.trim_end_matches('/');
    let mut doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "introspection_endpoint": format!("{}/oauth2/introspect", s.introspection_base.trim_end_matches('/')),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "service_documentation": format!("{issuer}/docs/oauth2"),
    });
    if o.jwt().is_some() {
        doc["jwks_uri"] = json!(format!("{issuer}/.well-known/jwks.json"));
    }
    Json(doc).into_response()
}

/// The signed-in end user (bearer session token, or the consent pages' cookie).
pub struct User(pub EndUserRecord, pub String);

impl FromRequestParts<OAuth> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &OAuth) -> Result<Self, Self::Rejection> {
        let bearer = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(|s| s.trim().to_string());
        let session = bearer.or_else(|| cookie(&parts.headers, USER_COOKIE)).ok_or(Error::Unauthenticated)?;
        let user = o.user_of_session(&session).await?.ok_or(Error::Unauthenticated)?;
        Ok(User(user, session))
    }
}

async fn sign_up(State(o): State<OAuth>, ApiJson(input): ApiJson<Credentials>) -> ApiResult<Created<UserOut>> {
    Ok(Created(o.sign_up_user(input).await?))
}

async fn sign_in(State(o): State<OAuth>, ConnectInfo(peer): ConnectInfo<SocketAddr>, ApiJson(input): ApiJson<Credentials>) -> ApiResult<Success<SessionOut>> {
    Ok(Success(o.sign_in_user(input, &peer.ip().to_string()).await?))
}

async fn sign_out(State(o): State<OAuth>, User(_, session): User) -> ApiResult<Success<Option<String>>> {
    o.sign_out_user(&session).await?;
    Ok(Success(None))
}

async fn me(User(u, _): User) -> Success<UserOut> {
    Success(UserOut::from(&u))
}

async fn change_password(State(o): State<OAuth>, User(u, _): User, ApiJson(input): ApiJson<PasswordChange>) -> ApiResult<Success<Option<String>>> {
    o.change_user_password(&u, input).await?;
    Ok(Success(None))
}

async fn authorizations(State(o): State<OAuth>, User(u, _): User) -> ApiResult<Success<Vec<AuthorizationOut>>> {
    Ok(Success(o.authorizations(&u).await?))
}

async fn revoke_authorization(State(o): State<OAuth>, User(u, _): User, Path(app_id): Path<String>) -> ApiResult<Success<Option<String>>> {
    o.revoke_authorization(&u, &app_id).await?;
    Ok(Success(None))
}

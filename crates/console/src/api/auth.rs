use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
};
use portico_core::http::{ApiJson, ApiResult, Success};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Actor, Envelope, ErrorEnvelope, CSRF_COOKIE, SESSION_COOKIE};
use crate::{
    sessions::{AccountOut, PasswordChangeIn, RefreshIn, SignInIn, TokensOut},
    Platform,
};

pub(super) fn routes() -> OpenApiRouter<Platform> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(refresh))
        .routes(routes!(sign_out))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(open_session, close_session))
}

/// Signs in with email and password; returns an access token (30 min) and a refresh
/// token (7 days). Failed attempts in a row are slowed, then lock the account.
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth", request_body = SignInIn,
    responses((status = 200, body = Envelope<TokensOut>), (status = 401, body = ErrorEnvelope), (status = 423, body = ErrorEnvelope)))]
async fn token(State(p): State<Platform>, ApiJson(input): ApiJson<SignInIn>) -> ApiResult<Success<TokensOut>> {
    Ok(Success(p.sign_in(input).await?))
}

/// Exchanges a refresh token for a new pair; the old refresh token stops working, and
/// presenting it again ends the whole sign-in.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshIn,
    responses((status = 200, body = Envelope<TokensOut>), (status = 401, body = ErrorEnvelope)))]
async fn refresh(State(p): State<Platform>, ApiJson(input): ApiJson<RefreshIn>) -> ApiResult<Success<TokensOut>> {
    Ok(Success(p.refresh(input).await?))
}

/// Ends the sign-in of the bearer token presented (access and refresh tokens alike).
#[utoipa::path(post, path = "/api/v1/auth/sign-out", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Envelope<Option<String>>), (status = 401, body = ErrorEnvelope)))]
async fn sign_out(State(p): State<Platform>, _actor: Actor, headers: HeaderMap) -> ApiResult<Success<Option<String>>> {
    if let Some(token) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) {
        p.sign_out(token.trim()).await?;
    }
    Ok(Success(None))
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<AccountOut>), (status = 401, body = ErrorEnvelope)))]
async fn me(State(p): State<Platform>, Actor(actor): Actor) -> ApiResult<Success<AccountOut>> {
    Ok(Success(p.me(&actor).await?))
}

/// Changes the caller's password; every session of the account ends, this one too.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = PasswordChangeIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Option<String>>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)))]
async fn change_password(State(p): State<Platform>, Actor(actor): Actor, ApiJson(input): ApiJson<PasswordChangeIn>) -> ApiResult<Success<Option<String>>> {
    p.change_password(&actor, input).await?;
    Ok(Success(None))
}

/// Signs a browser in: sets the `portico_session` cookie (HttpOnly, SameSite=Strict)
/// and the `portico_csrf` cookie, whose value later unsafe requests echo in
/// `x-csrf-token`.
#[utoipa::path(post, path = "/api/v1/session", tag = "auth", request_body = SignInIn,
    responses((status = 200, body = Envelope<AccountOut>), (status = 401, body = ErrorEnvelope), (status = 423, body = ErrorEnvelope)))]
async fn open_session(State(p): State<Platform>, ApiJson(input): ApiJson<SignInIn>) -> ApiResult<Response> {
    let session = p.sign_in_browser(input).await?;
    let secure = if p.settings().secure_cookies { "; Secure" } else { "" };
    let max_age = session.max_age.as_secs();
    let csrf = portico_auth::token::generate("");
    let mut response = Success(session.account).into_response();
    let headers = response.headers_mut();
    for cookie in [
        format!("{SESSION_COOKIE}={}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}", session.token),
        format!("{CSRF_COOKIE}={csrf}; Path=/; Max-Age={max_age}; SameSite=Strict{secure}"),
    ] {
        headers.append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookie values are ASCII"));
    }
    Ok(response)
}

/// Signs a browser out and clears its cookies.
#[utoipa::path(delete, path = "/api/v1/session", tag = "auth", security(("session_cookie" = [])),
    responses((status = 200, body = Envelope<Option<String>>)))]
async fn close_session(State(p): State<Platform>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = portico_core::http::cookie(&headers, SESSION_COOKIE) {
        p.sign_out(&token).await?;
    }
    let mut response = Success(Option::<String>::None).into_response();
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        let cookie = format!("{name}=; Path=/; Max-Age=0; SameSite=Strict");
        response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII"));
    }
    Ok(response)
}

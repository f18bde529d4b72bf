//! The versioned management API (`/api/v1/…`) on the console listener, with its OpenAPI
//! 3.1 document generated from the handlers themselves (`/openapi.json`).
//!
//! Authentication: `Authorization: Bearer pt_at_…` (from `POST /api/v1/auth/token`), or
//! the browser session cookie `portico_session` (from `POST /api/v1/session`). Requests
//! authenticated by cookie that change something must echo the `portico_csrf` cookie in
//! an `x-csrf-token` header (double-submit), so another site cannot act for a browser.

mod analytics;
mod apps;
mod auth;
mod catalog;
mod merchants;
mod messaging;
mod operators;

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts, Method},
    Router,
};
use portico_core::{
    http::{bearer, cookie, ApiError},
    Code, Error,
};
use serde::Serialize;
use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi, ToSchema,
};
use utoipa_axum::router::OpenApiRouter;

use crate::{Platform, Principal};

pub const SESSION_COOKIE: &str = "portico_session";
pub const CSRF_COOKIE: &str = "portico_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(OpenApi)]
#[openapi(
    info(title = "Portico management API", description = "Accounts, merchants, apps and credentials. Every response is the envelope {code, msg, data, trace_id}; see docs/error-codes.md."),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Console sign-in"),
        (name = "merchants", description = "Merchants and onboarding"),
        (name = "apps", description = "Apps and credentials"),
        (name = "operators", description = "Platform operators and the audit log"),
        (name = "catalog", description = "API groups, APIs and grant requests"),
        (name = "analytics", description = "Calls through the gateway and business keys"),
        (name = "messaging", description = "Topics, subscriptions, deliveries and reconciliation files"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme("session_cookie", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))));
    }
}

/// The envelope every response comes in.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    /// 0 on success; otherwise a business code from docs/error-codes.md.
    pub code: u32,
    pub msg: String,
    pub data: T,
    pub trace_id: String,
}

/// An error envelope; `data` names the field for validation errors.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub code: u32,
    pub msg: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub trace_id: String,
}

/// The management API's routes and their OpenAPI document.
pub fn router(platform: Platform) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes())
        .merge(merchants::routes())
        .merge(apps::routes())
        .merge(operators::routes())
        .merge(catalog::routes())
        .merge(analytics::routes())
        .merge(messaging::routes())
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    (router.with_state(platform), doc)
}

/// The authenticated caller of a management route.
pub struct Actor(pub Principal);

impl FromRequestParts<Platform> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, platform: &Platform) -> Result<Self, Self::Rejection> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = bearer(value).ok_or_else(|| ApiError::new(Code::Unauthenticated, "Authorization must be `Bearer <access token>`"))?;
            return Ok(Actor(platform.authenticate(token, "access").await?));
        }
        if let Some(session) = cookie(&parts.headers, SESSION_COOKIE) {
            let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
            if unsafe_method {
                let expected = cookie(&parts.headers, CSRF_COOKIE);
                let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
                let ok = matches!((expected.as_deref(), presented), (Some(e), Some(p)) if !e.is_empty()
                    && portico_auth::token::constant_time_eq(e.as_bytes(), p.as_bytes()));
                if !ok {
                    return Err(ApiError::new(Code::CsrfRejected, "missing or wrong x-csrf-token header"));
                }
            }
            return Ok(Actor(platform.authenticate(&session, "browser").await?));
        }
        Err(Error::Unauthenticated.into())
    }
}

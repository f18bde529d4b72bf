use axum::extract::{Path, Query, State};
use portico_core::{
    http::{ApiJson, ApiResult, Created, MaybeJson, Success},
    page::{Page, PageQuery},
    Error,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Actor, Envelope, ErrorEnvelope};
use crate::{
    apps::{AppCreatedOut, AppIn, AppOut, AppPatch, Environment, RotateIn, SecretOut},
    Platform,
};

pub(super) fn routes() -> OpenApiRouter<Platform> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update))
        .routes(routes!(disable))
        .routes(routes!(enable))
        .routes(routes!(rotate))
        .routes(routes!(grant, revoke_grant))
}

/// Grants a scope (API group) to an app (product managers, super admins).
#[utoipa::path(put, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}/scopes/{scope}", tag = "apps", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<AppOut>), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn grant(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, app_id, scope)): Path<(String, String, String)>) -> ApiResult<Success<AppOut>> {
    Ok(Success(p.grant_scope(&actor, &merchant_id, &app_id, &scope).await?))
}

/// Withdraws a scope from an app.
#[utoipa::path(delete, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}/scopes/{scope}", tag = "apps", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<AppOut>), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn revoke_grant(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, app_id, scope)): Path<(String, String, String)>) -> ApiResult<Success<AppOut>> {
    Ok(Success(p.revoke_scope(&actor, &merchant_id, &app_id, &scope).await?))
}

/// The merchant's apps.
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/apps", tag = "apps", params(PageQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Page<AppOut>>), (status = 404, body = ErrorEnvelope)))]
async fn list(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, Query(q): Query<PageQuery>) -> ApiResult<Success<Page<AppOut>>> {
    Ok(Success(p.apps(&actor, &merchant_id, &q.validate()?).await?))
}

/// Creates an app with sandbox and production credentials. The two `app_secret`s are in
/// this response and never again.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/apps", tag = "apps", request_body = AppIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 201, body = Envelope<AppCreatedOut>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
async fn create(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, ApiJson(input): ApiJson<AppIn>) -> ApiResult<Created<AppCreatedOut>> {
    Ok(Created(p.create_app(&actor, &merchant_id, input).await?))
}

/// One app, with its credentials' keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}", tag = "apps", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<AppOut>), (status = 404, body = ErrorEnvelope)))]
async fn get(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, app_id)): Path<(String, String)>) -> ApiResult<Success<AppOut>> {
    Ok(Success(p.app(&actor, &merchant_id, &app_id).await?))
}

/// Changes an app's name, mode, callback URL, IP allowlist or RSA public key.
#[utoipa::path(patch, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}", tag = "apps", request_body = AppPatch, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<AppOut>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn update(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, app_id)): Path<(String, String)>, ApiJson(patch): ApiJson<AppPatch>) -> ApiResult<Success<AppOut>> {
    Ok(Success(p.update_app(&actor, &merchant_id, &app_id, patch).await?))
}

/// Disables an app: its credentials stop working until it is enabled again.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}/disable", tag = "apps", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<AppOut>), (status = 404, body = ErrorEnvelope)))]
async fn disable(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, app_id)): Path<(String, String)>) -> ApiResult<Success<AppOut>> {
    Ok(Success(p.set_app_enabled(&actor, &merchant_id, &app_id, false).await?))
}

/// Enables a disabled app.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}/enable", tag = "apps", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<AppOut>), (status = 404, body = ErrorEnvelope)))]
async fn enable(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, app_id)): Path<(String, String)>) -> ApiResult<Success<AppOut>> {
    Ok(Success(p.set_app_enabled(&actor, &merchant_id, &app_id, true).await?))
}

/// Rotates the secret of one environment (`sandbox` or `production`). The new secret is
/// in this response only; the old one keeps working for `grace_seconds` (default 24 h).
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}/credentials/{environment}/rotate", tag = "apps", request_body = RotateIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<SecretOut>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn rotate(
    State(p): State<Platform>,
    Actor(actor): Actor,
    Path((merchant_id, app_id, environment)): Path<(String, String, String)>,
    MaybeJson(input): MaybeJson<RotateIn>,
) -> ApiResult<Success<SecretOut>> {
    let env = Environment::parse(&environment).ok_or_else(|| Error::validation("environment", "must be sandbox or production"))?;
    Ok(Success(p.rotate_secret(&actor, &merchant_id, &app_id, env, input.unwrap_or_default()).await?))
}

use axum::extract::{Path, Query, State};
use portico_core::http::{ApiJson, ApiResult, Created, MaybeJson, Success};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Actor, Envelope, ErrorEnvelope};
use crate::{
    catalog::{ApiIn, ApiOut, GrantRequestIn, GrantRequestOut, GroupIn, GroupOut},
    merchants::ReasonIn,
    Platform,
};

pub(super) fn routes() -> OpenApiRouter<Platform> {
    OpenApiRouter::new()
        .routes(routes!(list_groups))
        .routes(routes!(put_group))
        .routes(routes!(list_apis, create_api))
        .routes(routes!(publish))
        .routes(routes!(deprecate))
        .routes(routes!(retire))
        .routes(routes!(request_group, merchant_requests))
        .routes(routes!(all_requests))
        .routes(routes!(approve_request))
        .routes(routes!(reject_request))
}

/// API groups: the unit that apps are granted.
#[utoipa::path(get, path = "/api/v1/catalog/groups", tag = "catalog", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Vec<GroupOut>>)))]
async fn list_groups(State(p): State<Platform>, _actor: Actor) -> ApiResult<Success<Vec<GroupOut>>> {
    Ok(Success(p.groups().await?))
}

/// Creates or updates an API group (product managers).
#[utoipa::path(put, path = "/api/v1/catalog/groups/{name}", tag = "catalog", request_body = GroupIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<GroupOut>), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)))]
async fn put_group(State(p): State<Platform>, Actor(actor): Actor, Path(name): Path<String>, ApiJson(input): ApiJson<GroupIn>) -> ApiResult<Success<GroupOut>> {
    Ok(Success(p.put_group(&actor, &name, input).await?))
}

/// APIs: every one for operators; published and deprecated ones for merchants.
#[utoipa::path(get, path = "/api/v1/catalog/apis", tag = "catalog", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Vec<ApiOut>>)))]
async fn list_apis(State(p): State<Platform>, Actor(actor): Actor) -> ApiResult<Success<Vec<ApiOut>>> {
    Ok(Success(p.apis(&actor).await?))
}

/// Creates an API in `draft` (product managers).
#[utoipa::path(post, path = "/api/v1/catalog/apis", tag = "catalog", request_body = ApiIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 201, body = Envelope<ApiOut>), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)))]
async fn create_api(State(p): State<Platform>, Actor(actor): Actor, ApiJson(input): ApiJson<ApiIn>) -> ApiResult<Created<ApiOut>> {
    Ok(Created(p.create_api(&actor, input).await?))
}

/// Publishes an API (from draft, or back from deprecated).
#[utoipa::path(post, path = "/api/v1/catalog/apis/{api_id}/publish", tag = "catalog", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<ApiOut>), (status = 409, body = ErrorEnvelope)))]
async fn publish(State(p): State<Platform>, Actor(actor): Actor, Path(api_id): Path<String>) -> ApiResult<Success<ApiOut>> {
    Ok(Success(p.set_api_lifecycle(&actor, &api_id, "published").await?))
}

/// Deprecates an API: it keeps working and says so in a `Deprecation` header.
#[utoipa::path(post, path = "/api/v1/catalog/apis/{api_id}/deprecate", tag = "catalog", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<ApiOut>), (status = 409, body = ErrorEnvelope)))]
async fn deprecate(State(p): State<Platform>, Actor(actor): Actor, Path(api_id): Path<String>) -> ApiResult<Success<ApiOut>> {
    Ok(Success(p.set_api_lifecycle(&actor, &api_id, "deprecated").await?))
}

/// Retires an API: calls to it are refused.
#[utoipa::path(post, path = "/api/v1/catalog/apis/{api_id}/retire", tag = "catalog", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<ApiOut>), (status = 409, body = ErrorEnvelope)))]
async fn retire(State(p): State<Platform>, Actor(actor): Actor, Path(api_id): Path<String>) -> ApiResult<Success<ApiOut>> {
    Ok(Success(p.set_api_lifecycle(&actor, &api_id, "retired").await?))
}

/// Asks for an API group for an app (the merchant's members).
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}/grant-requests", tag = "catalog", request_body = GrantRequestIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 201, body = Envelope<GrantRequestOut>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn request_group(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, app_id)): Path<(String, String)>, ApiJson(input): ApiJson<GrantRequestIn>) -> ApiResult<Created<GrantRequestOut>> {
    Ok(Created(p.request_group(&actor, &merchant_id, &app_id, input).await?))
}

/// A merchant's grant requests.
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}/grant-requests", tag = "catalog", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Vec<GrantRequestOut>>), (status = 404, body = ErrorEnvelope)))]
async fn merchant_requests(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, app_id)): Path<(String, String)>) -> ApiResult<Success<Vec<GrantRequestOut>>> {
    let all = p.grant_requests(&actor, Some(&merchant_id), None).await?;
    Ok(Success(all.into_iter().filter(|r| r.app_id == app_id).collect()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StateQuery {
    /// `pending`, `approved` or `rejected`.
    state: Option<String>,
}

/// Every grant request (operators), e.g. the queue with `?state=pending`.
#[utoipa::path(get, path = "/api/v1/grant-requests", tag = "catalog", params(StateQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Vec<GrantRequestOut>>), (status = 403, body = ErrorEnvelope)))]
async fn all_requests(State(p): State<Platform>, Actor(actor): Actor, Query(q): Query<StateQuery>) -> ApiResult<Success<Vec<GrantRequestOut>>> {
    Ok(Success(p.grant_requests(&actor, None, q.state.as_deref()).await?))
}

/// Approves a grant request: the app is granted the group.
#[utoipa::path(post, path = "/api/v1/grant-requests/{request_id}/approve", tag = "catalog", request_body = ReasonIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<GrantRequestOut>), (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
async fn approve_request(State(p): State<Platform>, Actor(actor): Actor, Path(request_id): Path<String>, MaybeJson(body): MaybeJson<ReasonIn>) -> ApiResult<Success<GrantRequestOut>> {
    Ok(Success(p.decide_grant_request(&actor, &request_id, true, body.and_then(|b| b.reason)).await?))
}

/// Rejects a grant request.
#[utoipa::path(post, path = "/api/v1/grant-requests/{request_id}/reject", tag = "catalog", request_body = ReasonIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<GrantRequestOut>), (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
async fn reject_request(State(p): State<Platform>, Actor(actor): Actor, Path(request_id): Path<String>, MaybeJson(body): MaybeJson<ReasonIn>) -> ApiResult<Success<GrantRequestOut>> {
    Ok(Success(p.decide_grant_request(&actor, &request_id, false, body.and_then(|b| b.reason)).await?))
}

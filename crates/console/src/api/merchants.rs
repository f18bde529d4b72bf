use axum::extract::{Path, Query, State};
use portico_core::{
    http::{ApiJson, ApiResult, Created, MaybeJson, Success},
    page::{Page, PageQuery},
    Error,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Actor, Envelope, ErrorEnvelope};
use crate::{
    audit::AuditEntry,
    merchants::{DocumentsIn, InternalUserIn, MemberIn, MerchantOut, MerchantState, ReasonIn, SignUpIn, SignUpOut},
    sessions::AccountOut,
    Platform,
};

pub(super) fn routes() -> OpenApiRouter<Platform> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(documents))
        .routes(routes!(submit))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(suspend))
        .routes(routes!(reactivate))
        .routes(routes!(internal_user))
        .routes(routes!(members, add_member))
        .routes(routes!(audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only merchants in this state.
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Signs up a merchant: a `draft` merchant and its owner account.
#[utoipa::path(post, path = "/api/v1/merchants/sign-up", tag = "merchants", request_body = SignUpIn,
    responses((status = 201, body = Envelope<SignUpOut>), (status = 400, body = ErrorEnvelope)))]
async fn sign_up(State(p): State<Platform>, ApiJson(input): ApiJson<SignUpIn>) -> ApiResult<Created<SignUpOut>> {
    Ok(Created(p.sign_up(input).await?))
}

/// Lists merchants: all of them for operators (filter by `state`), its own for a member.
#[utoipa::path(get, path = "/api/v1/merchants", tag = "merchants", params(ListQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Page<MerchantOut>>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)))]
async fn list(State(p): State<Platform>, Actor(actor): Actor, Query(q): Query<ListQuery>) -> ApiResult<Success<Page<MerchantOut>>> {
    let state = q
        .state
        .as_deref()
        .map(|s| MerchantState::parse(s).ok_or_else(|| Error::validation("state", "must be draft, pending_review, active, rejected or suspended")))
        .transpose()?;
    let page = PageQuery { limit: q.limit, cursor: q.cursor }.validate()?;
    Ok(Success(p.merchants(&actor, state, &page).await?))
}

/// One merchant. Licence number and phone are masked unless the reader is the merchant
/// itself, a business manager or a super admin.
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}", tag = "merchants", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<MerchantOut>), (status = 404, body = ErrorEnvelope)))]
async fn get(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>) -> ApiResult<Success<MerchantOut>> {
    Ok(Success(p.merchant(&actor, &merchant_id).await?))
}

/// Writes the company documents (owner; while `draft` or `rejected`).
#[utoipa::path(put, path = "/api/v1/merchants/{merchant_id}/documents", tag = "merchants", request_body = DocumentsIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<MerchantOut>), (status = 400, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
async fn documents(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, ApiJson(input): ApiJson<DocumentsIn>) -> ApiResult<Success<MerchantOut>> {
    Ok(Success(p.submit_documents(&actor, &merchant_id, input).await?))
}

/// Sends the documents for review: `draft | rejected → pending_review` (owner).
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/submit", tag = "merchants", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<MerchantOut>), (status = 409, body = ErrorEnvelope)))]
async fn submit(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>) -> ApiResult<Success<MerchantOut>> {
    Ok(Success(p.submit_for_review(&actor, &merchant_id).await?))
}

/// Approves a merchant: `pending_review → active` (business managers).
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/approve", tag = "merchants", request_body = ReasonIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<MerchantOut>), (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
async fn approve(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, MaybeJson(body): MaybeJson<ReasonIn>) -> ApiResult<Success<MerchantOut>> {
    Ok(Success(p.approve(&actor, &merchant_id, reason(body)).await?))
}

/// Rejects a merchant's documents with a reason it reads: `pending_review → rejected`.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/reject", tag = "merchants", request_body = ReasonIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<MerchantOut>), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
async fn reject(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, ApiJson(input): ApiJson<ReasonIn>) -> ApiResult<Success<MerchantOut>> {
    Ok(Success(p.reject(&actor, &merchant_id, input).await?))
}

/// Suspends a merchant, with a reason: `active → suspended`; its apps stop working.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/suspend", tag = "merchants", request_body = ReasonIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<MerchantOut>), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
async fn suspend(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, ApiJson(input): ApiJson<ReasonIn>) -> ApiResult<Success<MerchantOut>> {
    Ok(Success(p.suspend(&actor, &merchant_id, input).await?))
}

/// Reactivates a suspended merchant: `suspended → active`.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/reactivate", tag = "merchants", request_body = ReasonIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<MerchantOut>), (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
async fn reactivate(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, MaybeJson(body): MaybeJson<ReasonIn>) -> ApiResult<Success<MerchantOut>> {
    Ok(Success(p.reactivate(&actor, &merchant_id, reason(body)).await?))
}

/// Binds the merchant to an internal system's user id, or removes the binding (`null`).
#[utoipa::path(put, path = "/api/v1/merchants/{merchant_id}/internal-user", tag = "merchants", request_body = InternalUserIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<MerchantOut>), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)))]
async fn internal_user(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, ApiJson(input): ApiJson<InternalUserIn>) -> ApiResult<Success<MerchantOut>> {
    Ok(Success(p.bind_internal_user(&actor, &merchant_id, input).await?))
}

/// The merchant's members.
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/members", tag = "merchants", params(PageQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Page<AccountOut>>), (status = 404, body = ErrorEnvelope)))]
async fn members(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, Query(q): Query<PageQuery>) -> ApiResult<Success<Page<AccountOut>>> {
    Ok(Success(p.members(&actor, &merchant_id, &q.validate()?).await?))
}

/// Adds a member (owner or developer); the merchant's owner does this.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/members", tag = "merchants", request_body = MemberIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 201, body = Envelope<AccountOut>), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)))]
async fn add_member(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, ApiJson(input): ApiJson<MemberIn>) -> ApiResult<Created<AccountOut>> {
    Ok(Created(p.add_member(&actor, &merchant_id, input).await?))
}

/// The merchant's audit log, newest first (operators and the merchant's owner).
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/audit", tag = "merchants", params(PageQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Page<AuditEntry>>), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn audit(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, Query(q): Query<PageQuery>) -> ApiResult<Success<Page<AuditEntry>>> {
    Ok(Success(p.audit_log(&actor, Some(&merchant_id), &q.validate()?).await?))
}

fn reason(body: Option<ReasonIn>) -> ReasonIn {
    body.unwrap_or_default()
}

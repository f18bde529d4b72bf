use axum::extract::{Query, State};
use portico_core::{
    http::{ApiJson, ApiResult, Created, Success},
    page::{Page, PageQuery},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Actor, Envelope, ErrorEnvelope};
use crate::{audit::AuditEntry, operators::OperatorIn, sessions::AccountOut, Platform};

pub(super) fn routes() -> OpenApiRouter<Platform> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(audit))
}

/// Operator accounts (super admins).
#[utoipa::path(get, path = "/api/v1/operators", tag = "operators", params(PageQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Page<AccountOut>>), (status = 403, body = ErrorEnvelope)))]
async fn list(State(p): State<Platform>, Actor(actor): Actor, Query(q): Query<PageQuery>) -> ApiResult<Success<Page<AccountOut>>> {
    Ok(Success(p.operators(&actor, &q.validate()?).await?))
}

/// Creates an operator account: super admin, business manager or product manager.
#[utoipa::path(post, path = "/api/v1/operators", tag = "operators", request_body = OperatorIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 201, body = Envelope<AccountOut>), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)))]
async fn create(State(p): State<Platform>, Actor(actor): Actor, ApiJson(input): ApiJson<OperatorIn>) -> ApiResult<Created<AccountOut>> {
    Ok(Created(p.create_operator(&actor, input).await?))
}

/// The platform's audit log, newest first (operators).
#[utoipa::path(get, path = "/api/v1/audit", tag = "operators", params(PageQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Page<AuditEntry>>), (status = 403, body = ErrorEnvelope)))]
async fn audit(State(p): State<Platform>, Actor(actor): Actor, Query(q): Query<PageQuery>) -> ApiResult<Success<Page<AuditEntry>>> {
    Ok(Success(p.audit_log(&actor, None, &q.validate()?).await?))
}

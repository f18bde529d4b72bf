use axum::extract::{Path, Query, State};
use portico_core::{
    http::{ApiResult, Success},
    page::{Page, PageQuery},
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Actor, Envelope, ErrorEnvelope};
use crate::{
    analytics::{BusinessKeyOut, CallOut},
    Platform,
};

pub(super) fn routes() -> OpenApiRouter<Platform> {
    OpenApiRouter::new().routes(routes!(merchant_calls)).routes(routes!(all_calls)).routes(routes!(business_keys))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CallQuery {
    /// Only the calls of this trace id.
    trace_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A merchant's calls through the gateway, newest first.
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/calls", tag = "analytics", params(CallQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Page<CallOut>>), (status = 404, body = ErrorEnvelope)))]
async fn merchant_calls(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, Query(q): Query<CallQuery>) -> ApiResult<Success<Page<CallOut>>> {
    let page = PageQuery { limit: q.limit, cursor: q.cursor }.validate()?;
    Ok(Success(p.calls(&actor, Some(&merchant_id), q.trace_id.as_deref(), &page).await?))
}

/// Every call (operators): find the one behind a trace id a merchant quotes.
#[utoipa::path(get, path = "/api/v1/calls", tag = "analytics", params(CallQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Page<CallOut>>), (status = 403, body = ErrorEnvelope)))]
async fn all_calls(State(p): State<Platform>, Actor(actor): Actor, Query(q): Query<CallQuery>) -> ApiResult<Success<Page<CallOut>>> {
    let page = PageQuery { limit: q.limit, cursor: q.cursor }.validate()?;
    Ok(Success(p.calls(&actor, None, q.trace_id.as_deref(), &page).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct KeyQuery {
    /// Only this API (`name@version`).
    api: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The business keys a merchant's calls produced (data closure), newest first.
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/business-keys", tag = "analytics", params(KeyQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Page<BusinessKeyOut>>), (status = 404, body = ErrorEnvelope)))]
async fn business_keys(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, Query(q): Query<KeyQuery>) -> ApiResult<Success<Page<BusinessKeyOut>>> {
    let page = PageQuery { limit: q.limit, cursor: q.cursor }.validate()?;
    Ok(Success(p.business_keys(&actor, &merchant_id, q.api.as_deref(), &page).await?))
}

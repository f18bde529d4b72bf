use axum::{
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use portico_core::{
    http::{ApiJson, ApiResult, Created, MaybeJson, Success},
    page::{Page, PageQuery},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Actor, Envelope, ErrorEnvelope};
use crate::{
    messaging::{
        DeliveryDetailOut, DeliveryOut, DeliveryQuery, RecoverIn, RecoverOut, RotateSecretIn, SubscriptionIn, SubscriptionOut, SubscriptionPatch,
        SubscriptionSecretOut, TopicIn, TopicOut,
    },
    Platform,
};

pub(super) fn routes() -> OpenApiRouter<Platform> {
    OpenApiRouter::new()
        .routes(routes!(list_topics))
        .routes(routes!(put_topic))
        .routes(routes!(create_subscription, list_subscriptions))
        .routes(routes!(get_subscription, update_subscription))
        .routes(routes!(disable_subscription))
        .routes(routes!(enable_subscription))
        .routes(routes!(rotate_subscription_secret))
        .routes(routes!(recover_subscription))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(resend_delivery))
        .routes(routes!(reconciliation))
}

/// Topics (event types): every one for operators, published ones for merchants.
#[utoipa::path(get, path = "/api/v1/catalog/topics", tag = "messaging", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Vec<TopicOut>>)))]
async fn list_topics(State(p): State<Platform>, Actor(actor): Actor) -> ApiResult<Success<Vec<TopicOut>>> {
    Ok(Success(p.topics(&actor).await?))
}

/// Publishes (creates or updates) a topic (product managers).
#[utoipa::path(put, path = "/api/v1/catalog/topics/{name}", tag = "messaging", request_body = TopicIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<TopicOut>), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)))]
async fn put_topic(State(p): State<Platform>, Actor(actor): Actor, Path(name): Path<String>, ApiJson(input): ApiJson<TopicIn>) -> ApiResult<Success<TopicOut>> {
    Ok(Success(p.put_topic(&actor, &name, input).await?))
}

/// Subscribes an app to a topic its grants cover; the answer shows the signing secret once.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}/subscriptions", tag = "messaging", request_body = SubscriptionIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 201, body = Envelope<SubscriptionSecretOut>), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn create_subscription(
    State(p): State<Platform>,
    Actor(actor): Actor,
    Path((merchant_id, app_id)): Path<(String, String)>,
    ApiJson(input): ApiJson<SubscriptionIn>,
) -> ApiResult<Created<SubscriptionSecretOut>> {
    Ok(Created(p.create_subscription(&actor, &merchant_id, &app_id, input).await?))
}

/// An app's subscriptions.
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/apps/{app_id}/subscriptions", tag = "messaging", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Vec<SubscriptionOut>>), (status = 404, body = ErrorEnvelope)))]
async fn list_subscriptions(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, app_id)): Path<(String, String)>) -> ApiResult<Success<Vec<SubscriptionOut>>> {
    Ok(Success(p.subscriptions(&actor, &merchant_id, &app_id).await?))
}

#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/subscriptions/{subscription_id}", tag = "messaging", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<SubscriptionOut>), (status = 404, body = ErrorEnvelope)))]
async fn get_subscription(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, id)): Path<(String, String)>) -> ApiResult<Success<SubscriptionOut>> {
    Ok(Success(p.subscription(&actor, &merchant_id, &id).await?))
}

/// Changes a subscription's callback URL, order, concurrency, timeout or schedule.
#[utoipa::path(patch, path = "/api/v1/merchants/{merchant_id}/subscriptions/{subscription_id}", tag = "messaging", request_body = SubscriptionPatch, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<SubscriptionOut>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn update_subscription(
    State(p): State<Platform>,
    Actor(actor): Actor,
    Path((merchant_id, id)): Path<(String, String)>,
    ApiJson(patch): ApiJson<SubscriptionPatch>,
) -> ApiResult<Success<SubscriptionOut>> {
    Ok(Success(p.update_subscription(&actor, &merchant_id, &id, patch).await?))
}

/// Stops deliveries; queued ones wait.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/subscriptions/{subscription_id}/disable", tag = "messaging", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<SubscriptionOut>), (status = 404, body = ErrorEnvelope)))]
async fn disable_subscription(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, id)): Path<(String, String)>) -> ApiResult<Success<SubscriptionOut>> {
    Ok(Success(p.set_subscription_enabled(&actor, &merchant_id, &id, false).await?))
}

/// Starts deliveries again (after a 410, five days of failures or a merchant's pause).
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/subscriptions/{subscription_id}/enable", tag = "messaging", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<SubscriptionOut>), (status = 404, body = ErrorEnvelope)))]
async fn enable_subscription(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, id)): Path<(String, String)>) -> ApiResult<Success<SubscriptionOut>> {
    Ok(Success(p.set_subscription_enabled(&actor, &merchant_id, &id, true).await?))
}

/// A new signing secret, shown once; the old one also signs during the grace period.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/subscriptions/{subscription_id}/rotate-secret", tag = "messaging", request_body = RotateSecretIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<SubscriptionSecretOut>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn rotate_subscription_secret(
    State(p): State<Platform>,
    Actor(actor): Actor,
    Path((merchant_id, id)): Path<(String, String)>,
    MaybeJson(input): MaybeJson<RotateSecretIn>,
) -> ApiResult<Success<SubscriptionSecretOut>> {
    Ok(Success(p.rotate_subscription_secret(&actor, &merchant_id, &id, input.unwrap_or(RotateSecretIn { grace_secs: None })).await?))
}

/// Queues again every failed delivery of the subscription created since a time.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/subscriptions/{subscription_id}/recover", tag = "messaging", request_body = RecoverIn, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<RecoverOut>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn recover_subscription(
    State(p): State<Platform>,
    Actor(actor): Actor,
    Path((merchant_id, id)): Path<(String, String)>,
    ApiJson(input): ApiJson<RecoverIn>,
) -> ApiResult<Success<RecoverOut>> {
    Ok(Success(p.recover_subscription(&actor, &merchant_id, &id, input).await?))
}

/// A merchant's deliveries, newest first, by event id, business key, topic, status, time.
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/deliveries", tag = "messaging", params(DeliveryQuery, PageQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<Page<DeliveryOut>>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
async fn list_deliveries(State(p): State<Platform>, Actor(actor): Actor, Path(merchant_id): Path<String>, Query(q): Query<DeliveryQuery>, Query(page): Query<PageQuery>) -> ApiResult<Success<Page<DeliveryOut>>> {
    Ok(Success(p.deliveries(&actor, &merchant_id, &q, &page.validate()?).await?))
}

/// One delivery with its body and every attempt.
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/deliveries/{delivery_id}", tag = "messaging", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<DeliveryDetailOut>), (status = 404, body = ErrorEnvelope)))]
async fn get_delivery(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, id)): Path<(String, String)>) -> ApiResult<Success<DeliveryDetailOut>> {
    Ok(Success(p.delivery(&actor, &merchant_id, &id).await?))
}

/// Sends one delivery again now, with a fresh retry schedule.
#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/deliveries/{delivery_id}/resend", tag = "messaging", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = Envelope<DeliveryOut>), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
async fn resend_delivery(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, id)): Path<(String, String)>) -> ApiResult<Success<DeliveryOut>> {
    Ok(Success(p.resend_delivery(&actor, &merchant_id, &id).await?))
}

/// The reconciliation file (CSV) of a platform day (`YYYY-MM-DD`, UTC+8), ready the day
/// after. Its last line is `# sha256=<hex>` over the lines before; the `x-checksum-sha256`
/// header says the same.
#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/reconciliation/{date}", tag = "messaging", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
async fn reconciliation(State(p): State<Platform>, Actor(actor): Actor, Path((merchant_id, date)): Path<(String, String)>) -> ApiResult<Response> {
    let file = p.reconciliation_file(&actor, &merchant_id, &date).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", file.file_name)),
            (header::HeaderName::from_static("x-checksum-sha256"), file.sha256),
        ],
        file.body,
    )
        .into_response())
}

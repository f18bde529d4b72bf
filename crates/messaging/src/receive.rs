//! Receiving without a callback URL, on the public listener, authenticated with the
//! app's OAuth2 access token (`Authorization: Bearer …`, client credentials):
//!
//! - polling: `GET /messages/v1/deliveries?after=&limit=&pending=` lists the app's
//!   deliveries oldest first; `POST /messages/v1/deliveries/ack` acknowledges them;
//! - the live channel: `GET /messages/v1/stream` is a server-sent-events stream of the
//!   same deliveries, resumable with `Last-Event-ID` (or `?after=`).
//!
//! Both show the body a webhook would carry. On PostgreSQL, several instances commit
//! concurrently, so a delivery becomes visible here only two seconds after it was made
//! (no later commit can then slip in behind a cursor); on SQLite at once.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    extract::{FromRequestParts, Query, State},
    http::{header, request::Parts},
    response::sse::{Event, KeepAlive, Sse},
    routing::{get, post},
    Router,
};
use futures_util::stream::{self, Stream};
use portico_console::messaging::delivery_body;
use portico_core::{
    http::{bearer, ApiError, ApiJson, ApiResult, Success},
    time::{now_ms, rfc3339},
    Code, Error,
};
use portico_store::{
    messaging::{self as store, DeliveryWithPayload},
    Engine,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Messaging;

pub(crate) fn router(m: Messaging) -> Router {
    Router::new()
        .route("/messages/v1/deliveries", get(list))
        .route("/messages/v1/deliveries/ack", post(ack))
        .route("/messages/v1/stream", get(live))
        .with_state(m)
}

/// The app behind a bearer token.
pub struct App {
    pub app_id: String,
    pub merchant_id: String,
    token: String,
}

impl FromRequestParts<Messaging> for App {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, m: &Messaging) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(bearer)
            .ok_or_else(|| ApiError::new(Code::Unauthenticated, "Authorization must be `Bearer <the app's access token>`"))?;
        Ok(m.app_of(token).await?)
    }
}

impl Messaging {
    async fn app_of(&self, token: &str) -> Result<App, Error> {
        let info = self.inner.oauth.validate(token).await?.ok_or(Error::Unauthenticated)?;
        if !self.inner.oauth.app_status(&info.app_id, &info.merchant_id).await?.usable {
            return Err(Error::Forbidden("the app is disabled or its merchant is not active".into()));
        }
        Ok(App { app_id: info.app_id.clone(), merchant_id: info.merchant_id.clone(), token: token.to_string() })
    }

    /// How long a new delivery stays invisible to cursors (see the module comment).
    fn settle_ms(&self) -> i64 {
        match self.platform().store().engine() {
            Engine::Sqlite => 0,
            Engine::Postgres => 2000,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    /// A delivery id: list what came after it.
    after: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<usize>,
    /// Only deliveries not yet sent or acknowledged.
    #[serde(default)]
    pending: bool,
}

#[derive(Debug, Serialize)]
pub struct Polled {
    /// The delivery id (the `webhook-id` a webhook would carry).
    pub id: String,
    pub topic: String,
    pub event_id: String,
    pub business_key: Option<String>,
    pub seq: Option<i64>,
    pub status: String,
    pub attempts: i64,
    pub created_at: String,
    /// The webhook body: `{type, timestamp, event_id, business_key, seq, data}`.
    pub body: Box<RawValue>,
}

#[derive(Debug, Serialize)]
struct PollOut {
    items: Vec<Polled>,
    /// Pass as `after` for the next page (absent when nothing was listed).
    next_cursor: Option<String>,
}

fn polled(d: &DeliveryWithPayload) -> Polled {
    let body = delivery_body(&d.delivery, &d.payload, d.event_created_at);
    let r = &d.delivery;
    Polled {
        id: r.id.clone(),
        topic: r.topic.clone(),
        event_id: r.event_id.clone(),
        business_key: r.business_key.clone(),
        seq: r.seq,
        status: r.status.clone(),
        attempts: r.attempts,
        created_at: rfc3339(r.created_at),
        body: RawValue::from_string(body).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("valid")),
    }
}

fn check_cursor(field: &str, c: &Option<String>) -> Result<(), Error> {
    match c {
        Some(c) if !portico_core::page::is_id_like(c) => Err(Error::validation(field, "is not a delivery id")),
        _ => Ok(()),
    }
}

async fn list(State(m): State<Messaging>, app: App, Query(q): Query<ListQuery>) -> ApiResult<Success<PollOut>> {
    check_cursor("after", &q.after)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::validation("limit", "must be 1 to 500").into());
    }
    let rows = {
        let mut conn = m.platform().store().read().await?;
        store::app_deliveries(&mut conn, &app.app_id, q.after.as_deref(), now_ms() - m.settle_ms(), q.pending, limit).await?
    };
    let items: Vec<Polled> = rows.iter().map(polled).collect();
    let next_cursor = items.last().map(|i| i.id.clone()).or(q.after);
    Ok(Success(PollOut { items, next_cursor }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckIn {
    ids: Vec<String>,
}

#[derive(Debug, Serialize)]
struct AckOut {
    /// How many changed (ids already acknowledged, sent, or not the app's are ignored).
    acknowledged: u64,
}

async fn ack(State(m): State<Messaging>, app: App, ApiJson(input): ApiJson<AckIn>) -> ApiResult<Success<AckOut>> {
    if input.ids.is_empty() || input.ids.len() > 500 {
        return Err(Error::validation("ids", "must hold 1 to 500 delivery ids").into());
    }
    for (i, id) in input.ids.iter().enumerate() {
        check_cursor(&format!("ids[{i}]"), &Some(id.clone()))?;
    }
    let store = m.platform().store();
    let mut tx = store.begin().await?;
    let n = store::acknowledge(&mut tx, store.engine(), &app.app_id, &input.ids, now_ms()).await?;
    portico_store::commit(tx).await?;
    Ok(Success(AckOut { acknowledged: n }))
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    after: Option<String>,
}

/// Re-checks the token this often on a long stream: a revoked token ends it.
const RECHECK: Duration = Duration::from_secs(30);

struct Live {
    m: Messaging,
    app: App,
    cursor: Option<String>,
    buffer: VecDeque<Polled>,
    committed: tokio::sync::watch::Receiver<u64>,
    checked: std::time::Instant,
}

async fn live(State(m): State<Messaging>, app: App, headers: axum::http::HeaderMap, Query(q): Query<StreamQuery>) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string).or(q.after);
    check_cursor("Last-Event-ID", &resume)?;
    let state = Live { committed: m.inner.committed.subscribe(), m, app, cursor: resume, buffer: VecDeque::new(), checked: std::time::Instant::now() };
    let events = stream::unfold(state, |mut s| async move {
        loop {
            if let Some(p) = s.buffer.pop_front() {
                s.cursor = Some(p.id.clone());
                let event = Event::default().id(p.id.clone()).event(p.topic.clone()).data(serde_json::to_string(&p).unwrap_or_default());
                return Some((Ok(event), s));
            }
            if s.checked.elapsed() > RECHECK {
                s.checked = std::time::Instant::now();
                if s.m.app_of(&s.app.token).await.is_err() {
                    return None;
                }
            }
            let rows = async {
                let mut conn = s.m.platform().store().read().await?;
                store::app_deliveries(&mut conn, &s.app.app_id, s.cursor.as_deref(), now_ms() - s.m.settle_ms(), false, 200).await
            }
            .await;
            match rows {
                Ok(rows) if !rows.is_empty() => s.buffer.extend(rows.iter().map(polled)),
                _ => {
                    let wait = if s.m.settle_ms() > 0 { Duration::from_millis(500) } else { Duration::from_secs(1) };
                    tokio::select! {
                        _ = s.committed.changed() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

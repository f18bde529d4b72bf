//! Event ingress on the internal listener: `POST /messages/v1/events` (one event) and
//! `POST /messages/v1/events/batch` (`{"events": [...]}`). An answer of success means the
//! event and one delivery per matching subscription are committed. Requests that arrive
//! together are committed together (group commit): one transaction, one fsync, for many
//! callers, each answered only after that commit.
//!
//! Fresh deliveries that can be attempted at once (their subscription pushes, is under
//! its in-flight cap, and does not keep strict order by key) and find a free attempt slot
//! on this instance are stored already claimed (`sending`, under a lease) and handed to
//! the dispatcher after the commit, with no claim query between; the others are stored
//! `queued` for the dispatcher's claims. Either way the row is committed before anyone
//! attempts it, and a crash leaves it to be retried when its lease runs out.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{extract::State, routing::post, Router};
use portico_console::messaging::PLATFORM_GROUP;
use portico_core::{
    http::{ApiJson, ApiResult, Created},
    id::new_id,
    time::now_ms,
    Error,
};
use portico_store::{
    messaging::{self as store, Claimed, DeliveryRecord, EventRecord, Target},
    Store,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::{dispatch::Slots, Messaging};

/// One event, as internal systems publish it (over HTTP or RabbitMQ).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    pub topic: String,
    /// Deliver to this merchant's subscriptions only.
    pub merchant_id: Option<String>,
    /// Deliver to this app's subscriptions only.
    pub app_id: Option<String>,
    /// e.g. the order id: events of one key are numbered (`seq`) in publication order.
    pub business_key: Option<String>,
    pub payload: serde_json::Value,
    /// A repeated key returns the first event instead of making a second.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchIn {
    pub events: Vec<EventIn>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub event_id: String,
    pub seq: Option<i64>,
    /// The delivery ids (each also the `webhook-id` of its attempts).
    pub deliveries: Vec<String>,
    /// True when the idempotency key had been seen: this is the first event's answer.
    pub duplicate: bool,
}

#[derive(Debug, Serialize)]
pub struct BatchOut {
    pub events: Vec<Accepted>,
}

pub(crate) fn router(m: Messaging) -> Router {
    Router::new().route("/messages/v1/events", post(publish_one)).route("/messages/v1/events/batch", post(publish_batch)).with_state(m)
}

async fn publish_one(State(m): State<Messaging>, ApiJson(event): ApiJson<EventIn>) -> ApiResult<Created<Accepted>> {
    let mut out = m.publish(vec![event], "http").await?;
    Ok(Created(out.remove(0)))
}

async fn publish_batch(State(m): State<Messaging>, ApiJson(batch): ApiJson<BatchIn>) -> ApiResult<Created<BatchOut>> {
    Ok(Created(BatchOut { events: m.publish(batch.events, "http").await? }))
}

/// An event checked and ready to store.
pub(crate) struct Prepared {
    topic: String,
    /// The group whose grant subscribers need (`None` for the platform's own topics).
    group: Option<String>,
    merchant_id: Option<String>,
    app_id: Option<String>,
    business_key: Option<String>,
    payload: String,
    idempotency_key: Option<String>,
    source: &'static str,
}

impl Messaging {
    /// Checks and commits events; answers in the order given. Nothing is stored unless
    /// every event is valid (the error names the event by index).
    pub async fn publish(&self, events: Vec<EventIn>, source: &'static str) -> Result<Vec<Accepted>, Error> {
        if events.is_empty() {
            return Err(Error::validation("events", "must hold at least one event"));
        }
        let max = self.inner.settings.max_events_per_request;
        if events.len() > max {
            return Err(Error::validation("events", format!("at most {max} events per request")));
        }
        let single = events.len() == 1;
        let mut prepared = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let p = self.prepare(e, source).await.map_err(|err| match err {
                Error::Validation { field, message } if !single => Error::Validation { field: format!("events[{i}].{field}"), message },
                other => other,
            })?;
            prepared.push(p);
        }
        self.inner.ingress.commit(prepared).await
    }

    async fn prepare(&self, e: EventIn, source: &'static str) -> Result<Prepared, Error> {
        let topic = self.inner.topics.get(&e.topic).await?.filter(|t| t.record.state == "published").ok_or_else(|| Error::validation("topic", "no such published topic"))?;
        if topic.record.group_name == PLATFORM_GROUP && source != "platform" {
            return Err(Error::validation("topic", "is the platform's own; only Portico publishes it"));
        }
        for (field, v, max) in [("merchant_id", &e.merchant_id, 64), ("app_id", &e.app_id, 64), ("business_key", &e.business_key, 128), ("idempotency_key", &e.idempotency_key, 128)] {
            if let Some(v) = v {
                if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
                    return Err(Error::validation(field, format!("must be 1 to {max} characters, no control characters")));
                }
            }
        }
        let payload = e.payload.to_string();
        if payload.len() as i64 > topic.record.max_payload_bytes {
            return Err(Error::validation("payload", format!("is {} bytes; the topic takes at most {}", payload.len(), topic.record.max_payload_bytes)));
        }
        if let Some(v) = &topic.validator {
            if let Some(err) = v.iter_errors(&e.payload).next() {
                let at = err.instance_path().to_string();
                let field = if at.is_empty() { "payload".to_string() } else { format!("payload{at}") };
                return Err(Error::validation(field, format!("does not match the topic's schema: {err}")));
            }
        }
        Ok(Prepared {
            group: (topic.record.group_name != PLATFORM_GROUP).then(|| topic.record.group_name.clone()),
            topic: topic.record.name.clone(),
            merchant_id: e.merchant_id,
            app_id: e.app_id,
            business_key: e.business_key,
            payload,
            idempotency_key: e.idempotency_key,
            source,
        })
    }
}

type Reply = oneshot::Sender<Result<Vec<Accepted>, Error>>;

/// The group-commit writer: one task per instance takes whatever requests are waiting
/// and commits them in one transaction.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<(Vec<Prepared>, Reply)>,
}

/// Events per transaction, at most.
const GROUP_EVENTS: usize = 2000;

impl Writer {
    pub fn start(store: Store, work: Arc<Notify>, committed: tokio::sync::watch::Sender<u64>, slots: Slots, lease: Duration) -> Writer {
        let handoff = Handoff { slots, lease_ms: lease.as_millis() as i64 };
        let (tx, mut rx) = mpsc::channel::<(Vec<Prepared>, Reply)>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut n = first.0.len();
                let mut jobs = vec![first];
                while n < GROUP_EVENTS {
                    match rx.try_recv() {
                        Ok(job) => {
                            n += job.0.len();
                            jobs.push(job);
                        }
                        Err(_) => break,
                    }
                }
                let refs: Vec<&[Prepared]> = jobs.iter().map(|j| j.0.as_slice()).collect();
                match commit(&store, &refs, &handoff).await {
                    Ok((results, queued)) => {
                        if queued {
                            work.notify_one();
                        }
                        for ((_, reply), result) in jobs.into_iter().zip(results) {
                            let _ = reply.send(Ok(result));
                        }
                    }
                    // One request's conflict (an idempotency key committed meanwhile by
                    // another instance) must not fail the others: each on its own.
                    Err(_) if jobs.len() > 1 => {
                        for (events, reply) in jobs {
                            let result = commit(&store, &[events.as_slice()], &handoff).await.map(|(mut r, _)| r.remove(0));
                            let _ = reply.send(result);
                        }
                    }
                    Err(e) => {
                        for (_, reply) in jobs {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
                committed.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        Writer { tx }
    }

    pub async fn commit(&self, events: Vec<Prepared>) -> Result<Vec<Accepted>, Error> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((events, reply)).await.map_err(|_| Error::Unavailable("the ingress writer has stopped".into()))?;
        answer.await.map_err(|_| Error::Unavailable("the ingress writer has stopped".into()))?
    }
}

/// Where ingress hands fresh deliveries to this instance's dispatcher.
struct Handoff {
    slots: Slots,
    lease_ms: i64,
}

/// Stores the events of several requests and their deliveries in one transaction, the
/// deliveries that find a free attempt slot already claimed (handed over after the
/// commit). Returns the answers, and whether deliveries were queued for a claim.
async fn commit(store: &Store, jobs: &[&[Prepared]], handoff: &Handoff) -> Result<(Vec<Vec<Accepted>>, bool), Error> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    let mut events = Vec::new();
    let mut deliveries = Vec::new();
    // The index in `events` of each delivery's event.
    let mut event_of = Vec::new();
    let mut targets: HashMap<(String, Option<String>, Option<String>), Vec<Target>> = HashMap::new();
    let mut seen_keys: HashMap<String, Accepted> = HashMap::new();
    let keys: Vec<&str> = jobs.iter().flat_map(|j| j.iter()).filter_map(|p| p.idempotency_key.as_deref()).collect();
    let mut stored = if keys.is_empty() { HashMap::new() } else { store::events_by_idempotency_keys(&mut tx, &keys).await? };
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut answers = Vec::with_capacity(job.len());
        for p in job.iter() {
            if let Some(key) = &p.idempotency_key {
                if let Some(first) = seen_keys.get(key) {
                    answers.push(Accepted { duplicate: true, ..first.clone() });
                    continue;
                }
                if let Some(first) = stored.remove(key) {
                    let ids = store::deliveries_of_event(&mut tx, &first.id).await?.into_iter().map(|d| d.id).collect();
                    let accepted = Accepted { event_id: first.id, seq: first.seq, deliveries: ids, duplicate: true };
                    seen_keys.insert(key.clone(), accepted.clone());
                    answers.push(accepted);
                    continue;
                }
            }
            let seq = match &p.business_key {
                Some(k) => Some(store::next_seq(&mut tx, k).await?),
                None => None,
            };
            let key = (p.topic.clone(), p.merchant_id.clone(), p.app_id.clone());
            if !targets.contains_key(&key) {
                let found = store::targets(&mut tx, &p.topic, p.group.as_deref(), p.merchant_id.as_deref(), p.app_id.as_deref()).await?;
                targets.insert(key.clone(), found);
            }
            let event_id = new_id("evt");
            let mut ids = Vec::new();
            for t in &targets[&key] {
                let id = new_id("msg");
                ids.push(id.clone());
                event_of.push(events.len());
                deliveries.push(DeliveryRecord {
                    id,
                    event_id: event_id.clone(),
                    subscription_id: t.subscription_id.clone(),
                    merchant_id: t.merchant_id.clone(),
                    app_id: t.app_id.clone(),
                    topic: p.topic.clone(),
                    business_key: p.business_key.clone(),
                    seq,
                    ordered: t.strict_order as i64,
                    status: "queued".into(),
                    attempts: 0,
                    retry_index: 0,
                    next_at: t.push.then_some(now),
                    lease_until: None,
                    last_attempt_at: None,
                    last_status: None,
                    last_error: None,
                    created_at: now,
                    updated_at: now,
                });
            }
            events.push(EventRecord {
                id: event_id.clone(),
                topic: p.topic.clone(),
                target_merchant_id: p.merchant_id.clone(),
                target_app_id: p.app_id.clone(),
                business_key: p.business_key.clone(),
                seq,
                payload: p.payload.clone(),
                idempotency_key: p.idempotency_key.clone(),
                source: p.source.to_string(),
                created_at: now,
            });
            let accepted = Accepted { event_id, seq, deliveries: ids, duplicate: false };
            if let Some(key) = &p.idempotency_key {
                seen_keys.insert(key.clone(), accepted.clone());
            }
            answers.push(accepted);
        }
        results.push(answers);
    }
    // Claim what can go at once: within each subscription's cap (counted as the
    // dispatcher's claims count it) and this instance's free slots.
    let can_go = |d: &DeliveryRecord| d.next_at.is_some() && !(d.ordered != 0 && d.business_key.is_some());
    let mut permits = handoff.slots.reserve(deliveries.iter().filter(|d| can_go(d)).count());
    let mut ready = Vec::with_capacity(permits.len());
    if !permits.is_empty() {
        let caps: HashMap<&str, i64> = targets.values().flatten().map(|t| (t.subscription_id.as_str(), t.max_in_flight)).collect();
        let mut in_flight = store::in_flight_counts(&mut tx, store.engine()).await?;
        for (i, d) in deliveries.iter_mut().enumerate() {
            if !can_go(d) {
                continue;
            }
            let n = in_flight.entry(d.subscription_id.clone()).or_insert(0);
            if *n >= caps.get(d.subscription_id.as_str()).copied().unwrap_or(0) {
                continue;
            }
            let Some(permit) = permits.pop() else { break };
            *n += 1;
            d.status = "sending".into();
            d.lease_until = Some(now + handoff.lease_ms);
            ready.push((i, permit));
        }
    }
    drop(permits);
    let queued = deliveries.iter().any(|d| d.status == "queued" && d.next_at.is_some());
    store::insert_events(&mut tx, store.engine(), &events).await?;
    store::insert_deliveries(&mut tx, store.engine(), &deliveries).await?;
    portico_store::commit(tx).await?;
    handoff.slots.hand_over(
        ready
            .into_iter()
            .map(|(i, permit)| {
                let payload = events[event_of[i]].payload.clone();
                (Claimed { delivery: std::mem::take(&mut deliveries[i]), payload, event_created_at: now }, permit)
            })
            .collect(),
    );
    Ok((results, queued))
}

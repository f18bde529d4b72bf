//! The delivery workers. Attempts run in this instance's slots ([`Slots`]): ingress
//! hands over fresh deliveries it stored already claimed, and a claimer takes the other
//! due deliveries from the `deliveries` table with a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL; the single writer on SQLite), never more than the free slots; each attempt
//! runs as its own task; a result writer commits outcomes in batches (the delivery's new
//! state, the attempt log, the subscription's health). A delivery whose worker dies stays
//! `sending` until its lease runs out, then any instance takes it again: at least once,
//! never lost.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use portico_console::messaging::{delivery_body, DEFAULT_RETRY_SCHEDULE};
use portico_core::{
    domain::TargetPolicy,
    id::new_id,
    time::now_ms,
    Error,
};
use portico_signing::webhook::{signature_header, WebhookKey};
use portico_store::messaging::{self as store, AttemptRecord, Claimed, Outcome, SubscriptionRecord};
use rand::Rng;
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::{ingress::EventIn, topics::SUBSCRIPTION_DISABLED, Messaging};

/// Response bodies kept in the attempt log are cut to this many bytes.
pub const MAX_LOGGED_RESPONSE: usize = 4096;
/// A due delivery that must wait (strict order, or its subscription at its cap) is looked
/// at again this much later.
const DEFER_MS: i64 = 1000;
/// `Retry-After` is honoured up to a day.
const MAX_RETRY_AFTER_SECS: u64 = 86_400;

/// What an attempt needs of its subscription, loaded once per claimed batch.
struct Sub {
    record: SubscriptionRecord,
    keys: Vec<WebhookKey>,
    schedule: Vec<u64>,
}

/// This instance's attempt slots, and the way ingress hands over the deliveries it
/// claimed itself as it stored them (see [`crate::ingress`]). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Slots {
    slots: Arc<Semaphore>,
    handoff: mpsc::UnboundedSender<Vec<Ready>>,
}

/// A claimed delivery with the attempt slot it will run in.
pub(crate) type Ready = (Claimed, OwnedSemaphorePermit);

impl Slots {
    pub fn new(concurrency: usize) -> (Slots, mpsc::UnboundedReceiver<Vec<Ready>>) {
        let (handoff, handoffs) = mpsc::unbounded_channel();
        (Slots { slots: Arc::new(Semaphore::new(concurrency)), handoff }, handoffs)
    }

    /// Takes up to `n` free attempt slots, without waiting.
    pub fn reserve(&self, n: usize) -> Vec<OwnedSemaphorePermit> {
        let mut out = Vec::with_capacity(n.min(self.slots.available_permits()));
        while out.len() < n {
            match self.slots.clone().try_acquire_owned() {
                Ok(p) => out.push(p),
                Err(_) => break,
            }
        }
        out
    }

    /// Gives the dispatcher deliveries claimed (and committed) elsewhere. If it has
    /// stopped, their leases run out and they are claimed again.
    pub fn hand_over(&self, ready: Vec<Ready>) {
        if !ready.is_empty() {
            let _ = self.handoff.send(ready);
        }
    }
}

/// Attempts deliveries until the task is aborted: those ingress hands over, and those
/// claimed from the queue (retries, deliveries that found no free slot, other
/// instances' expired leases).
pub(crate) async fn run(m: Messaging, mut handoffs: mpsc::UnboundedReceiver<Vec<Ready>>) {
    let settings = m.settings().clone();
    let policy = Arc::new(m.platform().settings().webhook_targets.clone());
    let client = match http_client((*policy).clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; deliveries stop");
            return;
        }
    };
    let slots = m.inner.slots.clone();
    let (results, outcomes) = mpsc::channel::<(Outcome, Option<Disable>)>(settings.concurrency * 2);
    let writer = tokio::spawn(write_outcomes(m.clone(), outcomes));
    let launcher = Launcher { m: m.clone(), client, policy, results };
    let handed_over = async {
        while let Some(ready) = handoffs.recv().await {
            launcher.launch(ready).await;
        }
    };
    let claimed = async {
        loop {
            if slots.slots.available_permits() == 0 {
                // Wait until an attempt ends.
                drop(slots.slots.acquire().await);
                continue;
            }
            let mut permits = slots.reserve(settings.batch_size);
            let want = permits.len();
            let claimed = match claim(&m, want).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim deliveries; trying again shortly");
                    drop(permits);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let n = claimed.len();
            launcher.launch(claimed.into_iter().zip(permits.drain(..)).collect()).await;
            drop(permits);
            if n < want {
                tokio::select! {
                    _ = m.inner.work.notified() => {}
                    _ = tokio::time::sleep(settings.poll_interval) => {}
                }
            }
            if writer.is_finished() {
                tracing::error!("the delivery result writer stopped; deliveries stop");
                return;
            }
        }
    };
    tokio::select! {
        _ = handed_over => {}
        _ = claimed => {}
    }
}

/// Starts attempts, each as its own task holding its slot until its outcome is queued
/// for the writer.
struct Launcher {
    m: Messaging,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    results: mpsc::Sender<(Outcome, Option<Disable>)>,
}

impl Launcher {
    async fn launch(&self, ready: Vec<Ready>) {
        if ready.is_empty() {
            return;
        }
        let subs = match load_subscriptions(&self.m, &ready).await {
            Ok(subs) => subs,
            Err(e) => {
                // The leases run out and the deliveries are taken again.
                tracing::warn!(error = %e, "cannot load subscriptions of claimed deliveries");
                return;
            }
        };
        for (c, permit) in ready {
            let Some(sub) = subs.get(&c.delivery.subscription_id).cloned() else { continue };
            let client = self.client.clone();
            let policy = self.policy.clone();
            let results = self.results.clone();
            let lease_until = c.delivery.lease_until.unwrap_or_default();
            tokio::spawn(async move {
                let outcome = attempt(&client, &policy, &c, &sub, lease_until).await;
                let _ = results.send(outcome).await;
                drop(permit);
            });
        }
    }
}

async fn claim(m: &Messaging, limit: usize) -> Result<Vec<Claimed>, Error> {
    let now = now_ms();
    let lease_until = now + m.settings().lease.as_millis() as i64;
    let store = m.platform().store();
    let mut tx = store.begin().await?;
    let claimed = store::claim(&mut tx, store.engine(), now, lease_until, limit, DEFER_MS).await?;
    portico_store::commit(tx).await?;
    Ok(claimed)
}

async fn load_subscriptions(m: &Messaging, ready: &[Ready]) -> Result<HashMap<String, Arc<Sub>>, Error> {
    let mut ids: Vec<String> = ready.iter().map(|(c, _)| c.delivery.subscription_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let records = {
        let mut conn = m.platform().store().read().await?;
        store::subscriptions_by_id(&mut conn, &ids).await?
    };
    let now = now_ms();
    let mut out = HashMap::with_capacity(records.len());
    for record in records {
        let keys = m.platform().signing_keys(&record, now)?;
        let schedule = match record.retry_schedule.as_deref() {
            Some(s) => portico_console::messaging::retry_schedule_of(Some(s)),
            None => m.inner.topics.get(&record.topic).await?.map(|t| t.schedule.clone()).unwrap_or_else(|| DEFAULT_RETRY_SCHEDULE.to_vec()),
        };
        out.insert(record.id.clone(), Arc::new(Sub { record, keys, schedule }));
    }
    Ok(out)
}

/// A subscription to disable along with an outcome (its receiver answered 410).
struct Disable {
    subscription: SubscriptionRecord,
    reason: String,
}

/// One attempt: POST the body with Standard Webhooks headers, then classify the answer.
async fn attempt(client: &reqwest::Client, policy: &TargetPolicy, c: &Claimed, sub: &Sub, lease_until: i64) -> (Outcome, Option<Disable>) {
    let d = &c.delivery;
    let body = delivery_body(d, &c.payload, c.event_created_at);
    let started = std::time::Instant::now();
    let at = now_ms();
    let timestamp = at / 1000;
    let url = sub.record.callback_url.clone().unwrap_or_default();
    let signature = signature_header(&sub.keys, &d.id, timestamp, body.as_bytes());
    let sent = client
        .post(&url)
        .timeout(Duration::from_millis(sub.record.timeout_ms as u64))
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(USER_AGENT, HeaderValue::from_static(concat!("Portico-Webhooks/", env!("CARGO_PKG_VERSION"))))
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send();
    let result = match check_literal_target(policy, &url) {
        Err(e) => Err(e),
        Ok(()) => match sent.await {
            Ok(mut res) => {
                let status = res.status().as_u16();
                let retry_after = res.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
                let mut kept = Vec::new();
                // Read at most what the log keeps; a slow body counts against the timeout.
                while kept.len() < MAX_LOGGED_RESPONSE {
                    match res.chunk().await {
                        Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(MAX_LOGGED_RESPONSE - kept.len())]),
                        _ => break,
                    }
                }
                Ok((status, retry_after, String::from_utf8_lossy(&kept).into_owned()))
            }
            Err(e) => Err(describe(&e, sub.record.timeout_ms)),
        },
    };
    let latency_ms = started.elapsed().as_millis() as i64;
    let mut attempt = AttemptRecord {
        id: new_id("att"),
        delivery_id: d.id.clone(),
        merchant_id: d.merchant_id.clone(),
        at,
        outcome: String::new(),
        status_code: None,
        latency_ms,
        response: None,
        error: None,
    };
    let mut disable = None;
    let (status, next_at, retry_index) = match result {
        Ok((code, _, response)) if (200..300).contains(&code) => {
            attempt.status_code = Some(code as i64);
            attempt.response = Some(response);
            ("sent", None, d.retry_index)
        }
        Ok((410, _, response)) => {
            attempt.status_code = Some(410);
            attempt.response = Some(response);
            attempt.error = Some("the receiver answered 410 Gone: the subscription is disabled".into());
            disable = Some(Disable { subscription: sub.record.clone(), reason: "the receiver answered 410 Gone".into() });
            ("failed", None, d.retry_index)
        }
        Ok((code, retry_after, response)) => {
            attempt.status_code = Some(code as i64);
            attempt.response = Some(response);
            attempt.error = Some(format!("the receiver answered {code}"));
            let honoured = if code == 429 || code == 503 { retry_after.map(|s| s.min(MAX_RETRY_AFTER_SECS)) } else { None };
            retry(&sub.schedule, d.retry_index, at, honoured)
        }
        Err(error) => {
            attempt.error = Some(error);
            retry(&sub.schedule, d.retry_index, at, None)
        }
    };
    attempt.outcome = match status {
        "queued" => "retry",
        s => s,
    }
    .to_string();
    let outcome = Outcome {
        attempt,
        subscription_id: d.subscription_id.clone(),
        lease_until,
        status,
        next_at,
        retry_index,
        business_key: d.business_key.clone(),
        ordered: d.ordered != 0,
    };
    (outcome, disable)
}

/// The next attempt after a failure: the schedule's wait (±20 % jitter) or the
/// receiver's `Retry-After`; `failed` once the schedule is used up.
fn retry(schedule: &[u64], retry_index: i64, now: i64, retry_after: Option<u64>) -> (&'static str, Option<i64>, i64) {
    let Some(wait) = schedule.get(retry_index.max(0) as usize) else {
        return ("failed", None, retry_index);
    };
    let wait_ms = match retry_after {
        Some(secs) => secs as i64 * 1000,
        None => {
            let jitter: f64 = rand::thread_rng().gen_range(0.8..=1.2);
            (*wait as f64 * 1000.0 * jitter) as i64
        }
    };
    ("queued", Some(now + wait_ms.max(0)), retry_index + 1)
}

fn describe(e: &reqwest::Error, timeout_ms: i64) -> String {
    use std::error::Error as _;
    if e.is_timeout() {
        return format!("no answer within {timeout_ms} ms");
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_connect() {
        format!("cannot connect: {text}")
    } else {
        text
    }
}

/// Address literals skip DNS, so they are checked here (names are checked as they
/// resolve, in [`GuardedResolver`]).
fn check_literal_target(policy: &TargetPolicy, url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid callback URL: {e}"))?;
    policy.check_url(&parsed).map_err(|e| e.to_string())
}

/// The webhook client: no redirects (a redirect could lead anywhere), connection reuse,
/// and a resolver that drops private addresses unless an operator allowed them.
fn http_client(policy: TargetPolicy) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .connect_timeout(Duration::from_secs(10))
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .build()
}

struct GuardedResolver {
    policy: TargetPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| policy.permits(a.ip())).collect();
            if allowed.is_empty() {
                let why = format!("{host} resolves only to private, loopback, link-local or reserved addresses (messaging.allowed_private_targets)");
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Commits outcomes in batches; disables subscriptions that answered 410. On PostgreSQL
/// several batches commit at once (their rows differ, and commits share the log's
/// flushes), on up to half the pool's connections (at most 8); SQLite has one writer, so
/// one at a time.
async fn write_outcomes(m: Messaging, mut rx: mpsc::Receiver<(Outcome, Option<Disable>)>) {
    let at_once = (m.platform().store().write_connections() as usize / 2).clamp(1, 8);
    let mut running = tokio::task::JoinSet::new();
    let mut batch = Vec::with_capacity(512);
    while rx.recv_many(&mut batch, 512).await > 0 {
        while running.len() >= at_once {
            reap(running.join_next().await);
        }
        let (outcomes, disables): (Vec<Outcome>, Vec<Option<Disable>>) = batch.drain(..).unzip();
        let disables: Vec<Disable> = disables.into_iter().flatten().collect();
        let m = m.clone();
        running.spawn(async move {
            while let Err(e) = write_batch(&m, &outcomes, &disables).await {
                // Keep the outcomes until the database takes them; if the leases run
                // out first, the deliveries are attempted again (at least once).
                tracing::warn!(error = %e, "cannot record delivery outcomes; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // Outcomes may have freed strict-order successors or in-flight slots.
            m.inner.work.notify_one();
            m.inner.committed.send_modify(|n| *n = n.wrapping_add(1));
        });
    }
    while let Some(done) = running.join_next().await {
        reap(Some(done));
    }
}

/// Logs an outcome batch whose task panicked (its deliveries stay `sending` and are
/// attempted again when their leases run out).
fn reap(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done {
        tracing::error!(error = %e, "an outcome batch was not recorded; its deliveries are retried after their lease");
    }
}

async fn write_batch(m: &Messaging, outcomes: &[Outcome], disables: &[Disable]) -> Result<(), Error> {
    let store = m.platform().store();
    let mut tx = store.begin().await?;
    store::record_outcomes(&mut tx, store.engine(), outcomes).await?;
    let mut disabled = Vec::new();
    for d in disables {
        if disable_in(&mut tx, &d.subscription, &d.reason).await? {
            disabled.push(d);
        }
    }
    portico_store::commit(tx).await?;
    for d in disabled {
        announce_disabled(m, &d.subscription, &d.reason).await;
    }
    Ok(())
}

/// Disables a subscription and writes its merchant's owners a mail; returns whether it
/// was active. Call inside a transaction, then [`announce_disabled`] after the commit.
async fn disable_in(tx: &mut portico_store::Conn, s: &SubscriptionRecord, reason: &str) -> Result<bool, Error> {
    let now = now_ms();
    if !store::disable_subscription(tx, &s.id, reason, now).await? {
        return Ok(false);
    }
    let subject = format!("Portico: webhook subscription {} was disabled", s.id);
    let body = format!(
        "Deliveries of topic {} to {} for app {} have stopped: {reason}.\n\
         Queued deliveries wait. Fix the receiver, then enable the subscription again in the console \
         (POST /api/v1/merchants/{}/subscriptions/{}/enable); failed ones can be recovered.\n",
        s.topic,
        s.callback_url.as_deref().unwrap_or("(no callback URL)"),
        s.app_id,
        s.merchant_id,
        s.id
    );
    for to in store::owner_emails(tx, &s.merchant_id).await? {
        store::insert_email(tx, &new_id("eml"), &s.merchant_id, &to, &subject, &body, now).await?;
    }
    Ok(true)
}

/// The operational event to the merchant (topic `portico.subscription_disabled`).
async fn announce_disabled(m: &Messaging, s: &SubscriptionRecord, reason: &str) {
    tracing::info!(subscription = %s.id, merchant = %s.merchant_id, reason, "disabled a webhook subscription");
    let event = EventIn {
        topic: SUBSCRIPTION_DISABLED.into(),
        merchant_id: Some(s.merchant_id.clone()),
        app_id: None,
        business_key: Some(s.id.clone()),
        payload: serde_json::json!({
            "subscription_id": s.id,
            "app_id": s.app_id,
            "topic": s.topic,
            "callback_url": s.callback_url,
            "reason": reason,
        }),
        idempotency_key: None,
    };
    if let Err(e) = m.publish(vec![event], "platform").await {
        tracing::warn!(error = %e, subscription = %s.id, "cannot publish the subscription-disabled event");
    }
}

/// Background upkeep: gives back deliveries whose lease ran out (every second) and
/// disables subscriptions that failed without a success for too long.
pub(crate) async fn sweep(m: Messaging) {
    let disable_after = m.settings().disable_after.as_millis() as i64;
    let health_every = (disable_after / 4).clamp(1000, 60_000);
    let mut last_health = 0i64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = now_ms();
        let store = m.platform().store();
        let released = async {
            let mut tx = store.begin().await?;
            let n = store::release_expired_leases(&mut tx, now).await?;
            portico_store::commit(tx).await?;
            Ok::<_, Error>(n)
        }
        .await;
        match released {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(deliveries = n, "took back deliveries whose lease ran out");
                m.inner.work.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "cannot release expired delivery leases"),
        }
        if now - last_health >= health_every {
            last_health = now;
            if let Err(e) = disable_failing(&m, now - disable_after).await {
                tracing::warn!(error = %e, "cannot check failing subscriptions");
            }
        }
    }
}

async fn disable_failing(m: &Messaging, before: i64) -> Result<(), Error> {
    let failing = {
        let mut conn = m.platform().store().read().await?;
        store::failing_since_before(&mut conn, before).await?
    };
    let days = m.settings().disable_after.as_secs_f64() / 86_400.0;
    let reason = if days >= 1.0 { format!("no successful delivery for {days:.0} days") } else { format!("no successful delivery for {} s", m.settings().disable_after.as_secs()) };
    for s in failing {
        let mut tx = m.platform().store().begin().await?;
        let done = disable_in(&mut tx, &s, &reason).await?;
        portico_store::commit(tx).await?;
        if done {
            announce_disabled(m, &s, &reason).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_schedule_with_jitter_then_fail() {
        let schedule = [5, 300];
        let (s, at, i) = retry(&schedule, 0, 0, None);
        assert_eq!((s, i), ("queued", 1));
        assert!((4000..=6000).contains(&at.unwrap()), "{at:?}");
        let (s, at, _) = retry(&schedule, 1, 0, None);
        assert_eq!(s, "queued");
        assert!((240_000..=360_000).contains(&at.unwrap()));
        assert_eq!(retry(&schedule, 2, 0, None), ("failed", None, 2));
        // Retry-After replaces the schedule's wait.
        assert_eq!(retry(&schedule, 0, 1000, Some(42)), ("queued", Some(43_000), 1));
    }
}

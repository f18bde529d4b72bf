//! Message push: `topics`, `subscriptions`, `events`, `event_keys`, `deliveries` (the
//! queue) and `delivery_attempts`. Queries on a merchant's objects take the merchant id;
//! the ones an app uses take the app id.

use portico_core::Error;
use std::collections::HashMap;

use sqlx::{any::AnyRow, AnyConnection, Row};

use crate::{col, multi_row_insert, DbResult, Engine};

// ---------------------------------------------------------------- topics

#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub name: String,
    pub group_name: String,
    pub description: String,
    pub payload_schema: Option<String>,
    pub max_payload_bytes: i64,
    /// JSON array of seconds between attempts; `None`: the platform's schedule.
    pub retry_schedule: Option<String>,
    /// `published` or `retired`.
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const TOPIC_COLUMNS: &str = "name, group_name, description, payload_schema, max_payload_bytes, retry_schedule, state, created_at, updated_at";

impl TopicRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(TopicRecord {
            name: col(r, "name")?,
            group_name: col(r, "group_name")?,
            description: col(r, "description")?,
            payload_schema: col(r, "payload_schema")?,
            max_payload_bytes: col(r, "max_payload_bytes")?,
            retry_schedule: col(r, "retry_schedule")?,
            state: col(r, "state")?,
            created_at: col(r, "created_at")?,
            updated_at: col(r, "updated_at")?,
        })
    }
}

/// Creates a topic or replaces everything but its creation time.
pub async fn upsert_topic(conn: &mut AnyConnection, t: &TopicRecord) -> Result<(), Error> {
    let done = sqlx::query(
        "UPDATE topics SET group_name = $1, description = $2, payload_schema = $3, max_payload_bytes = $4, retry_schedule = $5, \
         state = $6, updated_at = $7 WHERE name = $8",
    )
    .bind(&t.group_name)
    .bind(&t.description)
    .bind(&t.payload_schema)
    .bind(t.max_payload_bytes)
    .bind(&t.retry_schedule)
    .bind(&t.state)
    .bind(t.updated_at)
    .bind(&t.name)
    .execute(&mut *conn)
    .await
    .db()?;
    if done.rows_affected() == 0 {
        sqlx::query(&format!("INSERT INTO topics ({TOPIC_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"))
            .bind(&t.name)
            .bind(&t.group_name)
            .bind(&t.description)
            .bind(&t.payload_schema)
            .bind(t.max_payload_bytes)
            .bind(&t.retry_schedule)
            .bind(&t.state)
            .bind(t.created_at)
            .bind(t.updated_at)
            .execute(conn)
            .await
            .db()?;
    }
    Ok(())
}

pub async fn topic(conn: &mut AnyConnection, name: &str) -> Result<Option<TopicRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {TOPIC_COLUMNS} FROM topics WHERE name = $1")).bind(name).fetch_optional(conn).await.db()?;
    row.as_ref().map(TopicRecord::from_row).transpose()
}

pub async fn topics(conn: &mut AnyConnection) -> Result<Vec<TopicRecord>, Error> {
    let rows = sqlx::query(&format!("SELECT {TOPIC_COLUMNS} FROM topics ORDER BY name")).fetch_all(conn).await.db()?;
    rows.iter().map(TopicRecord::from_row).collect()
}

// ---------------------------------------------------------------- subscriptions

#[derive(Debug, Clone)]
pub struct SubscriptionRecord {
    pub id: String,
    pub merchant_id: String,
    pub app_id: String,
    pub topic: String,
    /// `None`: the app polls (or listens on the live channel) instead.
    pub callback_url: Option<String>,
    pub secret_sealed: String,
    pub previous_secret_sealed: Option<String>,
    pub previous_secret_until: Option<i64>,
    pub strict_order: i64,
    pub max_in_flight: i64,
    pub timeout_ms: i64,
    pub retry_schedule: Option<String>,
    /// `active` or `disabled`.
    pub state: String,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<i64>,
    pub last_success_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const SUBSCRIPTION_COLUMNS: &str = "id, merchant_id, app_id, topic, callback_url, secret_sealed, previous_secret_sealed, previous_secret_until, \
    strict_order, max_in_flight, timeout_ms, retry_schedule, state, disabled_reason, failing_since, last_success_at, created_at, updated_at";

impl SubscriptionRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(SubscriptionRecord {
            id: col(r, "id")?,
            merchant_id: col(r, "merchant_id")?,
            app_id: col(r, "app_id")?,
            topic: col(r, "topic")?,
            callback_url: col(r, "callback_url")?,
            secret_sealed: col(r, "secret_sealed")?,
            previous_secret_sealed: col(r, "previous_secret_sealed")?,
            previous_secret_until: col(r, "previous_secret_until")?,
            strict_order: col(r, "strict_order")?,
            max_in_flight: col(r, "max_in_flight")?,
            timeout_ms: col(r, "timeout_ms")?,
            retry_schedule: col(r, "retry_schedule")?,
            state: col(r, "state")?,
            disabled_reason: col(r, "disabled_reason")?,
            failing_since: col(r, "failing_since")?,
            last_success_at: col(r, "last_success_at")?,
            created_at: col(r, "created_at")?,
            updated_at: col(r, "updated_at")?,
        })
    }
}

pub async fn insert_subscription(conn: &mut AnyConnection, s: &SubscriptionRecord) -> Result<(), Error> {
    sqlx::query(&format!("INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)"))
        .bind(&s.id)
        .bind(&s.merchant_id)
        .bind(&s.app_id)
        .bind(&s.topic)
        .bind(&s.callback_url)
        .bind(&s.secret_sealed)
        .bind(&s.previous_secret_sealed)
        .bind(s.previous_secret_until)
        .bind(s.strict_order)
        .bind(s.max_in_flight)
        .bind(s.timeout_ms)
        .bind(&s.retry_schedule)
        .bind(&s.state)
        .bind(&s.disabled_reason)
        .bind(s.failing_since)
        .bind(s.last_success_at)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// Saves the fields a merchant or the delivery engine may change.
pub async fn update_subscription(conn: &mut AnyConnection, s: &SubscriptionRecord) -> Result<(), Error> {
    sqlx::query(
        "UPDATE subscriptions SET callback_url = $1, secret_sealed = $2, previous_secret_sealed = $3, previous_secret_until = $4, \
         strict_order = $5, max_in_flight = $6, timeout_ms = $7, retry_schedule = $8, state = $9, disabled_reason = $10, \
         failing_since = $11, updated_at = $12 WHERE id = $13 AND merchant_id = $14",
    )
    .bind(&s.callback_url)
    .bind(&s.secret_sealed)
    .bind(&s.previous_secret_sealed)
    .bind(s.previous_secret_until)
    .bind(s.strict_order)
    .bind(s.max_in_flight)
    .bind(s.timeout_ms)
    .bind(&s.retry_schedule)
    .bind(&s.state)
    .bind(&s.disabled_reason)
    .bind(s.failing_since)
    .bind(s.updated_at)
    .bind(&s.id)
    .bind(&s.merchant_id)
    .execute(conn)
    .await
    .db()?;
    Ok(())
}

pub async fn subscription(conn: &mut AnyConnection, merchant_id: &str, id: &str) -> Result<Option<SubscriptionRecord>, Error> {
    let row = sqlx::query(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1 AND merchant_id = $2"))
        .bind(id)
        .bind(merchant_id)
        .fetch_optional(conn)
        .await
        .db()?;
    row.as_ref().map(SubscriptionRecord::from_row).transpose()
}

/// Subscriptions by id, whoever owns them: for the delivery engine only.
pub async fn subscriptions_by_id(conn: &mut AnyConnection, ids: &[String]) -> Result<Vec<SubscriptionRecord>, Error> {
    let rows = select_in(conn, &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id"), ids).await?;
    rows.iter().map(SubscriptionRecord::from_row).collect()
}

/// A merchant's subscriptions, optionally of one app.
pub async fn subscriptions(conn: &mut AnyConnection, merchant_id: &str, app_id: Option<&str>) -> Result<Vec<SubscriptionRecord>, Error> {
    let rows = sqlx::query(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE merchant_id = $1 AND ($2 IS NULL OR app_id = $2) ORDER BY id"))
        .bind(merchant_id)
        .bind(app_id)
        .fetch_all(conn)
        .await
        .db()?;
    rows.iter().map(SubscriptionRecord::from_row).collect()
}

/// What ingress needs of a subscription an event fans out to.
#[derive(Debug, Clone)]
pub struct Target {
    pub subscription_id: String,
    pub merchant_id: String,
    pub app_id: String,
    /// Whether workers push its deliveries (it has a callback URL and is active);
    /// otherwise they wait, for polling or for the subscription to be enabled again.
    pub push: bool,
    pub strict_order: bool,
    /// Its deliveries being attempted at once, at most.
    pub max_in_flight: i64,
}

/// Subscriptions to `topic` (disabled ones too: their deliveries wait), optionally
/// narrowed to one merchant and/or one app; with `group`, only those whose app still
/// holds that grant.
pub async fn targets(conn: &mut AnyConnection, topic: &str, group: Option<&str>, merchant_id: Option<&str>, app_id: Option<&str>) -> Result<Vec<Target>, Error> {
    let rows = sqlx::query(
        "SELECT s.id, s.merchant_id, s.app_id, s.callback_url, s.strict_order, s.max_in_flight, s.state FROM subscriptions s \
         WHERE s.topic = $1 AND ($3 IS NULL OR s.merchant_id = $3) AND ($4 IS NULL OR s.app_id = $4) \
         AND ($2 IS NULL OR EXISTS (SELECT 1 FROM app_grants g WHERE g.app_id = s.app_id AND g.scope = $2)) ORDER BY s.id",
    )
    .bind(topic)
    .bind(group)
    .bind(merchant_id)
    .bind(app_id)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter()
        .map(|r| {
            Ok(Target {
                subscription_id: col(r, "id")?,
                merchant_id: col(r, "merchant_id")?,
                app_id: col(r, "app_id")?,
                push: col::<Option<String>>(r, "callback_url")?.is_some() && col::<String>(r, "state")? == "active",
                strict_order: col::<i64>(r, "strict_order")? != 0,
                max_in_flight: col(r, "max_in_flight")?,
            })
        })
        .collect()
}

/// Parks (`next_at` cleared) the queued deliveries of a subscription that stopped
/// pushing, so that workers do not keep scanning them; or, with `now`, makes them due.
pub async fn set_queued_due(conn: &mut AnyConnection, subscription_id: &str, now: Option<i64>) -> Result<u64, Error> {
    let done = sqlx::query("UPDATE deliveries SET next_at = $1 WHERE subscription_id = $2 AND status = 'queued'")
        .bind(now)
        .bind(subscription_id)
        .execute(conn)
        .await
        .db()?;
    Ok(done.rows_affected())
}

/// Subscriptions that have failed without a single success since before `before`.
pub async fn failing_since_before(conn: &mut AnyConnection, before: i64) -> Result<Vec<SubscriptionRecord>, Error> {
    let rows = sqlx::query(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE state = 'active' AND failing_since IS NOT NULL AND failing_since < $1"))
        .bind(before)
        .fetch_all(conn)
        .await
        .db()?;
    rows.iter().map(SubscriptionRecord::from_row).collect()
}

// ---------------------------------------------------------------- events and deliveries

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: String,
    pub topic: String,
    pub target_merchant_id: Option<String>,
    pub target_app_id: Option<String>,
    pub business_key: Option<String>,
    pub seq: Option<i64>,
    /// The payload as compact JSON text.
    pub payload: String,
    pub idempotency_key: Option<String>,
    /// `http`, `amqp` or `platform`.
    pub source: String,
    pub created_at: i64,
}

const EVENT_COLUMNS: &str = "id, topic, target_merchant_id, target_app_id, business_key, seq, payload, idempotency_key, source, created_at";

impl EventRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(EventRecord {
            id: col(r, "id")?,
            topic: col(r, "topic")?,
            target_merchant_id: col(r, "target_merchant_id")?,
            target_app_id: col(r, "target_app_id")?,
            business_key: col(r, "business_key")?,
            seq: col(r, "seq")?,
            payload: col(r, "payload")?,
            idempotency_key: col(r, "idempotency_key")?,
            source: col(r, "source")?,
            created_at: col(r, "created_at")?,
        })
    }
}

pub async fn insert_events(conn: &mut AnyConnection, engine: Engine, events: &[EventRecord]) -> Result<(), Error> {
    for chunk in events.chunks(50) {
        let sql = multi_row_insert(engine, &format!("events ({EVENT_COLUMNS})"), chunk.len(), 10);
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(&e.id)
                .bind(&e.topic)
                .bind(&e.target_merchant_id)
                .bind(&e.target_app_id)
                .bind(&e.business_key)
                .bind(e.seq)
                .bind(&e.payload)
                .bind(&e.idempotency_key)
                .bind(&e.source)
                .bind(e.created_at);
        }
        q.execute(&mut *conn).await.db()?;
    }
    Ok(())
}

/// The events already stored under any of `keys`, by idempotency key.
pub async fn events_by_idempotency_keys(conn: &mut AnyConnection, keys: &[&str]) -> Result<HashMap<String, EventRecord>, Error> {
    let mut out = HashMap::new();
    for r in select_in(conn, &format!("SELECT {EVENT_COLUMNS} FROM events WHERE idempotency_key"), keys).await? {
        let e = EventRecord::from_row(&r)?;
        out.insert(e.idempotency_key.clone().unwrap_or_default(), e);
    }
    Ok(out)
}

/// The next sequence number of a business key (1 for its first event).
pub async fn next_seq(conn: &mut AnyConnection, business_key: &str) -> Result<i64, Error> {
    let row = sqlx::query(
        "INSERT INTO event_keys (business_key, seq) VALUES ($1, 1) \
         ON CONFLICT (business_key) DO UPDATE SET seq = event_keys.seq + 1 RETURNING seq",
    )
    .bind(business_key)
    .fetch_one(conn)
    .await
    .db()?;
    row.try_get::<i64, _>(0).db()
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub subscription_id: String,
    pub merchant_id: String,
    pub app_id: String,
    pub topic: String,
    pub business_key: Option<String>,
    pub seq: Option<i64>,
    pub ordered: i64,
    /// `queued`, `sending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub retry_index: i64,
    /// When a worker may take it; `None` when nothing pushes it (polling only, or its
    /// subscription is disabled).
    pub next_at: Option<i64>,
    pub lease_until: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const DELIVERY_COLUMNS: &str = "id, event_id, subscription_id, merchant_id, app_id, topic, business_key, seq, ordered, status, attempts, \
    retry_index, next_at, lease_until, last_attempt_at, last_status, last_error, created_at, updated_at";

impl DeliveryRecord {
    fn from_row(r: &AnyRow) -> Result<Self, Error> {
        Ok(DeliveryRecord {
            id: col(r, "id")?,
            event_id: col(r, "event_id")?,
            subscription_id: col(r, "subscription_id")?,
            merchant_id: col(r, "merchant_id")?,
            app_id: col(r, "app_id")?,
            topic: col(r, "topic")?,
            business_key: col(r, "business_key")?,
            seq: col(r, "seq")?,
            ordered: col(r, "ordered")?,
            status: col(r, "status")?,
            attempts: col(r, "attempts")?,
            retry_index: col(r, "retry_index")?,
            next_at: col(r, "next_at")?,
            lease_until: col(r, "lease_until")?,
            last_attempt_at: col(r, "last_attempt_at")?,
            last_status: col(r, "last_status")?,
            last_error: col(r, "last_error")?,
            created_at: col(r, "created_at")?,
            updated_at: col(r, "updated_at")?,
        })
    }
}

pub async fn insert_deliveries(conn: &mut AnyConnection, engine: Engine, deliveries: &[DeliveryRecord]) -> Result<(), Error> {
    for chunk in deliveries.chunks(40) {
        let sql = multi_row_insert(engine, &format!("deliveries ({DELIVERY_COLUMNS})"), chunk.len(), 19);
        let mut q = sqlx::query(&sql);
        for d in chunk {
            q = q
                .bind(&d.id)
                .bind(&d.event_id)
                .bind(&d.subscription_id)
                .bind(&d.merchant_id)
                .bind(&d.app_id)
                .bind(&d.topic)
                .bind(&d.business_key)
                .bind(d.seq)
                .bind(d.ordered)
                .bind(&d.status)
                .bind(d.attempts)
                .bind(d.retry_index)
                .bind(d.next_at)
                .bind(d.lease_until)
                .bind(d.last_attempt_at)
                .bind(d.last_status)
                .bind(&d.last_error)
                .bind(d.created_at)
                .bind(d.updated_at);
        }
        q.execute(&mut *conn).await.db()?;
    }
    Ok(())
}

/// The deliveries of one event, as ingress reports them.
pub async fn deliveries_of_event(conn: &mut AnyConnection, event_id: &str) -> Result<Vec<DeliveryRecord>, Error> {
    let rows = sqlx::query(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = $1 ORDER BY id")).bind(event_id).fetch_all(conn).await.db()?;
    rows.iter().map(DeliveryRecord::from_row).collect()
}

/// A claimed delivery with what an attempt needs.
pub type Claimed = DeliveryWithPayload;

/// Claims up to `limit` due deliveries for one worker until `lease_until`: `queued` with
/// `next_at <= now`, of an active subscription, not beyond the subscription's in-flight
/// cap, and (for strict order) not behind an unfinished delivery of the same key. On
/// PostgreSQL concurrent claimers skip each other's rows (`FOR UPDATE SKIP LOCKED`); on
/// SQLite the single writer serializes claims. Call inside a transaction.
///
/// The candidates come from the head of the due index alone (a plan that does not
/// depend on table statistics, which lag behind a fast-moving queue). Candidates that
/// must wait (their key's predecessor is unfinished, or their subscription is at its
/// cap) are moved back by `defer_ms`, so that they do not clog the head for everyone
/// else; a finished predecessor wakes its successors at once ([`record_outcomes`]).
pub async fn claim(conn: &mut AnyConnection, engine: Engine, now: i64, lease_until: i64, limit: usize, defer_ms: i64) -> Result<Vec<Claimed>, Error> {
    let lock = match engine {
        Engine::Postgres => " FOR UPDATE SKIP LOCKED",
        Engine::Sqlite => "",
    };
    let sql = format!(
        "SELECT c.id, c.subscription_id, c.business_key, c.seq, c.ordered, s.max_in_flight, s.state FROM \
         (SELECT id, subscription_id, business_key, seq, ordered, next_at FROM deliveries \
          WHERE status = 'queued' AND next_at <= $1 ORDER BY next_at LIMIT $2{lock}) c \
         JOIN subscriptions s ON s.id = c.subscription_id ORDER BY c.next_at"
    );
    let rows = sqlx::query(&sql).bind(now).bind((limit * 2) as i64).fetch_all(&mut *conn).await.db()?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    struct Candidate {
        id: String,
        sub: String,
        key: Option<String>,
        seq: Option<i64>,
        ordered: bool,
        cap: i64,
        active: bool,
    }
    let mut candidates = Vec::with_capacity(rows.len());
    for r in &rows {
        candidates.push(Candidate {
            id: col(r, "id")?,
            sub: col(r, "subscription_id")?,
            key: col(r, "business_key")?,
            seq: col(r, "seq")?,
            ordered: col::<i64>(r, "ordered")? != 0,
            cap: col(r, "max_in_flight")?,
            active: col::<String>(r, "state")? == "active",
        });
    }
    let mut in_flight = in_flight_counts(&mut *conn, engine).await?;
    let mut chosen: Vec<String> = Vec::with_capacity(limit);
    let mut deferred: Vec<String> = Vec::new();
    let mut parked: Vec<String> = Vec::new();
    // Strict order: the smallest unfinished seq of each (subscription, key) goes first.
    let mut ordered_heads: HashMap<(String, String), Option<i64>> = HashMap::new();
    for c in candidates.iter().filter(|c| c.ordered && c.key.is_some()) {
        let k = (c.sub.clone(), c.key.clone().unwrap_or_default());
        if let std::collections::hash_map::Entry::Vacant(slot) = ordered_heads.entry(k) {
            let (sub, key) = slot.key();
            let row = sqlx::query(
                "SELECT MIN(seq) AS seq FROM deliveries WHERE subscription_id = $1 AND business_key = $2 AND status IN ('queued', 'sending')",
            )
            .bind(sub)
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .db()?;
            slot.insert(col::<Option<i64>>(&row, "seq")?);
        }
    }
    for c in &candidates {
        if !c.active {
            parked.push(c.id.clone());
            continue;
        }
        if let (true, Some(key)) = (c.ordered, &c.key) {
            // Only the key's smallest unfinished seq may go (sequence numbers are unique
            // per key, so at most one candidate is the head).
            let head = ordered_heads.get(&(c.sub.clone(), key.clone())).copied().flatten();
            if head != c.seq {
                deferred.push(c.id.clone());
                continue;
            }
        }
        let n = in_flight.entry(c.sub.clone()).or_insert(0);
        if *n < c.cap && chosen.len() < limit {
            *n += 1;
            chosen.push(c.id.clone());
        } else if *n >= c.cap {
            deferred.push(c.id.clone());
        }
    }
    for (ids, next_at) in [(&deferred, Some(now + defer_ms)), (&parked, None)] {
        for chunk in ids.chunks(200) {
            let sql = format!("UPDATE deliveries SET next_at = $1 WHERE id IN ({})", placeholders(2, chunk.len()));
            let mut q = sqlx::query(&sql).bind(next_at);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut *conn).await.db()?;
        }
    }
    // Two statements per chunk, each by primary key (a join here is at the mercy of
    // the planner's statistics, which a fast queue leaves behind).
    let mut out = Vec::with_capacity(chosen.len());
    for chunk in chosen.chunks(200) {
        let sql = format!(
            "UPDATE deliveries SET status = 'sending', lease_until = $1, updated_at = $2 WHERE id IN ({}) RETURNING {DELIVERY_COLUMNS}",
            placeholders(3, chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(lease_until).bind(now);
        for id in chunk {
            q = q.bind(id);
        }
        let claimed: Vec<DeliveryRecord> = q.fetch_all(&mut *conn).await.db()?.iter().map(DeliveryRecord::from_row).collect::<Result<_, _>>()?;
        out.extend(with_payloads(&mut *conn, claimed).await?);
    }
    out.sort_by(|a, b| a.delivery.next_at.cmp(&b.delivery.next_at).then_with(|| a.delivery.id.cmp(&b.delivery.id)));
    Ok(out)
}

/// Deliveries being attempted now (`sending`), by any worker, per subscription: what
/// the in-flight cap counts. Read from the small partial index of `sending` rows alone
/// (SQLite is told so; left to itself it may walk every delivery of the subscription).
pub async fn in_flight_counts(conn: &mut AnyConnection, engine: Engine) -> Result<HashMap<String, i64>, Error> {
    let indexed = match engine {
        Engine::Sqlite => " INDEXED BY deliveries_leased",
        Engine::Postgres => "",
    };
    let sql = format!("SELECT subscription_id, COUNT(*) AS n FROM deliveries{indexed} WHERE status = 'sending' AND lease_until >= 0 GROUP BY subscription_id");
    let mut out = HashMap::new();
    for r in sqlx::query(&sql).fetch_all(conn).await.db()? {
        out.insert(col(&r, "subscription_id")?, col(&r, "n")?);
    }
    Ok(out)
}

/// Gives back deliveries whose lease ran out (their worker died or hung): they are due
/// again at once. Returns how many.
pub async fn release_expired_leases(conn: &mut AnyConnection, now: i64) -> Result<u64, Error> {
    let done = sqlx::query(
        "UPDATE deliveries SET status = 'queued', next_at = $1, lease_until = NULL, updated_at = $1 WHERE status = 'sending' AND lease_until < $1",
    )
    .bind(now)
    .execute(conn)
    .await
    .db()?;
    Ok(done.rows_affected())
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub id: String,
    pub delivery_id: String,
    pub merchant_id: String,
    pub at: i64,
    /// `sent`, `retry`, `failed`, or `acknowledged` (by the polling API).
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub response: Option<String>,
    pub error: Option<String>,
}

const ATTEMPT_COLUMNS: &str = "id, delivery_id, merchant_id, at, outcome, status_code, latency_ms, response, error";

/// The result of one attempt, to be written back.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub attempt: AttemptRecord,
    pub subscription_id: String,
    /// The lease the attempt ran under: a delivery whose lease was taken over by another
    /// worker is not overwritten (that worker's result stands).
    pub lease_until: i64,
    /// `sent`, `queued` (retry at `next_at`) or `failed`.
    pub status: &'static str,
    pub next_at: Option<i64>,
    pub retry_index: i64,
    /// The delivery's key and whether its subscription keeps strict order: a finished
    /// one wakes the key's next delivery.
    pub business_key: Option<String>,
    pub ordered: bool,
}

/// Writes attempts back: each delivery's new state, its attempt log, and its
/// subscription's health. An outcome whose lease was taken over by another worker is
/// dropped whole (that worker's result stands). Call inside a transaction.
pub async fn record_outcomes(conn: &mut AnyConnection, engine: Engine, outcomes: &[Outcome]) -> Result<(), Error> {
    // One statement per hundred outcomes (`UPDATE … FROM (VALUES …)`, both engines),
    // returning the ids whose lease still held.
    let mut held: std::collections::HashSet<String> = std::collections::HashSet::with_capacity(outcomes.len());
    for chunk in outcomes.chunks(100) {
        let sql = format!(
            "UPDATE deliveries SET status = v.column2, attempts = attempts + 1, retry_index = v.column3, next_at = v.column4, lease_until = NULL, \
             last_attempt_at = v.column5, last_status = v.column6, last_error = v.column7, updated_at = v.column5 \
             FROM (VALUES {}) AS v WHERE deliveries.id = v.column1 AND deliveries.status = 'sending' AND deliveries.lease_until = v.column8 \
             RETURNING deliveries.id",
            crate::values_list(engine, chunk.len(), 8)
        );
        let mut q = sqlx::query(&sql);
        for o in chunk {
            q = q
                .bind(&o.attempt.delivery_id)
                .bind(o.status)
                .bind(o.retry_index)
                .bind(o.next_at)
                .bind(o.attempt.at)
                .bind(o.attempt.status_code)
                .bind(&o.attempt.error)
                .bind(o.lease_until);
        }
        for r in q.fetch_all(&mut *conn).await.db()? {
            held.insert(r.try_get::<String, _>(0).db()?);
        }
    }
    let applied: Vec<&Outcome> = outcomes.iter().filter(|o| held.contains(&o.attempt.delivery_id)).collect();
    let attempts: Vec<&AttemptRecord> = applied.iter().map(|o| &o.attempt).collect();
    insert_attempts(conn, engine, &attempts).await?;
    for o in applied.iter().filter(|o| o.ordered && o.status != "queued") {
        if let Some(key) = &o.business_key {
            sqlx::query("UPDATE deliveries SET next_at = $1 WHERE subscription_id = $2 AND business_key = $3 AND status = 'queued' AND next_at > $1")
                .bind(o.attempt.at)
                .bind(&o.subscription_id)
                .bind(key)
                .execute(&mut *conn)
                .await
                .db()?;
        }
    }
    // Subscription health: the newest success clears the failure clock; a failure starts
    // it if it is not running. `last_success_at` moves in steps of a second, so that
    // concurrent writers of a busy subscription seldom queue for its row; rows are
    // updated in id order, so that concurrent writers never deadlock on two of them.
    let mut succeeded: Vec<(&str, i64)> = Vec::new();
    let mut failed: Vec<(&str, i64)> = Vec::new();
    for o in &applied {
        let list = if o.status == "sent" { &mut succeeded } else { &mut failed };
        if let Some(entry) = list.iter_mut().find(|(s, _)| *s == o.subscription_id) {
            entry.1 = entry.1.max(o.attempt.at);
        } else {
            list.push((&o.subscription_id, o.attempt.at));
        }
    }
    succeeded.sort_unstable();
    failed.sort_unstable();
    for (sub, at) in &succeeded {
        sqlx::query(
            "UPDATE subscriptions SET last_success_at = $1, failing_since = NULL \
             WHERE id = $2 AND (failing_since IS NOT NULL OR last_success_at IS NULL OR last_success_at < $3)",
        )
        .bind(at)
        .bind(sub)
        .bind(at - 1000)
        .execute(&mut *conn)
        .await
        .db()?;
    }
    for (sub, at) in &failed {
        if succeeded.iter().any(|(s, _)| s == sub) {
            continue;
        }
        sqlx::query("UPDATE subscriptions SET failing_since = $1 WHERE id = $2 AND failing_since IS NULL").bind(at).bind(sub).execute(&mut *conn).await.db()?;
    }
    Ok(())
}

async fn insert_attempts(conn: &mut AnyConnection, engine: Engine, attempts: &[&AttemptRecord]) -> Result<(), Error> {
    for chunk in attempts.chunks(50) {
        let sql = multi_row_insert(engine, &format!("delivery_attempts ({ATTEMPT_COLUMNS})"), chunk.len(), 9);
        let mut q = sqlx::query(&sql);
        for a in chunk {
            q = q
                .bind(&a.id)
                .bind(&a.delivery_id)
                .bind(&a.merchant_id)
                .bind(a.at)
                .bind(&a.outcome)
                .bind(a.status_code)
                .bind(a.latency_ms)
                .bind(&a.response)
                .bind(&a.error);
        }
        q.execute(&mut *conn).await.db()?;
    }
    Ok(())
}

/// Disables a subscription (e.g. its receiver answered 410) and parks its queue.
pub async fn disable_subscription(conn: &mut AnyConnection, id: &str, reason: &str, now: i64) -> Result<bool, Error> {
    let done = sqlx::query("UPDATE subscriptions SET state = 'disabled', disabled_reason = $1, updated_at = $2 WHERE id = $3 AND state = 'active'")
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await
        .db()?;
    if done.rows_affected() == 1 {
        set_queued_due(conn, id, None).await?;
    }
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- reading deliveries

/// A delivery with its event's payload and timestamp.
#[derive(Debug, Clone)]
pub struct DeliveryWithPayload {
    pub delivery: DeliveryRecord,
    pub payload: String,
    pub event_created_at: i64,
}

/// Adds their events' payloads to deliveries, reading the events by primary key (a join
/// is at the mercy of the planner's statistics, which a fast queue leaves behind).
async fn with_payloads(conn: &mut AnyConnection, deliveries: Vec<DeliveryRecord>) -> Result<Vec<DeliveryWithPayload>, Error> {
    let mut event_ids: Vec<&str> = deliveries.iter().map(|d| d.event_id.as_str()).collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    let mut events: HashMap<String, (String, i64)> = HashMap::with_capacity(event_ids.len());
    for r in select_in(&mut *conn, "SELECT id, payload, created_at FROM events WHERE id", &event_ids).await? {
        events.insert(col(&r, "id")?, (col(&r, "payload")?, col(&r, "created_at")?));
    }
    deliveries
        .into_iter()
        .map(|delivery| {
            let (payload, event_created_at) = events.get(&delivery.event_id).cloned().ok_or_else(|| Error::Internal(format!("delivery {} has no event", delivery.id)))?;
            Ok(DeliveryWithPayload { delivery, payload, event_created_at })
        })
        .collect()
}

/// An app's deliveries after `after` (by id), oldest first, made before `created_before`;
/// with `pending_only`, only those not yet sent or acknowledged.
pub async fn app_deliveries(
    conn: &mut AnyConnection,
    app_id: &str,
    after: Option<&str>,
    created_before: i64,
    pending_only: bool,
    limit: usize,
) -> Result<Vec<DeliveryWithPayload>, Error> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE app_id = $1 AND ($2 IS NULL OR id > $2) AND created_at < $3 AND ($4 = 0 OR status <> 'sent') \
         ORDER BY id LIMIT $5"
    );
    let rows = sqlx::query(&sql)
        .bind(app_id)
        .bind(after)
        .bind(created_before)
        .bind(pending_only as i64)
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await
        .db()?;
    let deliveries = rows.iter().map(DeliveryRecord::from_row).collect::<Result<Vec<_>, _>>()?;
    with_payloads(conn, deliveries).await
}

/// Marks an app's deliveries acknowledged (sent) and logs it; ids of other apps and
/// deliveries already sent are ignored. Returns how many changed. Call in a transaction.
pub async fn acknowledge(conn: &mut AnyConnection, engine: Engine, app_id: &str, ids: &[String], now: i64) -> Result<u64, Error> {
    let mut changed = Vec::new();
    for id in ids {
        let row = sqlx::query(
            "UPDATE deliveries SET status = 'sent', next_at = NULL, lease_until = NULL, updated_at = $1 \
             WHERE id = $2 AND app_id = $3 AND status IN ('queued', 'failed') RETURNING merchant_id, subscription_id",
        )
        .bind(now)
        .bind(id)
        .bind(app_id)
        .fetch_optional(&mut *conn)
        .await
        .db()?;
        if let Some(r) = row {
            let merchant_id: String = col(&r, "merchant_id")?;
            changed.push(AttemptRecord {
                id: portico_core::id::new_id("att"),
                delivery_id: id.clone(),
                merchant_id,
                at: now,
                outcome: "acknowledged".into(),
                status_code: None,
                latency_ms: 0,
                response: None,
                error: None,
            });
        }
    }
    let refs: Vec<&AttemptRecord> = changed.iter().collect();
    insert_attempts(conn, engine, &refs).await?;
    Ok(changed.len() as u64)
}

/// Filters for a merchant's delivery search; every one optional.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub app_id: Option<String>,
    pub subscription_id: Option<String>,
    pub event_id: Option<String>,
    pub business_key: Option<String>,
    pub topic: Option<String>,
    pub status: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Keyset cursor: deliveries with a smaller id (newest first).
    pub before_id: Option<String>,
}

/// A merchant's deliveries matching `f`, newest first, at most `limit + 1` (the extra
/// one tells the caller there is a next page).
pub async fn search_deliveries(conn: &mut AnyConnection, merchant_id: &str, f: &DeliveryFilter, limit: usize) -> Result<Vec<DeliveryRecord>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE merchant_id = $1 \
         AND ($2 IS NULL OR app_id = $2) AND ($3 IS NULL OR subscription_id = $3) AND ($4 IS NULL OR event_id = $4) \
         AND ($5 IS NULL OR business_key = $5) AND ($6 IS NULL OR topic = $6) AND ($7 IS NULL OR status = $7) \
         AND ($8 IS NULL OR created_at >= $8) AND ($9 IS NULL OR created_at < $9) AND ($10 IS NULL OR id < $10) \
         ORDER BY id DESC LIMIT $11"
    ))
    .bind(merchant_id)
    .bind(&f.app_id)
    .bind(&f.subscription_id)
    .bind(&f.event_id)
    .bind(&f.business_key)
    .bind(&f.topic)
    .bind(&f.status)
    .bind(f.from)
    .bind(f.to)
    .bind(&f.before_id)
    .bind(limit as i64 + 1)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter().map(DeliveryRecord::from_row).collect()
}

pub async fn delivery(conn: &mut AnyConnection, merchant_id: &str, id: &str) -> Result<Option<DeliveryWithPayload>, Error> {
    let row = sqlx::query(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1 AND merchant_id = $2"))
        .bind(id)
        .bind(merchant_id)
        .fetch_optional(&mut *conn)
        .await
        .db()?;
    let Some(row) = row else { return Ok(None) };
    Ok(with_payloads(conn, vec![DeliveryRecord::from_row(&row)?]).await?.pop())
}

pub async fn attempts(conn: &mut AnyConnection, merchant_id: &str, delivery_id: &str) -> Result<Vec<AttemptRecord>, Error> {
    let rows = sqlx::query(&format!("SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE delivery_id = $1 AND merchant_id = $2 ORDER BY at, id"))
        .bind(delivery_id)
        .bind(merchant_id)
        .fetch_all(conn)
        .await
        .db()?;
    rows.iter()
        .map(|r| {
            Ok(AttemptRecord {
                id: col(r, "id")?,
                delivery_id: col(r, "delivery_id")?,
                merchant_id: col(r, "merchant_id")?,
                at: col(r, "at")?,
                outcome: col(r, "outcome")?,
                status_code: col(r, "status_code")?,
                latency_ms: col(r, "latency_ms")?,
                response: col(r, "response")?,
                error: col(r, "error")?,
            })
        })
        .collect()
}

/// Queues one delivery again for an immediate attempt with a fresh retry schedule (not
/// while an attempt is in flight). Returns whether it was requeued.
pub async fn resend(conn: &mut AnyConnection, merchant_id: &str, id: &str, now: i64) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE deliveries SET status = 'queued', retry_index = 0, next_at = $1, updated_at = $1 \
         WHERE id = $2 AND merchant_id = $3 AND status <> 'sending' \
         AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = deliveries.subscription_id AND s.callback_url IS NOT NULL)",
    )
    .bind(now)
    .bind(id)
    .bind(merchant_id)
    .execute(conn)
    .await
    .db()?;
    Ok(done.rows_affected() == 1)
}

/// Queues again every failed delivery of a subscription created at or after `since`.
pub async fn recover(conn: &mut AnyConnection, merchant_id: &str, subscription_id: &str, since: i64, now: i64) -> Result<u64, Error> {
    let done = sqlx::query(
        "UPDATE deliveries SET status = 'queued', retry_index = 0, next_at = $1, updated_at = $1 \
         WHERE subscription_id = $2 AND merchant_id = $3 AND status = 'failed' AND created_at >= $4",
    )
    .bind(now)
    .bind(subscription_id)
    .bind(merchant_id)
    .bind(since)
    .execute(conn)
    .await
    .db()?;
    Ok(done.rows_affected())
}

/// One line of a reconciliation file: a delivery as it stood at `cutoff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconciliationRow {
    pub event_id: String,
    pub delivery_id: String,
    pub app_id: String,
    pub topic: String,
    pub business_key: Option<String>,
    pub seq: Option<i64>,
    pub created_at: i64,
    /// Attempts (and acknowledgements) before the cutoff.
    pub attempts: i64,
    pub last_attempt_at: Option<i64>,
    /// The outcome of the last attempt before the cutoff, if any.
    pub last_outcome: Option<String>,
}

/// A merchant's deliveries created in `[from, to)`, each as it stood at `cutoff`,
/// computed from the attempt log alone so that the answer never changes afterwards.
pub async fn reconciliation(conn: &mut AnyConnection, merchant_id: &str, from: i64, to: i64, cutoff: i64) -> Result<Vec<ReconciliationRow>, Error> {
    let rows = sqlx::query(
        "SELECT d.id, d.event_id, d.app_id, d.topic, d.business_key, d.seq, d.created_at, \
         (SELECT COUNT(*) FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.at < $4) AS n, \
         (SELECT MAX(a.at) FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.at < $4) AS last_at, \
         (SELECT a.outcome FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.at < $4 ORDER BY a.at DESC, a.id DESC LIMIT 1) AS last_outcome \
         FROM deliveries d WHERE d.merchant_id = $1 AND d.created_at >= $2 AND d.created_at < $3 ORDER BY d.id",
    )
    .bind(merchant_id)
    .bind(from)
    .bind(to)
    .bind(cutoff)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter()
        .map(|r| {
            Ok(ReconciliationRow {
                event_id: col(r, "event_id")?,
                delivery_id: col(r, "id")?,
                app_id: col(r, "app_id")?,
                topic: col(r, "topic")?,
                business_key: col(r, "business_key")?,
                seq: col(r, "seq")?,
                created_at: col(r, "created_at")?,
                attempts: col(r, "n")?,
                last_attempt_at: col(r, "last_at")?,
                last_outcome: col(r, "last_outcome")?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- mail

pub async fn insert_email(conn: &mut AnyConnection, id: &str, merchant_id: &str, to: &str, subject: &str, body: &str, now: i64) -> Result<(), Error> {
    sqlx::query("INSERT INTO outbound_emails (id, merchant_id, to_address, subject, body, created_at, sent_at) VALUES ($1,$2,$3,$4,$5,$6,NULL)")
        .bind(id)
        .bind(merchant_id)
        .bind(to)
        .bind(subject)
        .bind(body)
        .bind(now)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// A mail waiting to be sent.
#[derive(Debug, Clone)]
pub struct EmailRecord {
    pub id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Mail not yet sent, oldest first.
pub async fn unsent_emails(conn: &mut AnyConnection, limit: usize) -> Result<Vec<EmailRecord>, Error> {
    let rows = sqlx::query("SELECT id, to_address, subject, body FROM outbound_emails WHERE sent_at IS NULL ORDER BY id LIMIT $1")
        .bind(limit as i64)
        .fetch_all(conn)
        .await
        .db()?;
    rows.iter().map(|r| Ok(EmailRecord { id: col(r, "id")?, to: col(r, "to_address")?, subject: col(r, "subject")?, body: col(r, "body")? })).collect()
}

/// Marks a mail sent (`Some(time)`: only if it was not; the claim before sending) or
/// unsent again (`None`: the send failed). Returns whether the row changed.
pub async fn mark_email_sent(conn: &mut AnyConnection, id: &str, at: Option<i64>) -> Result<bool, Error> {
    let sql = match at {
        Some(_) => "UPDATE outbound_emails SET sent_at = $1 WHERE id = $2 AND sent_at IS NULL",
        None => "UPDATE outbound_emails SET sent_at = $1 WHERE id = $2",
    };
    let done = sqlx::query(sql).bind(at).bind(id).execute(conn).await.db()?;
    Ok(done.rows_affected() == 1)
}

/// (to, subject) of the mail written for a merchant, oldest first.
pub async fn emails(conn: &mut AnyConnection, merchant_id: &str) -> Result<Vec<(String, String)>, Error> {
    let rows = sqlx::query("SELECT to_address, subject FROM outbound_emails WHERE merchant_id = $1 ORDER BY id").bind(merchant_id).fetch_all(conn).await.db()?;
    rows.iter().map(|r| Ok((col(r, "to_address")?, col(r, "subject")?))).collect()
}

/// The owners' email addresses of a merchant.
pub async fn owner_emails(conn: &mut AnyConnection, merchant_id: &str) -> Result<Vec<String>, Error> {
    let rows = sqlx::query("SELECT email FROM accounts WHERE merchant_id = $1 AND role = 'owner' AND status = 'active' ORDER BY id")
        .bind(merchant_id)
        .fetch_all(conn)
        .await
        .db()?;
    rows.iter().map(|r| col(r, "email")).collect()
}

/// The rows of `{select} IN (…)` for every one of `values`, 200 to a statement; `select`
/// is the statement up to the column compared, e.g. `SELECT … FROM events WHERE id`.
async fn select_in<S: AsRef<str>>(conn: &mut AnyConnection, select: &str, values: &[S]) -> Result<Vec<AnyRow>, Error> {
    let mut rows = Vec::with_capacity(values.len());
    for chunk in values.chunks(200) {
        let sql = format!("{select} IN ({})", placeholders(1, chunk.len()));
        let mut q = sqlx::query(&sql);
        for v in chunk {
            q = q.bind(v.as_ref());
        }
        rows.extend(q.fetch_all(&mut *conn).await.db()?);
    }
    Ok(rows)
}

/// `$start, $start+1, …` for an `IN (…)` list of `n` values.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

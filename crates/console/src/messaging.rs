//! Message push, the management side (`shared/spec/messaging.md`): topics that product
//! managers publish in the catalog (granted to apps through their API group);
//! subscriptions that merchants make for their apps, each with its own `whsec_` secret;
//! and the deliveries merchants and operators search, inspect, resend and recover, and
//! the daily reconciliation file. Delivering is the `portico-messaging` crate's job.

use portico_core::{
    domain::{CallbackUrl, Text},
    id::{new_id, random_bytes},
    page::{Page, PageRequest},
    time::{now_ms, parse_rfc3339, platform_day, platform_day_bounds, rfc3339},
    Error,
};
use portico_signing::webhook::WebhookKey;
use portico_store::{
    apps, catalog,
    messaging::{self as store, DeliveryFilter, DeliveryRecord, SubscriptionRecord, TopicRecord},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::{audit, catalog::parse_api_name, Platform, Principal, Role};

/// Seconds between attempts after the first one (the spec's schedule): 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h, 10 h; each with ±20 % jitter.
pub const DEFAULT_RETRY_SCHEDULE: &[u64] = &[5, 300, 1800, 7200, 18_000, 36_000, 36_000];
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 64 * 1024;
pub const DEFAULT_TIMEOUT_MS: u64 = 15_000;
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 20;
/// The API group of the platform's own topics (operational events such as
/// `portico.subscription_disabled`): every app may subscribe to them without a grant.
pub const PLATFORM_GROUP: &str = "portico";

#[derive(Debug, Deserialize, ToSchema)]
pub struct TopicIn {
    /// The API group whose grant lets an app subscribe.
    pub group: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema every payload must satisfy.
    #[schema(value_type = Option<Object>)]
    pub payload_schema: Option<serde_json::Value>,
    /// Largest payload accepted at ingress (default 65536, at most 1048576).
    pub max_payload_bytes: Option<u64>,
    /// Seconds between attempts after the first (default: the platform's schedule).
    pub retry_schedule: Option<Vec<u64>>,
    /// `published` (default) or `retired` (no new events).
    pub state: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopicOut {
    pub name: String,
    pub group: String,
    pub description: String,
    #[schema(value_type = Option<Object>)]
    pub payload_schema: Option<serde_json::Value>,
    pub max_payload_bytes: i64,
    pub retry_schedule: Vec<u64>,
    pub state: String,
    pub updated_at: String,
}

impl From<&TopicRecord> for TopicOut {
    fn from(t: &TopicRecord) -> Self {
        TopicOut {
            name: t.name.clone(),
            group: t.group_name.clone(),
            description: t.description.clone(),
            payload_schema: t.payload_schema.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            max_payload_bytes: t.max_payload_bytes,
            retry_schedule: retry_schedule_of(t.retry_schedule.as_deref()),
            state: t.state.clone(),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SubscriptionIn {
    pub topic: String,
    /// Where deliveries are POSTed; leave it out to receive by polling or the live
    /// channel only.
    pub callback_url: Option<String>,
    /// Deliver a business key's events one at a time, in `seq` order.
    #[serde(default)]
    pub strict_order: bool,
    /// Attempts in flight at once (default 20, at most 1000).
    pub max_in_flight: Option<u64>,
    /// Per-attempt timeout (default 15000, at most 60000).
    pub timeout_ms: Option<u64>,
    /// Seconds between attempts after the first (default: the topic's schedule).
    pub retry_schedule: Option<Vec<u64>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SubscriptionPatch {
    /// A new callback URL; `""` removes it (polling only).
    pub callback_url: Option<String>,
    pub strict_order: Option<bool>,
    pub max_in_flight: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub retry_schedule: Option<Vec<u64>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionOut {
    pub id: String,
    pub merchant_id: String,
    pub app_id: String,
    pub topic: String,
    pub callback_url: Option<String>,
    pub strict_order: bool,
    pub max_in_flight: i64,
    pub timeout_ms: i64,
    /// The subscription's own schedule, if it has one (otherwise the topic's applies).
    pub retry_schedule: Option<Vec<u64>>,
    /// `active` or `disabled`.
    pub state: String,
    pub disabled_reason: Option<String>,
    /// Failing without a success since then (five days of it disables the subscription).
    pub failing_since: Option<String>,
    pub last_success_at: Option<String>,
    /// Until then the previous secret signs too.
    pub previous_secret_until: Option<String>,
    pub created_at: String,
}

impl From<&SubscriptionRecord> for SubscriptionOut {
    fn from(s: &SubscriptionRecord) -> Self {
        SubscriptionOut {
            id: s.id.clone(),
            merchant_id: s.merchant_id.clone(),
            app_id: s.app_id.clone(),
            topic: s.topic.clone(),
            callback_url: s.callback_url.clone(),
            strict_order: s.strict_order != 0,
            max_in_flight: s.max_in_flight,
            timeout_ms: s.timeout_ms,
            retry_schedule: s.retry_schedule.as_deref().map(|r| retry_schedule_of(Some(r))),
            state: s.state.clone(),
            disabled_reason: s.disabled_reason.clone(),
            failing_since: s.failing_since.map(rfc3339),
            last_success_at: s.last_success_at.map(rfc3339),
            previous_secret_until: s.previous_secret_until.filter(|u| *u > now_ms()).map(rfc3339),
            created_at: rfc3339(s.created_at),
        }
    }
}

/// A subscription with its signing secret, shown once (at creation and rotation).
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionSecretOut {
    pub subscription: SubscriptionOut,
    /// `whsec_…`: verify deliveries with it (any Standard Webhooks library).
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RotateSecretIn {
    /// How long the old secret keeps signing beside the new one (default 86400, at most
    /// 604800; 0 ends it now).
    pub grace_secs: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RecoverIn {
    /// RFC 3339: failed deliveries created since then are queued again.
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoverOut {
    pub requeued: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    /// Also the `webhook-id` of every attempt.
    pub id: String,
    pub event_id: String,
    pub subscription_id: String,
    pub app_id: String,
    pub topic: String,
    pub business_key: Option<String>,
    pub seq: Option<i64>,
    /// `queued`, `sending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
}

impl From<&DeliveryRecord> for DeliveryOut {
    fn from(d: &DeliveryRecord) -> Self {
        DeliveryOut {
            id: d.id.clone(),
            event_id: d.event_id.clone(),
            subscription_id: d.subscription_id.clone(),
            app_id: d.app_id.clone(),
            topic: d.topic.clone(),
            business_key: d.business_key.clone(),
            seq: d.seq,
            status: d.status.clone(),
            attempts: d.attempts,
            next_attempt_at: if d.status == "queued" { d.next_at.map(rfc3339) } else { None },
            last_attempt_at: d.last_attempt_at.map(rfc3339),
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            created_at: rfc3339(d.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOut {
    pub at: String,
    /// `sent`, `retry`, `failed` or `acknowledged`.
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    /// The receiver's answer, truncated to 4 KiB.
    pub response: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetailOut {
    pub delivery: DeliveryOut,
    /// The body every attempt sends.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    pub attempts: Vec<AttemptOut>,
}

/// Search filters for deliveries.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    pub app_id: Option<String>,
    pub subscription_id: Option<String>,
    pub event_id: Option<String>,
    pub business_key: Option<String>,
    pub topic: Option<String>,
    /// `queued`, `sending`, `sent` or `failed`.
    pub status: Option<String>,
    /// RFC 3339: created at or after.
    pub from: Option<String>,
    /// RFC 3339: created before.
    pub to: Option<String>,
}

/// The body every attempt of a delivery sends (and polling and the live channel show):
/// built from stored fields in a fixed order, so it is byte-identical on every retry.
pub fn delivery_body(d: &DeliveryRecord, payload: &str, event_created_at: i64) -> String {
    let mut out = String::with_capacity(payload.len() + 256);
    out.push_str("{\"type\":");
    out.push_str(&serde_json::to_string(&d.topic).expect("strings serialize"));
    out.push_str(",\"timestamp\":\"");
    out.push_str(&rfc3339(event_created_at));
    out.push_str("\",\"event_id\":");
    out.push_str(&serde_json::to_string(&d.event_id).expect("strings serialize"));
    out.push_str(",\"business_key\":");
    out.push_str(&serde_json::to_string(&d.business_key).expect("strings serialize"));
    out.push_str(",\"seq\":");
    out.push_str(&d.seq.map(|s| s.to_string()).unwrap_or_else(|| "null".into()));
    out.push_str(",\"data\":");
    out.push_str(payload);
    out.push('}');
    out
}

impl Platform {
    // ------------------------------------------------------------ topics

    /// Publishes (creates or updates) a topic (product managers).
    pub async fn put_topic(&self, actor: &Principal, name: &str, input: TopicIn) -> Result<TopicOut, Error> {
        actor.require(&[Role::ProductManager], "manage the catalog's topics")?;
        let name = parse_api_name(name).map_err(|_| Error::validation("name", "must be dotted lower-case segments, e.g. order.status_changed"))?;
        let description = if input.description.trim().is_empty() { String::new() } else { Text::parse("description", &input.description, 2000)?.into_string() };
        if let Some(schema) = &input.payload_schema {
            jsonschema::validator_for(schema).map_err(|e| Error::validation("payload_schema", format!("is not a valid JSON Schema: {e}")))?;
        }
        let max_payload_bytes = input.max_payload_bytes.unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES);
        if !(16..=1_048_576).contains(&max_payload_bytes) {
            return Err(Error::validation("max_payload_bytes", "must be 16 to 1048576"));
        }
        let retry_schedule = input.retry_schedule.as_deref().map(|r| parse_retry_schedule("retry_schedule", r)).transpose()?;
        let state = input.state.unwrap_or_else(|| "published".into());
        if state != "published" && state != "retired" {
            return Err(Error::validation("state", "must be published or retired"));
        }
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        if !catalog::group_exists(&mut tx, &input.group).await? {
            return Err(Error::validation("group", "no such API group"));
        }
        let created_at = store::topic(&mut tx, &name).await?.map(|t| t.created_at).unwrap_or(now);
        let record = TopicRecord {
            name: name.clone(),
            group_name: input.group,
            description,
            payload_schema: input.payload_schema.map(|v| v.to_string()),
            max_payload_bytes: max_payload_bytes as i64,
            retry_schedule,
            state,
            created_at,
            updated_at: now,
        };
        store::upsert_topic(&mut tx, &record).await?;
        audit::record(&mut tx, actor, audit::Event { merchant_id: None, action: "catalog.topic_saved", target_type: "topic", target_id: &name, reason: None, detail: json!({ "group": record.group_name, "state": record.state }) }).await?;
        portico_store::commit(tx).await?;
        self.announce(crate::Change::Catalog);
        Ok(TopicOut::from(&record))
    }

    /// Every topic for operators; published ones for merchants.
    pub async fn topics(&self, actor: &Principal) -> Result<Vec<TopicOut>, Error> {
        let mut conn = self.store().read().await?;
        Ok(store::topics(&mut conn).await?.iter().filter(|t| actor.is_operator() || t.state == "published").map(TopicOut::from).collect())
    }

    // ------------------------------------------------------------ subscriptions

    /// Subscribes an app to a topic its grants cover.
    pub async fn create_subscription(&self, actor: &Principal, merchant_id: &str, app_id: &str, input: SubscriptionIn) -> Result<SubscriptionSecretOut, Error> {
        actor.can_manage_apps(merchant_id)?;
        let callback_url = self.parse_callback(input.callback_url.as_deref())?;
        let max_in_flight = bounded("max_in_flight", input.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT), 1, 1000)?;
        let timeout_ms = bounded("timeout_ms", input.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS), 100, 60_000)?;
        let retry_schedule = input.retry_schedule.as_deref().map(|r| parse_retry_schedule("retry_schedule", r)).transpose()?;
        let mut conn = self.store().begin().await?;
        apps::get(&mut conn, merchant_id, app_id).await?.ok_or(Error::NotFound("app"))?;
        let topic = store::topic(&mut conn, &input.topic).await?.filter(|t| t.state == "published").ok_or_else(|| Error::validation("topic", "no such published topic"))?;
        if topic.group_name != PLATFORM_GROUP && !apps::grants(&mut conn, merchant_id, app_id).await?.contains(&topic.group_name) {
            return Err(Error::Forbidden(format!("the app is not granted the API group {}; request it first", topic.group_name)));
        }
        let (secret, sealed) = self.new_webhook_secret();
        let now = now_ms();
        let record = SubscriptionRecord {
            id: new_id("sub"),
            merchant_id: merchant_id.to_string(),
            app_id: app_id.to_string(),
            topic: topic.name.clone(),
            callback_url,
            secret_sealed: sealed,
            previous_secret_sealed: None,
            previous_secret_until: None,
            strict_order: input.strict_order as i64,
            max_in_flight,
            timeout_ms,
            retry_schedule,
            state: "active".into(),
            disabled_reason: None,
            failing_since: None,
            last_success_at: None,
            created_at: now,
            updated_at: now,
        };
        store::insert_subscription(&mut conn, &record).await?;
        audit::record(&mut conn, actor, audit::Event { merchant_id: Some(merchant_id), action: "subscription.created", target_type: "subscription", target_id: &record.id, reason: None, detail: json!({ "app_id": app_id, "topic": record.topic, "callback_url": record.callback_url }) }).await?;
        portico_store::commit(conn).await?;
        Ok(SubscriptionSecretOut { subscription: SubscriptionOut::from(&record), secret })
    }

    pub async fn subscriptions(&self, actor: &Principal, merchant_id: &str, app_id: &str) -> Result<Vec<SubscriptionOut>, Error> {
        actor.can_see(merchant_id)?;
        let mut conn = self.store().read().await?;
        apps::get(&mut conn, merchant_id, app_id).await?.ok_or(Error::NotFound("app"))?;
        Ok(store::subscriptions(&mut conn, merchant_id, Some(app_id)).await?.iter().map(SubscriptionOut::from).collect())
    }

    pub async fn subscription(&self, actor: &Principal, merchant_id: &str, id: &str) -> Result<SubscriptionOut, Error> {
        actor.can_see(merchant_id)?;
        let mut conn = self.store().read().await?;
        Ok(SubscriptionOut::from(&store::subscription(&mut conn, merchant_id, id).await?.ok_or(Error::NotFound("subscription"))?))
    }

    pub async fn update_subscription(&self, actor: &Principal, merchant_id: &str, id: &str, patch: SubscriptionPatch) -> Result<SubscriptionOut, Error> {
        actor.can_manage_apps(merchant_id)?;
        let callback_url = match patch.callback_url.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(u) => Some(self.parse_callback(Some(u))?),
        };
        let mut tx = self.store().begin().await?;
        let mut s = store::subscription(&mut tx, merchant_id, id).await?.ok_or(Error::NotFound("subscription"))?;
        let was_pushing = s.callback_url.is_some();
        if let Some(c) = callback_url {
            s.callback_url = c;
        }
        if let Some(v) = patch.strict_order {
            s.strict_order = v as i64;
        }
        if let Some(v) = patch.max_in_flight {
            s.max_in_flight = bounded("max_in_flight", v, 1, 1000)?;
        }
        if let Some(v) = patch.timeout_ms {
            s.timeout_ms = bounded("timeout_ms", v, 100, 60_000)?;
        }
        if let Some(r) = patch.retry_schedule.as_deref() {
            s.retry_schedule = Some(parse_retry_schedule("retry_schedule", r)?);
        }
        let now = now_ms();
        s.updated_at = now;
        store::update_subscription(&mut tx, &s).await?;
        if was_pushing != s.callback_url.is_some() {
            let due = (s.callback_url.is_some() && s.state == "active").then_some(now);
            store::set_queued_due(&mut tx, &s.id, due).await?;
        }
        audit::record(&mut tx, actor, audit::Event { merchant_id: Some(merchant_id), action: "subscription.updated", target_type: "subscription", target_id: id, reason: None, detail: json!({ "callback_url": s.callback_url }) }).await?;
        portico_store::commit(tx).await?;
        Ok(SubscriptionOut::from(&s))
    }

    /// Disables or re-enables a subscription. Re-enabling clears the failure clock and
    /// makes its queued deliveries due at once.
    pub async fn set_subscription_enabled(&self, actor: &Principal, merchant_id: &str, id: &str, enabled: bool) -> Result<SubscriptionOut, Error> {
        actor.can_manage_apps(merchant_id)?;
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let mut s = store::subscription(&mut tx, merchant_id, id).await?.ok_or(Error::NotFound("subscription"))?;
        s.state = if enabled { "active" } else { "disabled" }.into();
        s.disabled_reason = (!enabled).then(|| "disabled by the merchant".into());
        s.failing_since = None;
        s.updated_at = now;
        store::update_subscription(&mut tx, &s).await?;
        let due = (enabled && s.callback_url.is_some()).then_some(now);
        store::set_queued_due(&mut tx, &s.id, due).await?;
        let action = if enabled { "subscription.enabled" } else { "subscription.disabled" };
        audit::record(&mut tx, actor, audit::Event { merchant_id: Some(merchant_id), action, target_type: "subscription", target_id: id, reason: None, detail: json!({}) }).await?;
        portico_store::commit(tx).await?;
        Ok(SubscriptionOut::from(&s))
    }

    /// A new signing secret; the old one keeps signing beside it for the grace period.
    pub async fn rotate_subscription_secret(&self, actor: &Principal, merchant_id: &str, id: &str, input: RotateSecretIn) -> Result<SubscriptionSecretOut, Error> {
        actor.can_manage_apps(merchant_id)?;
        let grace = input.grace_secs.unwrap_or(86_400);
        if grace > 604_800 {
            return Err(Error::validation("grace_secs", "must be at most 604800 (seven days)"));
        }
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let mut s = store::subscription(&mut tx, merchant_id, id).await?.ok_or(Error::NotFound("subscription"))?;
        let (secret, sealed) = self.new_webhook_secret();
        // The previous secret is sealed for this subscription id: move it as it is.
        s.previous_secret_sealed = (grace > 0).then(|| s.secret_sealed.clone());
        s.previous_secret_until = (grace > 0).then_some(now + grace as i64 * 1000);
        s.secret_sealed = sealed;
        s.updated_at = now;
        store::update_subscription(&mut tx, &s).await?;
        audit::record(&mut tx, actor, audit::Event { merchant_id: Some(merchant_id), action: "subscription.secret_rotated", target_type: "subscription", target_id: id, reason: None, detail: json!({ "grace_secs": grace }) }).await?;
        portico_store::commit(tx).await?;
        Ok(SubscriptionSecretOut { subscription: SubscriptionOut::from(&s), secret })
    }

    /// The keys that sign a subscription's deliveries now: the current one, then the
    /// previous one while its grace lasts.
    pub fn signing_keys(&self, s: &SubscriptionRecord, now: i64) -> Result<Vec<WebhookKey>, Error> {
        let open = |sealed: &str| -> Result<WebhookKey, Error> {
            let secret = self.key().open(sealed, WEBHOOK_SECRET_AAD).map_err(|e| Error::Internal(format!("cannot open a webhook secret: {e}")))?;
            WebhookKey::parse(&secret).map_err(|e| Error::Internal(format!("stored webhook secret: {e}")))
        };
        let mut keys = vec![open(&s.secret_sealed)?];
        if let (Some(prev), Some(until)) = (&s.previous_secret_sealed, s.previous_secret_until) {
            if until > now {
                keys.push(open(prev)?);
            }
        }
        Ok(keys)
    }

    fn new_webhook_secret(&self) -> (String, String) {
        let secret = WebhookKey::encode(&random_bytes::<32>());
        let sealed = self.key().seal(&secret, WEBHOOK_SECRET_AAD);
        (secret, sealed)
    }

    fn parse_callback(&self, input: Option<&str>) -> Result<Option<String>, Error> {
        let Some(input) = input else { return Ok(None) };
        let url = CallbackUrl::parse(input)?;
        let parsed = url::Url::parse(url.as_str()).map_err(|e| Error::validation("callback_url", e.to_string()))?;
        self.settings().webhook_targets.check_url(&parsed)?;
        Ok(Some(url.as_str().to_string()))
    }

    // ------------------------------------------------------------ deliveries

    pub async fn deliveries(&self, actor: &Principal, merchant_id: &str, q: &DeliveryQuery, page: &PageRequest) -> Result<Page<DeliveryOut>, Error> {
        actor.can_see(merchant_id)?;
        if let Some(s) = &q.status {
            if !["queued", "sending", "sent", "failed"].contains(&s.as_str()) {
                return Err(Error::validation("status", "must be queued, sending, sent or failed"));
            }
        }
        let filter = DeliveryFilter {
            app_id: q.app_id.clone(),
            subscription_id: q.subscription_id.clone(),
            event_id: q.event_id.clone(),
            business_key: q.business_key.clone(),
            topic: q.topic.clone(),
            status: q.status.clone(),
            from: q.from.as_deref().map(|s| time_field("from", s)).transpose()?,
            to: q.to.as_deref().map(|s| time_field("to", s)).transpose()?,
            before_id: page.after.clone(),
        };
        let mut conn = self.store().read().await?;
        let rows = store::search_deliveries(&mut conn, merchant_id, &filter, page.limit as usize).await?;
        Ok(Page::from_rows(rows, page.limit, |d| d.id.clone()).map(|d| DeliveryOut::from(&d)))
    }

    pub async fn delivery(&self, actor: &Principal, merchant_id: &str, id: &str) -> Result<DeliveryDetailOut, Error> {
        actor.can_see(merchant_id)?;
        let mut conn = self.store().read().await?;
        let d = store::delivery(&mut conn, merchant_id, id).await?.ok_or(Error::NotFound("delivery"))?;
        let attempts = store::attempts(&mut conn, merchant_id, id).await?;
        let body = delivery_body(&d.delivery, &d.payload, d.event_created_at);
        Ok(DeliveryDetailOut {
            delivery: DeliveryOut::from(&d.delivery),
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
            attempts: attempts
                .into_iter()
                .map(|a| AttemptOut { at: rfc3339(a.at), outcome: a.outcome, status_code: a.status_code, latency_ms: a.latency_ms, response: a.response, error: a.error })
                .collect(),
        })
    }

    /// Queues one delivery for an immediate attempt with a fresh retry schedule.
    pub async fn resend_delivery(&self, actor: &Principal, merchant_id: &str, id: &str) -> Result<DeliveryOut, Error> {
        actor.can_manage_apps(merchant_id).or_else(|e| if actor.role() == Role::BusinessManager { Ok(()) } else { Err(e) })?;
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let d = store::delivery(&mut tx, merchant_id, id).await?.ok_or(Error::NotFound("delivery"))?;
        if !store::resend(&mut tx, merchant_id, id, now).await? {
            return Err(Error::InvalidState(if d.delivery.status == "sending" {
                "an attempt is in flight; try again when it ends".into()
            } else {
                "the subscription has no callback URL (the app polls for it)".into()
            }));
        }
        audit::record(&mut tx, actor, audit::Event { merchant_id: Some(merchant_id), action: "delivery.resent", target_type: "delivery", target_id: id, reason: None, detail: json!({}) }).await?;
        let d = store::delivery(&mut tx, merchant_id, id).await?.ok_or(Error::NotFound("delivery"))?;
        portico_store::commit(tx).await?;
        Ok(DeliveryOut::from(&d.delivery))
    }

    /// Queues again every failed delivery of a subscription created since a time.
    pub async fn recover_subscription(&self, actor: &Principal, merchant_id: &str, id: &str, input: RecoverIn) -> Result<RecoverOut, Error> {
        actor.can_manage_apps(merchant_id).or_else(|e| if actor.role() == Role::BusinessManager { Ok(()) } else { Err(e) })?;
        let since = time_field("since", &input.since)?;
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let s = store::subscription(&mut tx, merchant_id, id).await?.ok_or(Error::NotFound("subscription"))?;
        if s.callback_url.is_none() {
            return Err(Error::InvalidState("the subscription has no callback URL (the app polls for it)".into()));
        }
        let requeued = store::recover(&mut tx, merchant_id, id, since, now).await?;
        audit::record(&mut tx, actor, audit::Event { merchant_id: Some(merchant_id), action: "subscription.recovered", target_type: "subscription", target_id: id, reason: None, detail: json!({ "since": input.since, "requeued": requeued }) }).await?;
        portico_store::commit(tx).await?;
        Ok(RecoverOut { requeued })
    }

    /// The reconciliation file of platform day `date` (`YYYY-MM-DD`, UTC+8), ready once
    /// the day has ended: CSV, one line per delivery of an event made that day, each as it
    /// stood when the day ended, then a `# sha256=` line over the bytes before it. Made
    /// from the attempt log alone, so regenerating it yields the same bytes.
    pub async fn reconciliation_file(&self, actor: &Principal, merchant_id: &str, date: &str) -> Result<Reconciliation, Error> {
        actor.can_see(merchant_id)?;
        let (from, to) = platform_day_bounds(date).ok_or_else(|| Error::validation("date", "must be a day written YYYY-MM-DD"))?;
        let now = now_ms();
        if to > now {
            let (today, _) = platform_day(now / 1000);
            let asked = platform_day(from / 1000).0;
            let why = if asked >= today { "the day has not ended yet (UTC+8); its file is ready the next day" } else { "not ready" };
            return Err(Error::InvalidState(why.into()));
        }
        let mut conn = self.store().read().await?;
        let rows = store::reconciliation(&mut conn, merchant_id, from, to, to).await?;
        let mut body = String::from("event_id,delivery_id,app_id,topic,business_key,seq,created_at,status,attempts,last_attempt_at\n");
        for r in &rows {
            let status = match r.last_outcome.as_deref() {
                Some("sent") | Some("acknowledged") => "sent",
                Some("failed") => "failed",
                _ => "pending",
            };
            let fields = [
                r.event_id.clone(),
                r.delivery_id.clone(),
                r.app_id.clone(),
                r.topic.clone(),
                r.business_key.clone().unwrap_or_default(),
                r.seq.map(|s| s.to_string()).unwrap_or_default(),
                rfc3339(r.created_at),
                status.to_string(),
                r.attempts.to_string(),
                r.last_attempt_at.map(rfc3339).unwrap_or_default(),
            ];
            body.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
            body.push('\n');
        }
        let sha256 = portico_core::id::hex(&Sha256::digest(body.as_bytes()));
        body.push_str("# sha256=");
        body.push_str(&sha256);
        body.push('\n');
        Ok(Reconciliation { file_name: format!("reconciliation-{merchant_id}-{date}.csv"), body, sha256 })
    }
}

/// A reconciliation file and its checksum.
#[derive(Debug, Clone)]
pub struct Reconciliation {
    pub file_name: String,
    pub body: String,
    /// SHA-256 (hex) of the body before its last line.
    pub sha256: String,
}

/// What seals webhook secrets (distinct from every other sealed value).
const WEBHOOK_SECRET_AAD: &str = "webhook-secret";

/// RFC 4180 quoting, plus a leading `'` for values a spreadsheet would run as a formula.
fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) { format!("'{v}") } else { v.to_string() };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// An RFC 3339 time in milliseconds, or an error naming `field`.
fn time_field(field: &str, s: &str) -> Result<i64, Error> {
    parse_rfc3339(s).ok_or_else(|| Error::validation(field, "must be an RFC 3339 time, e.g. 2026-12-01T08:00:00Z"))
}

fn bounded(field: &str, v: u64, min: u64, max: u64) -> Result<i64, Error> {
    if (min..=max).contains(&v) {
        Ok(v as i64)
    } else {
        Err(Error::validation(field, format!("must be {min} to {max}")))
    }
}

/// A retry schedule: 1 to 20 waits of 1 s to 7 days each; stored as a JSON array.
pub fn parse_retry_schedule(field: &str, r: &[u64]) -> Result<String, Error> {
    if r.is_empty() || r.len() > 20 {
        return Err(Error::validation(field, "must have 1 to 20 entries"));
    }
    if let Some(i) = r.iter().position(|s| !(1..=604_800).contains(s)) {
        return Err(Error::validation(format!("{field}[{i}]"), "must be 1 to 604800 seconds"));
    }
    Ok(serde_json::to_string(r).expect("numbers serialize"))
}

/// A stored schedule, or the platform's.
pub fn retry_schedule_of(stored: Option<&str>) -> Vec<u64> {
    stored.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_else(|| DEFAULT_RETRY_SCHEDULE.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }

    #[test]
    fn schedules() {
        assert_eq!(parse_retry_schedule("r", &[1, 2]).unwrap(), "[1,2]");
        assert!(parse_retry_schedule("r", &[]).is_err());
        let e = parse_retry_schedule("r", &[1, 0]).unwrap_err();
        assert!(matches!(e, Error::Validation { ref field, .. } if field == "r[1]"));
        assert_eq!(retry_schedule_of(None), DEFAULT_RETRY_SCHEDULE);
    }
}

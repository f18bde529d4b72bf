//! Topics as ingress and the workers need them: the record, its compiled payload schema
//! and its retry schedule, cached for a second (and dropped at once when this
//! instance's catalog changes), so that a burst of events reads the catalog once.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use portico_console::{
    messaging::{retry_schedule_of, PLATFORM_GROUP},
    Change, Platform,
};
use portico_core::{time::now_ms, Error};
use portico_store::{
    catalog::{self, GroupRecord},
    messaging::{self as store, TopicRecord},
};

/// Sent to a merchant when one of its subscriptions is disabled (410, or five days of
/// failures).
pub const SUBSCRIPTION_DISABLED: &str = "portico.subscription_disabled";

const FRESH_FOR: Duration = Duration::from_secs(1);

pub struct TopicEntry {
    pub record: TopicRecord,
    pub validator: Option<jsonschema::Validator>,
    pub schedule: Vec<u64>,
}

#[derive(Clone)]
pub(crate) struct Topics {
    platform: Platform,
    map: Arc<RwLock<HashMap<String, (Option<Arc<TopicEntry>>, Instant)>>>,
}

impl Topics {
    pub fn new(platform: Platform) -> Topics {
        Topics { platform, map: Arc::new(RwLock::new(HashMap::new())) }
    }

    /// The topic, or `None` if there is no such topic.
    pub async fn get(&self, name: &str) -> Result<Option<Arc<TopicEntry>>, Error> {
        if let Some((entry, at)) = self.map.read().expect("not poisoned").get(name) {
            if at.elapsed() < FRESH_FOR {
                return Ok(entry.clone());
            }
        }
        let record = {
            let mut conn = self.platform.store().read().await?;
            store::topic(&mut conn, name).await?
        };
        let entry = record.map(|record| {
            let validator = record.payload_schema.as_deref().and_then(|s| serde_json::from_str(s).ok()).and_then(|v: serde_json::Value| jsonschema::validator_for(&v).ok());
            let schedule = retry_schedule_of(record.retry_schedule.as_deref());
            Arc::new(TopicEntry { record, validator, schedule })
        });
        let mut map = self.map.write().expect("not poisoned");
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(name.to_string(), (entry.clone(), Instant::now()));
        Ok(entry)
    }

    /// Drops the cache whenever this instance's catalog changes.
    pub async fn follow(self) {
        let mut changes = self.platform.subscribe();
        loop {
            match changes.recv().await {
                Ok(Change::Catalog) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.map.write().expect("not poisoned").clear(),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Creates the platform's own group and topics if they are missing (another instance
/// starting at the same moment may win the race; that is fine).
pub(crate) async fn ensure_platform_topics(platform: &Platform) -> Result<(), Error> {
    match create_platform_topics(platform).await {
        Err(Error::Conflict(_)) => Ok(()),
        other => other,
    }
}

async fn create_platform_topics(platform: &Platform) -> Result<(), Error> {
    let now = now_ms();
    let mut tx = platform.store().begin().await?;
    if !catalog::group_exists(&mut tx, PLATFORM_GROUP).await? {
        let group = GroupRecord {
            name: PLATFORM_GROUP.into(),
            title: "Portico".into(),
            description: "The platform's own operational events; every app may subscribe.".into(),
            created_at: now,
            updated_at: now,
        };
        catalog::upsert_group(&mut tx, &group).await?;
    }
    if store::topic(&mut tx, SUBSCRIPTION_DISABLED).await?.is_none() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["subscription_id", "app_id", "topic", "reason"],
            "properties": {
                "subscription_id": { "type": "string" },
                "app_id": { "type": "string" },
                "topic": { "type": "string" },
                "callback_url": { "type": ["string", "null"] },
                "reason": { "type": "string" }
            }
        });
        let topic = TopicRecord {
            name: SUBSCRIPTION_DISABLED.into(),
            group_name: PLATFORM_GROUP.into(),
            description: "One of the merchant's subscriptions was disabled; deliveries to it wait until it is enabled again.".into(),
            payload_schema: Some(schema.to_string()),
            max_payload_bytes: 4096,
            retry_schedule: None,
            state: "published".into(),
            created_at: now,
            updated_at: now,
        };
        store::upsert_topic(&mut tx, &topic).await?;
    }
    portico_store::commit(tx).await
}

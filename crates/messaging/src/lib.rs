//! Message push (`shared/spec/messaging.md`): internal systems publish events, Portico
//! stores each with one delivery per matching subscription in one transaction before it
//! answers, and workers push the deliveries to merchants' callback URLs with Standard
//! Webhooks signatures, retrying on a schedule. Apps may instead poll for them or follow
//! them on a live channel.
//!
//! - [`ingress`]: the internal `POST /messages/v1/events` (and batches), group-committed.
//! - [`amqp`]: the same ingress fed from a RabbitMQ queue, acknowledged after commit.
//! - [`dispatch`]: workers that claim due deliveries with a lease and attempt them.
//! - [`receive`]: polling and the live channel (server-sent events) for apps.
//! - `mail`: relays mail to merchants (written in `outbound_emails`) through SMTP.
//!
//! The `deliveries` table is the queue: nothing is held only in memory, so a crash at
//! any point loses no accepted event (a delivery in flight is retried when its lease runs
//! out). Ingress stores a fresh delivery already claimed when this instance has a free
//! attempt slot for it and hands it to the dispatcher after the commit: the common case
//! costs no claim query, and the row is under a lease like any claimed one.

pub mod amqp;
pub mod dispatch;
pub mod ingress;
mod mail;
pub mod receive;
mod topics;

use std::{sync::Arc, time::Duration};

use portico_console::Platform;
use portico_oauth::OAuth;
use tokio::sync::Notify;

pub use mail::MailSettings;

/// Tunables, from the `[messaging]` configuration section.
#[derive(Debug, Clone)]
pub struct MessagingSettings {
    /// Attempts in flight at once on this instance.
    pub concurrency: usize,
    /// Deliveries claimed at a time.
    pub batch_size: usize,
    /// How long a claim lasts before another worker may take the delivery.
    pub lease: Duration,
    /// How often idle workers look for due deliveries.
    pub poll_interval: Duration,
    /// A subscription failing without a success this long is disabled.
    pub disable_after: Duration,
    /// Events in one batch ingress request.
    pub max_events_per_request: usize,
    /// RabbitMQ ingress: (URL, queue).
    pub amqp: Option<(String, String)>,
    /// Where mail to merchants goes; without it mail stays in `outbound_emails`.
    pub mail: Option<MailSettings>,
}

impl Default for MessagingSettings {
    fn default() -> Self {
        MessagingSettings {
            concurrency: 512,
            batch_size: 256,
            lease: Duration::from_secs(90),
            poll_interval: Duration::from_millis(250),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            max_events_per_request: 500,
            amqp: None,
            mail: None,
        }
    }
}

/// The message-push service of one instance. Cheap to clone.
#[derive(Clone)]
pub struct Messaging {
    inner: Arc<Inner>,
}

struct Inner {
    platform: Platform,
    oauth: OAuth,
    settings: MessagingSettings,
    topics: topics::Topics,
    ingress: ingress::Writer,
    /// Attempt slots, shared by the dispatcher and ingress (which hands fresh
    /// deliveries straight to free slots).
    slots: dispatch::Slots,
    /// Wakes the dispatcher when new work is committed on this instance.
    work: Arc<Notify>,
    /// Wakes live-channel streams when deliveries are committed on this instance.
    committed: tokio::sync::watch::Sender<u64>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Messaging {
    /// Starts the ingress writer, the delivery workers, the lease and health sweeps and
    /// (if configured) the RabbitMQ consumer.
    pub async fn start(platform: Platform, oauth: OAuth, settings: MessagingSettings) -> Result<Messaging, portico_core::Error> {
        topics::ensure_platform_topics(&platform).await?;
        let mailer = settings.mail.as_ref().map(mail::Mailer::new).transpose()?;
        let work = Arc::new(Notify::new());
        let (committed, _) = tokio::sync::watch::channel(0u64);
        let (slots, handoffs) = dispatch::Slots::new(settings.concurrency);
        let ingress = ingress::Writer::start(platform.store().clone(), work.clone(), committed.clone(), slots.clone(), settings.lease);
        let messaging = Messaging {
            inner: Arc::new(Inner {
                topics: topics::Topics::new(platform.clone()),
                platform,
                oauth,
                settings,
                ingress,
                slots,
                work,
                committed,
                tasks: std::sync::Mutex::new(Vec::new()),
            }),
        };
        let mut tasks = vec![
            tokio::spawn(dispatch::run(messaging.clone(), handoffs)),
            tokio::spawn(dispatch::sweep(messaging.clone())),
            tokio::spawn(messaging.inner.topics.clone().follow()),
        ];
        if let Some(mailer) = mailer {
            tasks.push(tokio::spawn(mail::run(messaging.clone(), mailer)));
        }
        if let Some((url, queue)) = messaging.inner.settings.amqp.clone() {
            tasks.push(tokio::spawn(amqp::consume(messaging.clone(), url, queue)));
        }
        *messaging.inner.tasks.lock().expect("not poisoned") = tasks;
        Ok(messaging)
    }

    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    pub fn settings(&self) -> &MessagingSettings {
        &self.inner.settings
    }

    /// Stops the background tasks (deliveries in flight are retried after their lease).
    pub fn stop(&self) {
        for t in self.inner.tasks.lock().expect("not poisoned").drain(..) {
            t.abort();
        }
    }

    /// The internal listener's routes: event ingress.
    pub fn internal_router(&self) -> axum::Router {
        ingress::router(self.clone())
    }

    /// The public listener's routes: polling and the live channel.
    pub fn public_router(&self) -> axum::Router {
        receive::router(self.clone())
    }
}

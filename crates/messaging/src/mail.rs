//! Mail to merchants (e.g. "your subscription was disabled"). Whatever writes mail puts
//! it in the `outbound_emails` table in the same transaction as the change it reports;
//! this sender relays unsent mail through the SMTP server in `mail.smtp_url` (plain
//! `smtp://`, `smtp://…?tls=required` for STARTTLS, or `smtps://`, with credentials in
//! the URL). An instance claims a mail before sending it, so two instances do not send
//! the same one; a failed send gives it back for the next round.

use std::time::Duration;

use lettre::{message::Mailbox, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use portico_core::{time::now_ms, Error};
use portico_store::messaging as store;

use crate::Messaging;

/// Where mail goes: the SMTP URL and the sender's address.
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub smtp_url: String,
    pub from: String,
}

pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// Checks the settings (at start, so that a typo stops start-up with its name).
    pub fn new(settings: &MailSettings) -> Result<Mailer, Error> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.smtp_url)
            .map_err(|e| Error::validation("mail.smtp_url", e.to_string()))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        let from = settings.from.parse().map_err(|e: lettre::address::AddressError| Error::validation("mail.from", e.to_string()))?;
        Ok(Mailer { transport, from })
    }
}

/// Sends unsent mail every few seconds until the task is aborted.
pub(crate) async fn run(m: Messaging, mailer: Mailer) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        if let Err(e) = send_pending(&m, &mailer).await {
            tracing::warn!(error = %e, "cannot send mail; trying again shortly");
        }
    }
}

async fn send_pending(m: &Messaging, mailer: &Mailer) -> Result<(), Error> {
    let store_ = m.platform().store();
    let pending = {
        let mut conn = store_.read().await?;
        store::unsent_emails(&mut conn, 50).await?
    };
    for mail in pending {
        // Claim it first: another instance may be looking at the same row.
        let mut tx = store_.begin().await?;
        let claimed = store::mark_email_sent(&mut tx, &mail.id, Some(now_ms())).await?;
        portico_store::commit(tx).await?;
        if !claimed {
            continue;
        }
        let message = mail
            .to
            .parse::<Mailbox>()
            .map_err(|e| e.to_string())
            .and_then(|to| Message::builder().from(mailer.from.clone()).to(to).subject(&mail.subject).body(mail.body.clone()).map_err(|e| e.to_string()));
        let message = match message {
            Ok(msg) => msg,
            Err(e) => {
                // An address that cannot be mailed stays marked sent (nothing to retry).
                tracing::warn!(mail = %mail.id, error = %e, "cannot build a mail; dropped");
                continue;
            }
        };
        if let Err(e) = mailer.transport.send(message).await {
            let mut tx = store_.begin().await?;
            store::mark_email_sent(&mut tx, &mail.id, None).await?;
            portico_store::commit(tx).await?;
            return Err(Error::Unavailable(format!("the SMTP server refused or is unreachable: {e}")));
        }
        tracing::info!(mail = %mail.id, to = %mail.to, "sent mail");
    }
    Ok(())
}

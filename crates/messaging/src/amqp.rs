//! Ingress from RabbitMQ: internal systems that already publish to a broker put the same
//! JSON event the HTTP ingress takes (`{"topic", "merchant_id", "payload", …}`) on a
//! durable queue. Each message is acknowledged to the broker only after its event is
//! committed; a message that can never be accepted (bad JSON, unknown topic, a payload
//! that fails the schema) is rejected without requeue, so that a dead-letter exchange
//! configured on the queue keeps it; a database outage requeues it. A lost connection is
//! retried every few seconds.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions},
    types::FieldTable,
    Connection, ConnectionProperties,
};
use portico_core::Error;

use crate::{ingress::EventIn, Messaging};

/// Unacknowledged messages the broker may hand over at once.
const PREFETCH: u16 = 256;

pub(crate) async fn consume(m: Messaging, url: String, queue: String) {
    loop {
        match run(&m, &url, &queue).await {
            Ok(()) => tracing::warn!(queue, "the RabbitMQ consumer ended; reconnecting"),
            Err(e) => tracing::warn!(queue, error = %e, "RabbitMQ ingress is down; reconnecting in 3 s"),
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

async fn run(m: &Messaging, url: &str, queue: &str) -> Result<(), lapin::Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.queue_declare(queue, QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await?;
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut consumer = channel.basic_consume(queue, "portico-ingress", BasicConsumeOptions::default(), FieldTable::default()).await?;
    tracing::info!(queue, "consuming events from RabbitMQ");
    // The broker hands over at most PREFETCH unacknowledged messages, which bounds how
    // many are being committed at once (they share the ingress group commit).
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let m = m.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(&m, delivery).await {
                tracing::warn!(error = %e, "cannot answer RabbitMQ about a message; it will be redelivered");
            }
        });
    }
    Ok(())
}

async fn handle(m: &Messaging, delivery: lapin::message::Delivery) -> Result<(), lapin::Error> {
    let parsed: Result<EventIn, Error> = serde_json::from_slice(&delivery.data).map_err(|e| Error::validation("body", format!("is not an event: {e}")));
    let result = match parsed {
        Ok(event) => m.publish(vec![event], "amqp").await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
        Err(Error::Unavailable(why)) | Err(Error::Internal(why)) => {
            tracing::warn!(error = %why, "cannot store an event from RabbitMQ now; it goes back to the queue");
            tokio::time::sleep(Duration::from_millis(500)).await;
            delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "refused an event from RabbitMQ (rejected without requeue)");
            delivery.reject(BasicRejectOptions { requeue: false }).await
        }
    }
}

//! Self-registration for services behind the gateway: register with the registry on
//! Portico's internal listener, beat every 30 s (registering again if Portico forgot the
//! instance), and deregister on shutdown.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let registration = portico_sdk::registry::Registration::start(
//!     "http://127.0.0.1:8082", "order-svc", "10.0.0.7", 9000,
//! ).await?;
//! // … serve …
//! registration.stop().await?;
//! # Ok(()) }
//! ```

use std::{io, time::Duration};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};

/// A registered instance; beats until [`Registration::stop`].
pub struct Registration {
    pub id: String,
    registry: String,
    stop: Option<oneshot::Sender<()>>,
    beats: Option<JoinHandle<()>>,
}

impl Registration {
    /// Registers `host:port` as an instance of `service` with the registry at
    /// `registry` (the internal listener's base URL, `http://host:port`).
    pub async fn start(registry: &str, service: &str, host: &str, port: u16) -> io::Result<Registration> {
        let body = json!({ "service": service, "host": host, "port": port });
        let (status, answer) = request(registry, "POST", "/registry/v1/instances", Some(&body)).await?;
        if status != 201 {
            return Err(io::Error::other(format!("registration refused ({status}): {answer}")));
        }
        let id = answer["data"]["id"].as_str().ok_or_else(|| io::Error::other("no instance id in the answer"))?.to_string();
        let interval = Duration::from_secs(answer["data"]["heartbeat_interval_secs"].as_u64().unwrap_or(30).max(1));
        let (stop, mut stopped) = oneshot::channel();
        let (base, beat_id) = (registry.to_string(), id.clone());
        let mut again = body;
        again["id"] = json!(id);
        let beats = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {
                        match request(&base, "PUT", &format!("/registry/v1/instances/{beat_id}/heartbeat"), None).await {
                            // Forgotten (Portico restarted on a fresh database, or we were silent too long).
                            Ok((404, _)) => { let _ = request(&base, "POST", "/registry/v1/instances", Some(&again)).await; }
                            Ok(_) => {}
                            Err(_) => {} // Portico unreachable: try again at the next beat.
                        }
                    }
                }
            }
        });
        Ok(Registration { id, registry: registry.to_string(), stop: Some(stop), beats: Some(beats) })
    }

    /// Stops beating and deregisters: the gateway stops sending calls at once.
    pub async fn stop(mut self) -> io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(b) = self.beats.take() {
            let _ = b.await;
        }
        let (status, answer) = request(&self.registry, "DELETE", &format!("/registry/v1/instances/{}", self.id), None).await?;
        if status != 200 && status != 404 {
            return Err(io::Error::other(format!("deregistration refused ({status}): {answer}")));
        }
        Ok(())
    }
}

/// A minimal HTTP/1.1 exchange with the internal listener (plain HTTP on a private
/// network), so the SDK needs no HTTP client library.
async fn request(base: &str, method: &str, path: &str, body: Option<&Value>) -> io::Result<(u16, Value)> {
    let authority = base.strip_prefix("http://").ok_or_else(|| io::Error::other("the registry URL must start with http://"))?.trim_end_matches('/');
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        payload.len()
    );
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(authority)).await.map_err(|_| io::Error::other("connect timed out"))??;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(payload.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.map_err(|_| io::Error::other("the registry did not answer"))??;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| io::Error::other("not an HTTP answer"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

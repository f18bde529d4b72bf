//! Durability under `kill -9` (the CI-sized version of `bench/crash.sh`): events are
//! published to the real `portico` binary, which is killed in the middle and started
//! again; every accepted event reaches the receiver. On PostgreSQL a second instance
//! runs beside the killed one and finishes its work (the killed one's leases run out).

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};

use crate::{
    helpers::{Engine, TestApp},
    messaging::{setup, subscribe, within, Receiver},
};

const EVENTS: usize = 4000;
const BATCH: usize = 100;

/// The binary on free ports, sharing the test app's database; returns it and its
/// internal listener's URL (read from its "serving" log line, on standard error).
fn start_binary(database_url: &str, master_key: &str, data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORTICO_DATA_DIR", data_dir)
        .env("PORTICO_DATABASE__URL", database_url)
        .env("PORTICO_MASTER_KEY", master_key)
        .env("PORTICO_ADMIN_PASSWORD", "admin password 1")
        .env("PORTICO_PUBLIC__ADDR", "127.0.0.1:0")
        .env("PORTICO_CONSOLE__ADDR", "127.0.0.1:0")
        .env("PORTICO_INTERNAL__ADDR", "127.0.0.1:0")
        .env("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32")
        .env("PORTICO_MESSAGING__LEASE_SECS", "5")
        .env("PORTICO_LOG__FORMAT", "json")
        .env("PORTICO_LOG__LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start portico");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let internal = loop {
        let line = lines.next().expect("portico printed its addresses").unwrap();
        if line.contains("portico is serving") {
            let v: Value = serde_json::from_str(&line).unwrap();
            let fields = if v["fields"].is_object() { &v["fields"] } else { &v };
            break format!("http://{}", fields["internal"].as_str().unwrap());
        }
    };
    // Keep reading the log so that the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, internal)
}

/// Publishes events `range` in batches with idempotency keys, retrying a batch until some
/// instance in `targets` accepts it; `kill_after` kills `victim` once that many are in.
async fn publish_all(client: &reqwest::Client, targets: &[String], range: std::ops::Range<usize>, mut victim: Option<(&mut Child, usize)>) {
    let mut next = range.start;
    let mut turn = 0;
    while next < range.end {
        let end = (next + BATCH).min(range.end);
        let events: Vec<Value> = (next..end)
            .map(|i| json!({ "topic": "order.status_changed", "business_key": format!("k-{}", i % 97), "idempotency_key": format!("crash-{i}"), "payload": { "order_id": i.to_string(), "status": "paid" } }))
            .collect();
        let target = &targets[turn % targets.len()];
        let ok = match client.post(format!("{target}/messages/v1/events/batch")).json(&json!({ "events": events })).send().await {
            Ok(res) if res.status() == 201 => true,
            Ok(res) => {
                eprintln!("publish to {target}: {} {}", res.status(), res.text().await.unwrap_or_default());
                false
            }
            Err(e) => {
                eprintln!("publish to {target}: {e}");
                false
            }
        };
        turn += 1;
        if !ok {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        next = end;
        if let Some((child, at)) = victim.as_mut() {
            if next >= *at {
                child.kill().expect("kill -9");
                child.wait().unwrap();
                victim = None;
            }
        }
    }
}

fn missing(receiver: &Receiver, n: usize) -> usize {
    let mut seen = vec![false; n];
    for r in receiver.accepted() {
        if let Some(i) = r.json()["data"]["order_id"].as_str().and_then(|s| s.parse::<usize>().ok()) {
            seen[i] = true;
        }
    }
    seen.iter().filter(|s| !**s).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accepted_event_is_lost_when_portico_is_killed() {
    for engine in crate::helpers::engines() {
        let receiver = Receiver::start().await;
        let app = TestApp::spawn_with(engine, &[("PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS", "127.0.0.1/32"), ("PORTICO_MESSAGING__LEASE_SECS", "5")]).await;
        let (_, m, owner, created) = setup(&app, json!({ "payload_schema": null })).await;
        let app_id = created["app"]["id"].as_str().unwrap();
        subscribe(&app, &m, &owner, app_id, json!({ "topic": "order.status_changed", "callback_url": receiver.url, "max_in_flight": 100 })).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        match engine {
            Engine::Sqlite => {
                // One instance: killed half-way, started again on the same file.
                let detached = app.detach().await;
                let (mut first, internal) = start_binary(&detached.database_url, &detached.master_key, detached.dir.path());
                publish_all(&client, &[internal], 0..EVENTS / 2, Some((&mut first, EVENTS / 2))).await;
                let (mut second, internal) = start_binary(&detached.database_url, &detached.master_key, detached.dir.path());
                publish_all(&client, &[internal], EVENTS / 2..EVENTS, None).await;
                within(60, "every accepted event delivered after the restart", || async { missing(&receiver, EVENTS) == 0 }).await;
                second.kill().unwrap();
                second.wait().unwrap();
                detached.remove().await;
            }
            Engine::Postgres => {
                // Two instances; one is killed while both work, the other finishes.
                let (mut victim, victim_internal) = start_binary(&app.database_url, &app.master_key, tempfile::tempdir().unwrap().path());
                publish_all(&client, &[victim_internal, app.internal.clone()], 0..EVENTS, Some((&mut victim, EVENTS / 2))).await;
                within(60, "every accepted event delivered by the survivor", || async { missing(&receiver, EVENTS) == 0 }).await;
                app.stop().await;
            }
        }
        assert_eq!(missing(&receiver, EVENTS), 0, "lost events");
        let mut ids: Vec<String> = receiver.accepted().into_iter().map(|r| r.id).collect();
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), EVENTS, "one delivery per event, each delivered at least once ({total} receipts)");
    }
}

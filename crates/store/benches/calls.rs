//! Cost of writing the gateway's call records: batches of 10,000 rows (a quarter
//! second's records at 40,000 calls a second) written by `calls::write` into a fresh
//! SQLite file, and into PostgreSQL when `PORTICO_BENCH_DATABASE_URL` names a scratch
//! database (the rows stay there). Prints wall time and the process's CPU time (every
//! thread: the caller's and any driver worker's) per record.
//! Run: `cargo bench -p portico-store --bench calls`.

use std::time::Instant;

use portico_store::{
    calls::{self, CallRecord},
    Store,
};

// The allocator the portico binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 10_000;
const BATCHES: usize = 41;

/// The process's user and system time, in seconds (fields 14 and 15 of /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Merchants the calls are spread over: `MERCHANTS`, 100 unless set.
fn merchants() -> usize {
    std::env::var("MERCHANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

/// A call of one of the merchants' 1,000 apps, with a trace id of the gateway's making.
fn record(i: usize) -> CallRecord {
    CallRecord {
        id: portico_core::id::new_id("cal"),
        at: portico_core::time::now_ms(),
        trace_id: portico_core::trace::new_trace_id(),
        merchant_id: Some(format!("mch_{:028}", i % merchants())),
        app_id: Some(format!("app_{:028}", i % 1000)),
        api: Some("order.create v1".to_string()),
        status: 200,
        code: 0,
        latency_us: 850 + (i % 400) as i64,
        bytes_in: 120,
        bytes_out: 340,
        client_ip: "203.0.113.7".to_string(),
    }
}

async fn run(label: &str, store: Store) {
    let (mut wall, mut cpu) = (0.0, 0.0);
    let writer = store.records_writer();
    for b in 0..BATCHES {
        let rows: Vec<CallRecord> = (0..BATCH).map(|i| record(b * BATCH + i)).collect();
        let (t, c) = (Instant::now(), cpu_seconds());
        calls::write(&writer, &rows, &[]).await.expect("a batch written");
        // The first batch warms the caches.
        if b > 0 {
            wall += t.elapsed().as_secs_f64();
            cpu += cpu_seconds() - c;
        }
    }
    let n = ((BATCHES - 1) * BATCH) as f64;
    println!("{label}: {n} records in batches of {BATCH} after a warm-up batch: wall {:.2} us, process CPU {:.2} us per record", wall * 1e6 / n, cpu * 1e6 / n);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    run("SQLite", Store::open(&url, 4).await.expect("SQLite")).await;
    if let Ok(url) = std::env::var("PORTICO_BENCH_DATABASE_URL") {
        run("PostgreSQL", Store::open(&url, 4).await.expect("PostgreSQL")).await;
    }
}


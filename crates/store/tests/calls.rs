//! Call records written in segments and read back: a merchant's calls newest first across
//! segments and batches, pages that neither skip nor repeat, trace ids of the gateway's
//! making and of a client's, merchants kept apart. On SQLite always, on PostgreSQL when
//! `PORTICO_TEST_DATABASE_URL` is set (merchant ids are fresh, so earlier runs' rows do
//! not matter).

use portico_core::{id::new_id, page::PageRequest, time::now_ms, trace::new_trace_id};
use portico_store::{
    calls::{self, CallRecord},
    Store,
};

fn call(merchant: &str, at: i64, trace_id: String) -> CallRecord {
    CallRecord {
        id: new_id("cal"),
        at,
        trace_id,
        merchant_id: Some(merchant.to_string()),
        app_id: Some("app_1".into()),
        api: Some("order.get@1.0".into()),
        status: 200,
        code: 0,
        latency_us: 900,
        bytes_in: 10,
        bytes_out: 20,
        client_ip: "203.0.113.9".into(),
    }
}

/// A trace id of the gateway's form minted at `ms`.
fn minted(ms: i64) -> String {
    format!("{ms:012x}0123456789abcdef0123")
}

async fn page(store: &Store, merchant: Option<&str>, trace: Option<&str>, limit: u32, after: Option<String>) -> Vec<CallRecord> {
    let mut conn = store.read_records().await.unwrap();
    calls::calls(&mut conn, merchant, trace, &PageRequest { limit, after }).await.unwrap()
}

/// Every call of `merchant`, walking pages of `limit` as the console does.
async fn walk(store: &Store, merchant: Option<&str>, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let mut rows = page(store, merchant, None, limit, after.clone()).await;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        ids.extend(rows.iter().map(|c| c.id.clone()));
        if !more {
            return ids;
        }
        after = rows.last().map(|c| c.id.clone());
    }
}

async fn segments_read_back(store: Store, fresh: bool) {
    let (a, b) = (new_id("mch"), new_id("mch"));
    let writer = store.records_writer();
    let now = now_ms();
    // Three batches; merchant a's calls also span more than a segment holds (4,096) and
    // more than a segment's minute of start times.
    let mut written_a = Vec::new();
    let mut written_b = Vec::new();
    for batch in 0..3 {
        let mut rows = Vec::new();
        let n = if batch == 1 { 5_000 } else { 7 };
        for i in 0..n {
            rows.push(match (batch, i) {
                // Started two minutes before the others, with a trace id of that moment.
                (2, 0) => call(&a, now - 120_000, minted(now - 120_000)),
                // A trace id of the gateway's form, but of another moment (a client's).
                (0, 1) => call(&a, now, minted(now - 3_600_000)),
                _ => call(&a, now, new_trace_id()),
            });
        }
        rows.push(call(&b, now, "client-trace-0001".into()));
        written_a.extend(rows.iter().filter(|c| c.merchant_id.as_deref() == Some(a.as_str())).map(|c| c.id.clone()));
        written_b.extend(rows.iter().filter(|c| c.merchant_id.as_deref() == Some(b.as_str())).map(|c| c.id.clone()));
        calls::write(&writer, &rows, &[]).await.unwrap();
    }
    written_a.sort_unstable_by(|x, y| y.cmp(x));
    written_b.sort_unstable_by(|x, y| y.cmp(x));

    for limit in [1, 7, 100, 500] {
        let got = if limit == 1 { walk(&store, Some(&b), limit).await } else { walk(&store, Some(&a), limit).await };
        assert_eq!(got, if limit == 1 { written_b.clone() } else { written_a.clone() }, "pages of {limit}");
    }
    if fresh {
        let mut everyone: Vec<String> = written_a.iter().chain(&written_b).cloned().collect();
        everyone.sort_unstable_by(|x, y| y.cmp(x));
        assert_eq!(walk(&store, None, 250).await, everyone);
    }

    // A trace id of the gateway's making is found through its moment, a client's through
    // call_traces; each only within its merchant.
    let first = page(&store, Some(&a), None, 5, None).await[3].clone();
    assert_eq!(page(&store, Some(&a), Some(&first.trace_id), 20, None).await, vec![first.clone()]);
    assert_eq!(page(&store, None, Some(&first.trace_id), 20, None).await, vec![first.clone()]);
    assert!(page(&store, Some(&b), Some(&first.trace_id), 20, None).await.is_empty());
    let client = page(&store, Some(&b), Some("client-trace-0001"), 20, None).await;
    assert_eq!(client.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), written_b, "three calls brought the same trace id");
    assert_eq!(page(&store, Some(&b), Some("client-trace-0001"), 1, Some(written_b[0].clone())).await.len(), 2);
    assert!(page(&store, Some(&a), Some("client-trace-0001"), 20, None).await.is_empty());
    for trace in [minted(now - 120_000), minted(now - 3_600_000)] {
        let found = page(&store, Some(&a), Some(&trace), 20, None).await;
        assert_eq!(found.len(), 1, "{trace}");
        assert_eq!(found[0].trace_id, trace);
    }
    // Every column comes back as written.
    assert_eq!(first.app_id.as_deref(), Some("app_1"));
    assert_eq!((first.status, first.code, first.latency_us, first.bytes_in, first.bytes_out), (200, 0, 900, 10, 20));
    assert_eq!(first.client_ip, "203.0.113.9");
    assert_eq!(first.merchant_id.as_deref(), Some(a.as_str()));
}

#[tokio::test]
async fn segments_read_back_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()), 4).await.unwrap();
    segments_read_back(store, true).await;
}

#[tokio::test]
async fn segments_read_back_on_postgres() {
    let Ok(url) = std::env::var("PORTICO_TEST_DATABASE_URL") else { return };
    segments_read_back(Store::open(&url, 4).await.unwrap(), false).await;
}

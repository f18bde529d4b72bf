//! What the gateway records per call (`call_segments`, `call_traces`) and the business
//! keys it names (`business_keys`), written in batches off the request path.
//!
//! Calls are stored in segments: one row per merchant per batch, holding up to
//! `SEGMENT_CALLS` calls packed in a binary body (layout below), never updated. A row per
//! call with its three indexes cost the box about 2.8 us per call at 67,000 calls a
//! second, the largest cost left beside proxying; a segment costs a tenth of that
//! (`cargo bench -p portico-store --bench calls`, BENCHMARKS.md).
//!
//! Reading: a merchant's calls (or everyone's) newest first come from the segments in
//! `last_id` order, merged; a trace id of the gateway's making carries its millisecond
//! (`trace::minted_at`), so the segments of that moment are read; any other trace id is
//! written to `call_traces` with its segment, and found there.

use std::collections::BTreeMap;

use portico_core::{id::new_id, page::PageRequest, trace, Error};
use sqlx::{any::AnyRow, AnyConnection};

use crate::{col, DbResult, Engine, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: String,
    pub at: i64,
    pub trace_id: String,
    pub merchant_id: Option<String>,
    pub app_id: Option<String>,
    pub api: Option<String>,
    pub status: i64,
    pub code: i64,
    pub latency_us: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub client_ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessKeyRecord {
    pub id: String,
    pub merchant_id: String,
    pub app_id: String,
    pub api: String,
    pub business_key: String,
    pub trace_id: String,
    pub at: i64,
}

/// Calls per segment at most: a query for one page decodes at most a few segments.
const SEGMENT_CALLS: usize = 4096;
/// A segment's calls started within this many milliseconds of each other, so the
/// segments holding a given moment are found from `first_at` alone.
const SEGMENT_SPAN_MS: i64 = 60_000;
/// A trace id's millisecond counts for its call when within this of the call's start.
const TRACE_SLACK_MS: i64 = 1_000;

/// Writes a batch of records in one transaction: all of it or none.
pub async fn write(store: &Store, calls: &[CallRecord], keys: &[BusinessKeyRecord]) -> Result<(), Error> {
    let mut tx = store.begin().await?;
    insert_segments(&mut tx, store.engine(), calls).await?;
    for k in keys {
        sqlx::query("INSERT INTO business_keys (id, merchant_id, app_id, api, business_key, trace_id, at) VALUES ($1,$2,$3,$4,$5,$6,$7)")
            .bind(&k.id)
            .bind(&k.merchant_id)
            .bind(&k.app_id)
            .bind(&k.api)
            .bind(&k.business_key)
            .bind(&k.trace_id)
            .bind(k.at)
            .execute(&mut *tx)
            .await
            .db()?;
    }
    crate::commit(tx).await
}

/// Packs calls into segments: grouped by merchant, ordered by start time, cut at
/// `SEGMENT_CALLS` calls or `SEGMENT_SPAN_MS` of start times.
async fn insert_segments(conn: &mut AnyConnection, engine: Engine, calls: &[CallRecord]) -> Result<(), Error> {
    let mut by_merchant: BTreeMap<Option<&str>, Vec<&CallRecord>> = BTreeMap::new();
    for c in calls {
        by_merchant.entry(c.merchant_id.as_deref()).or_default().push(c);
    }
    // (id, merchant, its calls)
    let mut segments: Vec<(String, Option<&str>, &[&CallRecord])> = Vec::new();
    for (merchant_id, group) in &mut by_merchant {
        group.sort_by_key(|c| c.at);
        let mut rest = &group[..];
        while let Some(first) = rest.first() {
            let n = rest.iter().take(SEGMENT_CALLS).take_while(|c| c.at - first.at <= SEGMENT_SPAN_MS).count();
            let (segment, after) = rest.split_at(n);
            rest = after;
            segments.push((new_id("seg"), *merchant_id, segment));
        }
    }
    for chunk in segments.chunks(16) {
        let sql = crate::multi_row_insert(engine, "call_segments (id, merchant_id, first_id, last_id, first_at, last_at, calls, body)", chunk.len(), 8);
        let mut q = sqlx::query(&sql);
        for (id, merchant_id, calls) in chunk {
            let ids = || calls.iter().map(|c| c.id.as_str());
            q = q
                .bind(id)
                .bind(*merchant_id)
                .bind(ids().min().unwrap_or_default())
                .bind(ids().max().unwrap_or_default())
                .bind(calls.first().map_or(0, |c| c.at))
                .bind(calls.last().map_or(0, |c| c.at))
                .bind(calls.len() as i64)
                .bind(encode(calls));
        }
        q.execute(&mut *conn).await.db()?;
    }
    let traces: Vec<(&str, &str)> = segments
        .iter()
        .flat_map(|(id, _, calls)| calls.iter().filter(|c| !tells_its_time(&c.trace_id, c.at)).map(move |c| (c.trace_id.as_str(), id.as_str())))
        .collect();
    for chunk in traces.chunks(200) {
        let sql = crate::multi_row_insert(engine, "call_traces (trace_id, segment_id)", chunk.len(), 2);
        let mut q = sqlx::query(&sql);
        for (trace_id, segment_id) in chunk {
            q = q.bind(*trace_id).bind(*segment_id);
        }
        q.execute(&mut *conn).await.db()?;
    }
    Ok(())
}

/// Whether a call is found by its trace id's own millisecond.
fn tells_its_time(trace_id: &str, at: i64) -> bool {
    trace::minted_at(trace_id).is_some_and(|t| (t - at).abs() <= TRACE_SLACK_MS)
}

/// Migration 7's step: moves the rows of the old `api_calls` table (a row per call) into
/// segments, a merchant's calls in id order. Inside the migration's transaction.
pub(crate) async fn fold_rows(conn: &mut AnyConnection, engine: Engine) -> Result<(), Error> {
    let mut after = String::new();
    loop {
        let rows = sqlx::query(
            "SELECT id, at, trace_id, merchant_id, app_id, api, status, code, latency_us, bytes_in, bytes_out, client_ip FROM api_calls \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(&after)
        .bind(SEGMENT_CALLS as i64 * 4)
        .fetch_all(&mut *conn)
        .await
        .db()?;
        let Some(last) = rows.last() else { return Ok(()) };
        after = col(last, "id")?;
        let calls = rows.iter().map(|r| -> Result<CallRecord, Error> {
            Ok(CallRecord {
                id: col(r, "id")?,
                at: col(r, "at")?,
                trace_id: col(r, "trace_id")?,
                merchant_id: col(r, "merchant_id")?,
                app_id: col(r, "app_id")?,
                api: col(r, "api")?,
                status: col(r, "status")?,
                code: col(r, "code")?,
                latency_us: col(r, "latency_us")?,
                bytes_in: col(r, "bytes_in")?,
                bytes_out: col(r, "bytes_out")?,
                client_ip: col(r, "client_ip")?,
            })
        });
        insert_segments(conn, engine, &calls.collect::<Result<Vec<_>, _>>()?).await?;
    }
}

/// A merchant's calls (all merchants' when `None`), newest first: up to `page.limit + 1`
/// of those with an id below `page.after`, only those of `trace_id` when given.
pub async fn calls(conn: &mut AnyConnection, merchant_id: Option<&str>, trace_id: Option<&str>, page: &PageRequest) -> Result<Vec<CallRecord>, Error> {
    let want = page.limit as usize + 1;
    let after = page.after.as_deref();
    match trace_id {
        Some(t) => of_trace(conn, merchant_id, t, after, want).await,
        None => newest(conn, merchant_id, after, want).await,
    }
}

/// Segments are read in `last_id` order (a call is in one segment, so no two segments
/// share a `last_id`), a few at a time; once `want` calls are held, a segment whose newest
/// call is older than the oldest held cannot add any.
async fn newest(conn: &mut AnyConnection, merchant_id: Option<&str>, after: Option<&str>, want: usize) -> Result<Vec<CallRecord>, Error> {
    let sql = format!(
        "SELECT id, merchant_id, last_id, body FROM call_segments WHERE {} AND ($2 IS NULL OR first_id < $2) AND ($3 IS NULL OR last_id < $3) \
         ORDER BY last_id DESC LIMIT 8",
        // Two forms, so that each can use its index.
        if merchant_id.is_some() { "merchant_id = $1" } else { "($1 IS NULL OR merchant_id = $1)" }
    );
    let mut held: Vec<CallRecord> = Vec::new();
    let mut read_to: Option<String> = None;
    loop {
        let rows = sqlx::query(&sql).bind(merchant_id).bind(after).bind(read_to.as_deref()).fetch_all(&mut *conn).await.db()?;
        if rows.is_empty() {
            return Ok(held);
        }
        for row in &rows {
            let last_id: String = col(row, "last_id")?;
            if held.len() >= want && held.last().is_some_and(|oldest| last_id < oldest.id) {
                return Ok(held);
            }
            held.extend(decode_row(row)?.into_iter().filter(|c| after.is_none_or(|a| c.id.as_str() < a)));
            held.sort_unstable_by(|a, b| b.id.cmp(&a.id));
            held.truncate(want);
            read_to = Some(last_id);
        }
    }
}

/// The calls of one trace id: from the segments of its millisecond when it tells one, and
/// from those `call_traces` names.
async fn of_trace(conn: &mut AnyConnection, merchant_id: Option<&str>, trace_id: &str, after: Option<&str>, want: usize) -> Result<Vec<CallRecord>, Error> {
    let mut rows = sqlx::query(
        "SELECT s.id, s.merchant_id, s.body FROM call_traces t JOIN call_segments s ON s.id = t.segment_id \
         WHERE t.trace_id = $1 AND ($2 IS NULL OR s.merchant_id = $2)",
    )
    .bind(trace_id)
    .bind(merchant_id)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    if let Some(t) = trace::minted_at(trace_id) {
        let moment = sqlx::query(
            "SELECT id, merchant_id, body FROM call_segments \
             WHERE first_at >= $1 AND first_at <= $2 AND last_at >= $3 AND ($4 IS NULL OR merchant_id = $4)",
        )
        .bind(t - TRACE_SLACK_MS - SEGMENT_SPAN_MS)
        .bind(t + TRACE_SLACK_MS)
        .bind(t - TRACE_SLACK_MS)
        .bind(merchant_id)
        .fetch_all(&mut *conn)
        .await
        .db()?;
        rows.extend(moment);
    }
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for row in &rows {
        if seen.insert(col::<String>(row, "id")?) {
            found.extend(decode_row(row)?.into_iter().filter(|c| c.trace_id == trace_id && after.is_none_or(|a| c.id.as_str() < a)));
        }
    }
    found.sort_unstable_by(|a, b| b.id.cmp(&a.id));
    found.truncate(want);
    Ok(found)
}

fn decode_row(row: &AnyRow) -> Result<Vec<CallRecord>, Error> {
    let merchant_id: Option<String> = col(row, "merchant_id")?;
    let body: Vec<u8> = col(row, "body")?;
    decode(&body, merchant_id.as_deref()).map_err(|e| Error::Internal(format!("call segment {}: {e}", col::<String>(row, "id").unwrap_or_default())))
}

// A segment's body: a version byte (1), then per call, in this order: id, at, trace_id,
// app_id, api, status, code, latency_us, bytes_in, bytes_out, client_ip. Integers are 8
// bytes little-endian; a string is its length in 2 bytes little-endian then its UTF-8
// bytes; an absent string is the length 0xFFFF alone. The merchant is the segment's.

const BODY_VERSION: u8 = 1;
const ABSENT: u16 = u16::MAX;

fn encode(calls: &[&CallRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + calls.len() * 200);
    out.push(BODY_VERSION);
    for c in calls {
        put_str(&mut out, Some(&c.id));
        out.extend_from_slice(&c.at.to_le_bytes());
        put_str(&mut out, Some(&c.trace_id));
        put_str(&mut out, c.app_id.as_deref());
        put_str(&mut out, c.api.as_deref());
        for n in [c.status, c.code, c.latency_us, c.bytes_in, c.bytes_out] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        put_str(&mut out, Some(&c.client_ip));
    }
    out
}

/// Writes a string, cut to 65,534 bytes at a character boundary (no field the gateway
/// records comes near).
fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    let Some(s) = s else {
        out.extend_from_slice(&ABSENT.to_le_bytes());
        return;
    };
    let mut end = s.len().min(ABSENT as usize - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn decode(body: &[u8], merchant_id: Option<&str>) -> Result<Vec<CallRecord>, String> {
    let mut r = Reader(body);
    let version = r.take(1)?[0];
    if version != BODY_VERSION {
        return Err(format!("unknown layout version {version}"));
    }
    let mut calls = Vec::new();
    while !r.0.is_empty() {
        calls.push(CallRecord {
            id: r.string()?,
            at: r.int()?,
            trace_id: r.string()?,
            merchant_id: merchant_id.map(str::to_string),
            app_id: r.optional_string()?,
            api: r.optional_string()?,
            status: r.int()?,
            code: r.int()?,
            latency_us: r.int()?,
            bytes_in: r.int()?,
            bytes_out: r.int()?,
            client_ip: r.string()?,
        });
    }
    Ok(calls)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("truncated: {n} bytes wanted, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn int(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        Ok(i64::from_le_bytes(b.try_into().map_err(|_| "truncated integer".to_string())?))
    }

    fn optional_string(&mut self) -> Result<Option<String>, String> {
        let len = self.take(2)?;
        let len = u16::from_le_bytes([len[0], len[1]]);
        if len == ABSENT {
            return Ok(None);
        }
        let bytes = self.take(usize::from(len))?;
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| "a string is not UTF-8".to_string())
    }

    fn string(&mut self) -> Result<String, String> {
        self.optional_string()?.ok_or_else(|| "a required string is absent".to_string())
    }
}

/// A merchant's business keys, optionally of one API, newest first.
pub async fn business_keys(conn: &mut AnyConnection, merchant_id: &str, api: Option<&str>, page: &PageRequest) -> Result<Vec<BusinessKeyRecord>, Error> {
    let rows = sqlx::query(
        "SELECT id, merchant_id, app_id, api, business_key, trace_id, at FROM business_keys \
         WHERE merchant_id = $1 AND ($2 IS NULL OR api = $2) AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
    )
    .bind(merchant_id)
    .bind(api)
    .bind(page.after.as_deref())
    .bind(page.limit as i64 + 1)
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter()
        .map(|r| {
            Ok(BusinessKeyRecord {
                id: col(r, "id")?,
                merchant_id: col(r, "merchant_id")?,
                app_id: col(r, "app_id")?,
                api: col(r, "api")?,
                business_key: col(r, "business_key")?,
                trace_id: col(r, "trace_id")?,
                at: col(r, "at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn call() -> impl Strategy<Value = CallRecord> {
        (
            ("[a-z0-9_]{1,40}", any::<i64>(), "\\PC{0,70}"),
            (proptest::option::of("\\PC{0,40}"), proptest::option::of("\\PC{0,40}")),
            (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>(), "[0-9a-f:.]{0,45}"),
        )
            .prop_map(|((id, at, trace_id), (app_id, api), (status, code, latency_us, bytes_in, bytes_out, client_ip))| CallRecord {
                id,
                at,
                trace_id,
                merchant_id: Some("mch_1".into()),
                app_id,
                api,
                status,
                code,
                latency_us,
                bytes_in,
                bytes_out,
                client_ip,
            })
    }

    proptest! {
        #[test]
        fn a_segment_body_gives_back_its_calls(calls in proptest::collection::vec(call(), 0..20)) {
            let refs: Vec<&CallRecord> = calls.iter().collect();
            prop_assert_eq!(decode(&encode(&refs), Some("mch_1")).unwrap(), calls);
        }

        #[test]
        fn any_bytes_decode_to_calls_or_an_error(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&body, None);
        }

        #[test]
        fn a_cut_body_is_an_error_or_the_calls_before_the_cut(calls in proptest::collection::vec(call(), 1..5), cut in 1usize..1000) {
            let refs: Vec<&CallRecord> = calls.iter().collect();
            let body = encode(&refs);
            let cut = cut % (body.len() - 1) + 1;
            let cut_body = &body[..cut];
            // A cut exactly between two calls is a shorter, valid body; anywhere else an error.
            if let Ok(got) = decode(cut_body, Some("mch_1")) {
                prop_assert!(got.len() < calls.len());
                prop_assert_eq!(&got[..], &calls[..got.len()]);
            }
        }
    }

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let mut c = CallRecord {
            id: "cal_1".into(),
            at: 1,
            trace_id: "é".repeat(40_000),
            merchant_id: None,
            app_id: None,
            api: None,
            status: 200,
            code: 0,
            latency_us: 1,
            bytes_in: 0,
            bytes_out: 0,
            client_ip: "::1".into(),
        };
        let got = decode(&encode(&[&c]), None).unwrap();
        assert_eq!(got[0].trace_id.len(), 65_534);
        c.trace_id = got[0].trace_id.clone();
        assert_eq!(got, vec![c]);
    }

    #[test]
    fn only_trace_ids_of_the_gateways_making_tell_their_time() {
        let t = trace::new_trace_id();
        let now = portico_core::time::now_ms();
        assert!(tells_its_time(&t, now));
        assert!(!tells_its_time(&t, now + 60_000), "a client's id that decodes to another moment");
        assert!(!tells_its_time("my-own-trace-0001", now));
    }
}

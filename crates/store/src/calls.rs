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

use portico_core::{id::new_id, page::PageRequest, trace, Error, FastMap};
use sqlx::{any::AnyRow, AnyConnection, AnyPool};

use crate::{col, DbResult, Engine};

/// A call's record. Read back with owned strings; the writer may hand in borrowed ones
/// (`CallRecord<&str>`, or `Cow`), so a batch need not copy names it already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord<S = String> {
    pub id: S,
    pub at: i64,
    pub trace_id: S,
    pub merchant_id: Option<S>,
    pub app_id: Option<S>,
    pub api: Option<S>,
    pub status: i64,
    pub code: i64,
    pub latency_us: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub client_ip: S,
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

/// Writes call records and business keys to the records' database ([`crate::Store::records_writer`]).
#[derive(Debug)]
pub struct Writer {
    pub(crate) pool: AnyPool,
    pub(crate) engine: Engine,
    /// Through the paced VFS (`paced`): the writer also pauses between statements.
    pub(crate) paced: bool,
}

/// Writes a batch of records in one transaction: all of it or none. The calls are packed
/// into their segments (the CPU work) before the transaction opens.
pub async fn write<S: AsRef<str>>(writer: &Writer, calls: &[CallRecord<S>], keys: &[BusinessKeyRecord]) -> Result<(), Error> {
    let mut packer = Packer::default();
    calls.iter().for_each(|c| packer.push(c));
    packer.write(writer, keys).await
}

/// Calls packed into segments as they come, then written at once: the gateway's writer
/// pushes each call when it takes it from its queue, so the CPU work of a batch is
/// spread over the time the batch gathers instead of falling in one burst at its end.
///
/// A merchant's calls go to its open segment, which is sealed at `SEGMENT_CALLS` calls,
/// when another call would stretch its start times over more than `SEGMENT_SPAN_MS`, and
/// at the write. Calls keep the order they were pushed in (readers sort by id).
#[derive(Debug, Default)]
pub struct Packer {
    /// The open segment of the calls without a merchant.
    unowned: Option<Open>,
    /// Open segments by merchant.
    owned: FastMap<String, Option<Open>>,
    sealed: Vec<Sealed>,
    /// Calls whose trace id does not tell its time: (trace id, segment id).
    traces: Vec<(String, String)>,
    calls: usize,
}

/// What a segment's row says of it beside its body.
#[derive(Debug)]
struct Head {
    id: String,
    merchant_id: Option<String>,
    first_id: String,
    last_id: String,
    /// The earliest and latest start times of its calls.
    first_at: i64,
    last_at: i64,
    calls: usize,
}

/// A segment being filled.
#[derive(Debug)]
struct Open {
    head: Head,
    /// The start time of the call before, which the next one is written against.
    before: i64,
    rows: Vec<u8>,
    table: Table,
}

#[derive(Debug)]
struct Sealed {
    head: Head,
    body: Vec<u8>,
}

impl Packer {
    /// Packs one call into its merchant's open segment.
    pub fn push<S: AsRef<str>>(&mut self, c: &CallRecord<S>) {
        let merchant_id = c.merchant_id.as_ref().map(AsRef::as_ref);
        let slot = match merchant_id {
            None => &mut self.unowned,
            Some(m) => {
                if !self.owned.contains_key(m) {
                    self.owned.insert(m.to_owned(), None);
                }
                self.owned.get_mut(m).expect("just inserted")
            }
        };
        let at = c.at;
        if slot.as_ref().is_some_and(|o| o.head.calls >= SEGMENT_CALLS || at.max(o.head.last_at).saturating_sub(at.min(o.head.first_at)) > SEGMENT_SPAN_MS) {
            self.sealed.extend(slot.take().map(Open::seal));
        }
        let open = slot.get_or_insert_with(|| Open::new(merchant_id, c.id.as_ref(), at));
        open.put(c);
        if !tells_its_time(c.trace_id.as_ref(), at) {
            self.traces.push((c.trace_id.as_ref().to_owned(), open.head.id.clone()));
        }
        self.calls += 1;
    }

    /// Calls packed since the last write.
    pub fn len(&self) -> usize {
        self.calls
    }

    pub fn is_empty(&self) -> bool {
        self.calls == 0
    }

    /// Seals the open segments and writes everything packed, with `keys`, in one
    /// transaction: all of it or none. The packer is empty afterwards either way.
    pub async fn write(&mut self, writer: &Writer, keys: &[BusinessKeyRecord]) -> Result<(), Error> {
        let written = async {
            self.seal_all();
            let mut tx = writer.pool.begin().await.db()?;
            self.insert(&mut tx, writer.engine, writer.paced).await?;
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
        .await;
        self.clear();
        written
    }

    fn seal_all(&mut self) {
        self.sealed.extend(self.unowned.take().into_iter().chain(self.owned.drain().filter_map(|(_, open)| open)).map(Open::seal));
    }

    fn clear(&mut self) {
        self.unowned = None;
        self.owned.clear();
        self.sealed.clear();
        self.traces.clear();
        self.calls = 0;
    }

    /// Inserts the sealed segments and the trace index; `paced`: a segment a statement,
    /// with a pause after each (a statement's CPU runs without a pause on SQLite's thread,
    /// see `paced`).
    async fn insert(&self, conn: &mut AnyConnection, engine: Engine, paced: bool) -> Result<(), Error> {
        for chunk in self.sealed.chunks(if paced { 1 } else { 16 }) {
            let sql = crate::multi_row_insert(engine, "call_segments (id, merchant_id, first_id, last_id, first_at, last_at, calls, body)", chunk.len(), 8);
            let mut q = sqlx::query(&sql);
            for Sealed { head: h, body } in chunk {
                q = q.bind(&h.id).bind(&h.merchant_id).bind(&h.first_id).bind(&h.last_id).bind(h.first_at).bind(h.last_at).bind(h.calls as i64).bind(body);
            }
            q.execute(&mut *conn).await.db()?;
            if paced {
                crate::paced::nap();
            }
        }
        for chunk in self.traces.chunks(200) {
            let sql = crate::multi_row_insert(engine, "call_traces (trace_id, segment_id)", chunk.len(), 2);
            let mut q = sqlx::query(&sql);
            for (trace_id, segment_id) in chunk {
                q = q.bind(trace_id).bind(segment_id);
            }
            q.execute(&mut *conn).await.db()?;
        }
        Ok(())
    }
}

impl Open {
    fn new(merchant_id: Option<&str>, id: &str, at: i64) -> Open {
        Open {
            head: Head {
                id: new_id("seg"),
                merchant_id: merchant_id.map(str::to_owned),
                first_id: id.to_owned(),
                last_id: id.to_owned(),
                first_at: at,
                last_at: at,
                calls: 0,
            },
            before: 0,
            rows: Vec::with_capacity(4 * 1024),
            table: Table::default(),
        }
    }

    /// Adds a call's row.
    fn put<S: AsRef<str>>(&mut self, c: &CallRecord<S>) {
        let (id, head) = (c.id.as_ref(), &mut self.head);
        if id < head.first_id.as_str() {
            head.first_id.replace_range(.., id);
        }
        if id > head.last_id.as_str() {
            head.last_id.replace_range(.., id);
        }
        head.first_at = head.first_at.min(c.at);
        head.last_at = head.last_at.max(c.at);
        head.calls += 1;
        let rows = &mut self.rows;
        put_text(rows, id);
        put_int(rows, c.at.wrapping_sub(self.before));
        self.before = c.at;
        put_text(rows, c.trace_id.as_ref());
        put_uint(rows, self.table.slot(c.app_id.as_ref().map(AsRef::as_ref)));
        put_uint(rows, self.table.slot(c.api.as_ref().map(AsRef::as_ref)));
        for n in [c.status, c.code, c.latency_us, c.bytes_in, c.bytes_out] {
            put_int(rows, n);
        }
        put_uint(rows, self.table.slot(Some(c.client_ip.as_ref())));
    }

    /// The segment's body: the layout's version, its string table, its calls.
    fn seal(self) -> Sealed {
        let table = &self.table;
        let mut body = Vec::with_capacity(11 + table.bytes + 2 * table.list.len() + self.rows.len());
        body.push(BODY_V2);
        put_uint(&mut body, table.list.len() as u64);
        for s in &table.list {
            put_str(&mut body, s);
        }
        body.extend_from_slice(&self.rows);
        Sealed { head: self.head, body }
    }
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
        let mut packer = Packer::default();
        for c in calls {
            packer.push(&c?);
        }
        packer.seal_all();
        packer.insert(conn, engine, false).await?;
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

// A segment's body (version 2): a version byte; a table of the strings calls share (app
// ids, API labels, client addresses): their count, then each string; then per call, in
// this order: id, at, trace_id, app_id, api, status, code, latency_us, bytes_in,
// bytes_out, client_ip. Numbers are LEB128 varints, signed ones zigzagged first; `at` is
// the difference from the call before (calls come in the order they ended, close to their
// start order, so a byte or two, sometimes negative). An id
// or a trace id is a text: a kind byte, then for 0 a string, for 1 a string prefix and
// bytes whose lowercase hex follows it (`cal_0193…` and the gateway's trace ids take half
// their length). app_id, api and client_ip are a table position plus one, 0 for absent. A
// string is its byte length then its UTF-8 bytes. The merchant is the segment's. A call
// of the gateway takes about 55 bytes (version 1: about 175).
//
// Version 1, still read: a version byte, then per call the same fields, integers as 8
// bytes little-endian and strings as a 2-byte little-endian length (0xFFFF: absent) then
// the bytes.

const BODY_V1: u8 = 1;
const BODY_V2: u8 = 2;
const TEXT_PLAIN: u8 = 0;
const TEXT_HEX: u8 = 1;

/// The strings of a segment's table, each once.
#[derive(Debug, Default)]
struct Table {
    list: Vec<String>,
    slots: FastMap<String, u64>,
    bytes: usize,
}

impl Table {
    /// The string's position plus one (added when new); 0 for absent.
    fn slot(&mut self, s: Option<&str>) -> u64 {
        let Some(s) = s else { return 0 };
        if let Some(&slot) = self.slots.get(s) {
            return slot;
        }
        self.list.push(s.to_owned());
        self.bytes += s.len();
        let slot = self.list.len() as u64;
        self.slots.insert(s.to_owned(), slot);
        slot
    }
}

fn put_uint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_int(out: &mut Vec<u8>, n: i64) {
    put_uint(out, ((n << 1) ^ (n >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A text: lowercase hex digits after the last `_` (or the whole text) are stored as bytes.
fn put_text(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    // The hex digits at the end, then whether a `_` or the start comes before them.
    let start = b.len() - b.iter().rev().take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')).count();
    let (prefix, digits) = s.split_at(start);
    // Of a digit `0-9` or `a-f`, its value, without branches.
    let nibble = |b: u8| (b & 0xf) + 9 * (b >> 6);
    if !digits.is_empty() && digits.len() % 2 == 0 && (prefix.is_empty() || prefix.ends_with('_')) {
        out.push(TEXT_HEX);
        put_str(out, prefix);
        put_uint(out, (digits.len() / 2) as u64);
        let at = out.len();
        out.resize(at + digits.len() / 2, 0);
        for (byte, pair) in out[at..].iter_mut().zip(digits.as_bytes().chunks_exact(2)) {
            *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
        }
    } else {
        out.push(TEXT_PLAIN);
        put_str(out, s);
    }
}

fn decode(body: &[u8], merchant_id: Option<&str>) -> Result<Vec<CallRecord>, String> {
    let mut r = Reader(body);
    match r.take(1)?[0] {
        BODY_V1 => decode_v1(r, merchant_id),
        BODY_V2 => decode_v2(r, merchant_id),
        version => Err(format!("unknown layout version {version}")),
    }
}

fn decode_v2(mut r: Reader<'_>, merchant_id: Option<&str>) -> Result<Vec<CallRecord>, String> {
    let n = r.uint()?;
    // A string takes a byte at least: a larger count is an error, not an allocation.
    if n > r.0.len() as u64 {
        return Err(format!("a table of {n} strings in {} bytes", r.0.len()));
    }
    let table = (0..n).map(|_| r.str()).collect::<Result<Vec<_>, _>>()?;
    let pick = |slot: u64| -> Result<Option<String>, String> {
        match slot {
            0 => Ok(None),
            _ => usize::try_from(slot - 1).ok().and_then(|i| table.get(i)).map(|s| Some(s.clone())).ok_or_else(|| format!("no string {slot} in the table")),
        }
    };
    let mut calls = Vec::new();
    let mut at = 0i64;
    while !r.0.is_empty() {
        let id = r.text()?;
        at = at.wrapping_add(r.int()?);
        calls.push(CallRecord {
            id,
            at,
            trace_id: r.text()?,
            merchant_id: merchant_id.map(str::to_string),
            app_id: pick(r.uint()?)?,
            api: pick(r.uint()?)?,
            status: r.int()?,
            code: r.int()?,
            latency_us: r.int()?,
            bytes_in: r.int()?,
            bytes_out: r.int()?,
            client_ip: pick(r.uint()?)?.ok_or("a call without its client address")?,
        });
    }
    Ok(calls)
}

fn decode_v1(mut r: Reader<'_>, merchant_id: Option<&str>) -> Result<Vec<CallRecord>, String> {
    let mut calls = Vec::new();
    while !r.0.is_empty() {
        calls.push(CallRecord {
            id: r.v1_string()?,
            at: r.v1_int()?,
            trace_id: r.v1_string()?,
            merchant_id: merchant_id.map(str::to_string),
            app_id: r.v1_optional_string()?,
            api: r.v1_optional_string()?,
            status: r.v1_int()?,
            code: r.v1_int()?,
            latency_us: r.v1_int()?,
            bytes_in: r.v1_int()?,
            bytes_out: r.v1_int()?,
            client_ip: r.v1_string()?,
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

    fn uint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            if shift == 63 && b > 1 {
                return Err("a number beyond 64 bits".into());
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("a number beyond 64 bits".into())
    }

    fn int(&mut self) -> Result<i64, String> {
        let n = self.uint()?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    fn str(&mut self) -> Result<String, String> {
        let len = usize::try_from(self.uint()?).map_err(|_| "a string longer than memory")?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    }

    fn text(&mut self) -> Result<String, String> {
        match self.take(1)?[0] {
            TEXT_PLAIN => self.str(),
            TEXT_HEX => {
                let mut s = self.str()?;
                let len = usize::try_from(self.uint()?).map_err(|_| "a text longer than memory")?;
                s.push_str(&portico_core::id::hex(self.take(len)?));
                Ok(s)
            }
            kind => Err(format!("unknown text kind {kind}")),
        }
    }

    fn v1_int(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        Ok(i64::from_le_bytes(b.try_into().map_err(|_| "truncated integer".to_string())?))
    }

    fn v1_optional_string(&mut self) -> Result<Option<String>, String> {
        let len = self.take(2)?;
        let len = u16::from_le_bytes([len[0], len[1]]);
        if len == u16::MAX {
            return Ok(None);
        }
        let bytes = self.take(usize::from(len))?;
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| "a string is not UTF-8".to_string())
    }

    fn v1_string(&mut self) -> Result<String, String> {
        self.v1_optional_string()?.ok_or_else(|| "a required string is absent".to_string())
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

    /// One segment's body holding `calls`, whatever their times.
    fn encode<S: AsRef<str>>(calls: &[&CallRecord<S>]) -> Vec<u8> {
        let mut open = Open::new(None, "", 0);
        calls.iter().for_each(|c| open.put(c));
        open.seal().body
    }

    fn call() -> impl Strategy<Value = CallRecord> {
        (
            (prop_oneof!["[a-z0-9_]{1,40}", "[a-z]{3}_[0-9a-f]{28}"], any::<i64>(), prop_oneof!["\\PC{0,70}", "[0-9a-f]{32}"]),
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

    /// Version 1's layout, as stop 11 wrote it.
    fn encode_v1(calls: &[CallRecord]) -> Vec<u8> {
        let put = |out: &mut Vec<u8>, s: Option<&String>| match s {
            Some(s) => {
                out.extend_from_slice(&(s.len() as u16).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            None => out.extend_from_slice(&u16::MAX.to_le_bytes()),
        };
        let mut out = vec![BODY_V1];
        for c in calls {
            put(&mut out, Some(&c.id));
            out.extend_from_slice(&c.at.to_le_bytes());
            put(&mut out, Some(&c.trace_id));
            put(&mut out, c.app_id.as_ref());
            put(&mut out, c.api.as_ref());
            for n in [c.status, c.code, c.latency_us, c.bytes_in, c.bytes_out] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            put(&mut out, Some(&c.client_ip));
        }
        out
    }

    proptest! {
        #[test]
        fn version_1_bodies_are_still_read(calls in proptest::collection::vec(call(), 0..10)) {
            prop_assert_eq!(decode(&encode_v1(&calls), Some("mch_1")).unwrap(), calls);
        }
    }

    #[test]
    fn long_strings_and_extreme_numbers_round_trip() {
        let c = CallRecord {
            id: "cal_".repeat(20_000),
            at: i64::MIN,
            trace_id: "é".repeat(40_000),
            merchant_id: None,
            app_id: None,
            api: Some("ab".repeat(70_000)),
            status: i64::MAX,
            code: -1,
            latency_us: 0,
            bytes_in: i64::MIN,
            bytes_out: i64::MAX,
            client_ip: "::1".into(),
        };
        let d = CallRecord { at: i64::MAX, ..c.clone() };
        assert_eq!(decode(&encode(&[&c, &d]), None).unwrap(), vec![c, d]);
    }

    #[test]
    fn the_gateways_calls_take_about_a_third_of_version_1() {
        let c = CallRecord {
            id: new_id("cal"),
            at: portico_core::time::now_ms(),
            trace_id: trace::new_trace_id(),
            merchant_id: Some("mch_1".into()),
            app_id: Some(new_id("app")),
            api: Some("order.create@1.0".into()),
            status: 200,
            code: 0,
            latency_us: 1_250,
            bytes_in: 120,
            bytes_out: 340,
            client_ip: "203.0.113.7".into(),
        };
        let calls: Vec<CallRecord> = (0..100).map(|i| CallRecord { id: new_id("cal"), at: c.at + i, trace_id: trace::new_trace_id(), ..c.clone() }).collect();
        let refs: Vec<&CallRecord> = calls.iter().collect();
        let (v1, v2) = (encode_v1(&calls).len(), encode(&refs).len());
        assert!(v2 * 3 < v1, "version 2 takes {v2} bytes, version 1 {v1}");
        assert_eq!(decode(&encode(&refs), Some("mch_1")).unwrap(), calls);
    }

    #[test]
    fn the_packer_cuts_each_merchants_segments_by_count_and_span() {
        let t = portico_core::time::now_ms();
        let call = |i: usize, merchant: Option<&str>, at: i64, trace_id: String| CallRecord {
            id: format!("cal_{i:028x}"),
            at,
            trace_id,
            merchant_id: merchant.map(str::to_string),
            app_id: None,
            api: None,
            status: 200,
            code: 0,
            latency_us: 1,
            bytes_in: 0,
            bytes_out: 0,
            client_ip: "10.0.0.1".into(),
        };
        let mut pushed = Vec::new();
        // A: one call more than a segment holds.
        for i in 0..=SEGMENT_CALLS {
            pushed.push(call(i, Some("mch_a"), t, trace::new_trace_id_at(t)));
        }
        // B: out of order and 60 s apart (still one segment), then one that would stretch it further.
        for (i, at) in [(10_000, t), (10_001, t + SEGMENT_SPAN_MS / 2), (10_002, t - SEGMENT_SPAN_MS / 2), (10_003, t + SEGMENT_SPAN_MS / 2 + 1)] {
            pushed.push(call(i, Some("mch_b"), at, trace::new_trace_id_at(at)));
        }
        // No merchant, and a client's trace id, which is indexed.
        pushed.push(call(20_000, None, t, "client-trace-0001".into()));
        let mut packer = Packer::default();
        pushed.iter().for_each(|c| packer.push(c));
        assert_eq!(packer.len(), pushed.len());
        packer.seal_all();
        let mut segments: Vec<(Option<&str>, i64, i64, Vec<CallRecord>)> =
            packer.sealed.iter().map(|s| (s.head.merchant_id.as_deref(), s.head.first_at, s.head.last_at, decode(&s.body, s.head.merchant_id.as_deref()).unwrap())).collect();
        segments.sort_by_key(|(m, _, _, calls)| (*m, calls.len()));
        let sizes: Vec<(Option<&str>, usize)> = segments.iter().map(|(m, _, _, c)| (*m, c.len())).collect();
        assert_eq!(sizes, vec![(None, 1), (Some("mch_a"), 1), (Some("mch_a"), SEGMENT_CALLS), (Some("mch_b"), 1), (Some("mch_b"), 3)]);
        let (_, first_at, last_at, b) = &segments[4];
        assert_eq!((*first_at, *last_at), (t - SEGMENT_SPAN_MS / 2, t + SEGMENT_SPAN_MS / 2), "the earliest and latest, not the first and last pushed");
        assert_eq!(b[..], pushed[SEGMENT_CALLS + 1..SEGMENT_CALLS + 4], "calls keep the order they came in");
        let b_segment = &packer.sealed.iter().find(|s| s.head.calls == 3).unwrap().head;
        assert_eq!((b_segment.first_id.as_str(), b_segment.last_id.as_str()), (pushed[SEGMENT_CALLS + 1].id.as_str(), pushed[SEGMENT_CALLS + 3].id.as_str()));
        let unowned = &packer.sealed.iter().find(|s| s.head.merchant_id.is_none()).unwrap().head;
        assert_eq!(packer.traces, vec![("client-trace-0001".to_string(), unowned.id.clone())]);
        packer.clear();
        assert!(packer.is_empty() && packer.sealed.is_empty() && packer.traces.is_empty());
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

//! Forwarding to registered instances: weighted round robin over the instances that are
//! not ejected, the gateway's own pooled keep-alive HTTP/1.1 client, per-API timeouts, retries on a
//! connection failure (and on any failure for idempotent methods), passive health
//! (an instance that fails three calls in a row is ejected for ten seconds and then
//! tried again), active health (instances that registered a health path are probed; three
//! failed probes in a row eject too, until a probe succeeds), and a per-service circuit: when every instance is ejected, calls are
//! refused at once until the first ejection ends.

use std::{
    pin::Pin,
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use axum::http::{Method, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use portico_core::FastMap;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    http1::{self, FrameError},
    snapshot::{Instance, ServicePool},
};

const EJECT_AFTER: u32 = 3;
const EJECT_FOR: Duration = Duration::from_secs(10);

/// How long a connection may wait for a TCP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle keep-alive connections older than this are closed rather than reused (servers
/// close theirs after a minute or so, nginx after 75 s).
const IDLE_FOR: Duration = Duration::from_secs(30);
/// Idle connections kept per instance.
const MAX_IDLE_PER_INSTANCE: usize = 512;
/// The largest upstream response the gateway reads into the envelope.
pub const MAX_RESPONSE: usize = 8 * 1024 * 1024;
/// Request bodies up to this size are written in the same system call as the head.
const INLINE_BODY: usize = 16 * 1024;

/// The gateway's HTTP/1.1 client to registered instances: keep-alive connections pooled
/// per instance address, each used by one call at a time and driven by the calling task
/// itself (no connection task, no channel between the call and its socket). A pooled
/// connection the instance closed meanwhile is noticed when nothing comes back on it, and
/// the request is sent again once on a new connection, whatever its method, as nginx does
/// for cached connections: the instance never saw it.
#[derive(Default)]
pub struct Client {
    idle: Mutex<FastMap<String, Vec<Idle>>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// An upstream answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// The header lines a client may see (`name: value\r\n` each, as the instance wrote
    /// them): all but hop-by-hop and framing headers, `Content-Type` (the gateway answers
    /// in JSON) and `Date` (the gateway writes its own, as nginx does).
    pub lines: Vec<u8>,
    pub body: Bytes,
}

/// A parsed answer head.
struct Head {
    status: StatusCode,
    lines: Vec<u8>,
    framing: Framing,
    /// Whether the connection can carry another request.
    reusable: bool,
    len: usize,
}

enum Parsed {
    /// A 1xx answer of this length, to be skipped.
    Interim(usize),
    Final(Head),
}

/// Reads an answer head at the start of `buf`; `None` until it is whole. A function of
/// its own so that the header slots never live in the caller's future.
fn read_head(buf: &[u8], no_body: bool) -> Result<Option<Parsed>, Exchange> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Slots left uninitialised: filling 64 of them (2 KiB) cost more than parsing.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; 64];
    let mut parsed = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < http1::MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(Exchange::Protocol("the answer's head is too large".into())),
        Err(e) => return Err(Exchange::Protocol(format!("a malformed answer: {e}"))),
    };
    let code = parsed.code.unwrap_or(0);
    if (100..200).contains(&code) {
        if code == 101 {
            return Err(Exchange::Protocol("the instance switched protocols".into()));
        }
        return Ok(Some(Parsed::Interim(n)));
    }
    let status = StatusCode::from_u16(code).map_err(|_| Exchange::Protocol(format!("status {code}")))?;
    let mut lines = Vec::with_capacity(256);
    let mut length = None;
    let mut chunked = false;
    let mut other_coding = false;
    let mut close = parsed.version != Some(1);
    for h in parsed.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(http1::content_length(length, h.value).map_err(|_| Exchange::Protocol("a malformed content-length".into()))?);
            continue;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = http1::is_chunked(h.value);
            other_coding = !chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= http1::wants_close(h.value);
        }
        if !http1::is_hop_by_hop(name) && !name.eq_ignore_ascii_case("content-type") && !name.eq_ignore_ascii_case("date") {
            http1::write_header(&mut lines, name.as_bytes(), h.value);
        }
    }
    let framing = if no_body || code == 204 || code == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if other_coding {
        Framing::UntilClose
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    Ok(Some(Parsed::Final(Head { status, lines, framing, reusable: !close, len: n })))
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: the request never left.
    Connect(String),
    /// The connection failed after the request was (perhaps) sent.
    Io(String),
    /// The answer was not valid HTTP/1.1, or larger than [`MAX_RESPONSE`].
    Protocol(String),
}

/// How one exchange on one connection failed.
enum Exchange {
    /// The connection gave nothing back (closed or reset before the first byte of an
    /// answer): on a pooled connection, the instance had closed it.
    Silent(String),
    Io(String),
    Protocol(String),
}

impl Client {
    /// Sends one request and reads the whole answer. The request target is `base` (the
    /// instance's base path) followed by `target` (path and query); `lines` are header
    /// lines (`name: value\r\n` each), without framing headers or `Host`. `now` is the
    /// call's time, read once by the caller: pooled connections' idle time is counted
    /// from it (a connection put back counts as idle from its call's start, which only
    /// makes it look older).
    #[allow(clippy::too_many_arguments)]
    pub async fn send(&self, authority: &str, method: &Method, base: &str, target: &str, lines: &[u8], body: &[u8], now: Instant) -> Result<Answer, SendError> {
        let mut wire = Vec::with_capacity(512 + if body.len() <= INLINE_BODY { body.len() } else { 0 });
        wire.extend_from_slice(method.as_str().as_bytes());
        wire.push(b' ');
        wire.extend_from_slice(base.as_bytes());
        wire.extend_from_slice(target.as_bytes());
        wire.extend_from_slice(b" HTTP/1.1\r\n");
        http1::write_header(&mut wire, b"host", authority.as_bytes());
        wire.extend_from_slice(lines);
        if !body.is_empty() || !matches!(*method, Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS) {
            http1::write_content_length(&mut wire, body.len());
        }
        wire.extend_from_slice(b"\r\n");
        let rest = if body.len() <= INLINE_BODY {
            wire.extend_from_slice(body);
            &[][..]
        } else {
            body
        };
        let no_body = *method == Method::HEAD;
        loop {
            let (mut conn, pooled) = match self.take(authority, now) {
                Some(c) => (c, true),
                None => (Conn::open(authority).await?, false),
            };
            match conn.exchange(&wire, rest, no_body).await {
                Ok((answer, reusable)) => {
                    if reusable {
                        self.put(authority, conn, now);
                    }
                    return Ok(answer);
                }
                Err(Exchange::Silent(_)) if pooled => continue,
                Err(Exchange::Silent(e) | Exchange::Io(e)) => return Err(SendError::Io(e)),
                Err(Exchange::Protocol(e)) => return Err(SendError::Protocol(e)),
            }
        }
    }

    fn take(&self, authority: &str, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(authority)?;
        while let Some(i) = list.pop() {
            if now.saturating_duration_since(i.since) < IDLE_FOR {
                return Some(i.conn);
            }
        }
        None
    }

    fn put(&self, authority: &str, conn: Conn, since: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = match idle.get_mut(authority) {
            Some(l) => l,
            None => idle.entry(authority.to_string()).or_default(),
        };
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push(Idle { conn, since });
        }
    }

    /// Closes idle connections past their time, and forgets addresses with none left.
    pub fn prune(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, list| {
            list.retain(|i| i.since.elapsed() < IDLE_FOR);
            !list.is_empty()
        });
    }
}

impl Conn {
    async fn open(authority: &str) -> Result<Conn, SendError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(format!("connect to {authority}: {e}"))),
            Err(_) => return Err(SendError::Connect(format!("connect to {authority}: no answer within {CONNECT_TIMEOUT:?}"))),
        };
        let _ = stream.set_nodelay(true);
        Ok(Conn { stream, buf: BytesMut::with_capacity(8 * 1024) })
    }

    /// Reads more of the answer; `Ok(false)` at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8 * 1024);
        }
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    /// One request and its answer. Returns the answer and whether the connection can
    /// carry another request.
    async fn exchange(&mut self, wire: &[u8], rest: &[u8], no_body: bool) -> Result<(Answer, bool), Exchange> {
        let written = async {
            self.stream.write_all(wire).await?;
            if !rest.is_empty() {
                self.stream.write_all(rest).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        written.await.map_err(|e| Exchange::Silent(e.to_string()))?;
        self.buf.clear();
        // The head, after any interim (1xx) answers.
        let Head { status, lines, framing, mut reusable, len: head_len } = loop {
            match read_head(&self.buf, no_body)? {
                Some(Parsed::Interim(n)) => {
                    self.buf.advance(n);
                    continue;
                }
                Some(Parsed::Final(head)) => break head,
                None => {}
            }
            let nothing_yet = self.buf.is_empty();
            match self.fill().await {
                Ok(true) => {}
                Ok(false) if nothing_yet => return Err(Exchange::Silent("the connection was closed".into())),
                Err(e) if nothing_yet => return Err(Exchange::Silent(e.to_string())),
                Ok(false) => return Err(Exchange::Io("the connection closed inside the answer's head".into())),
                Err(e) => return Err(Exchange::Io(e.to_string())),
            }
        };
        self.buf.advance(head_len);
        let cut_short = || Exchange::Io("the connection closed inside the answer's body".into());
        let too_large = || Exchange::Protocol(format!("the answer is larger than {MAX_RESPONSE} bytes"));
        let body = match framing {
            Framing::Length(n) => {
                let n = usize::try_from(n).ok().filter(|n| *n <= MAX_RESPONSE).ok_or_else(too_large)?;
                while self.buf.len() < n {
                    if self.buf.capacity() < n {
                        self.buf.reserve(n - self.buf.len());
                    }
                    if !self.fill().await.map_err(|e| Exchange::Io(e.to_string()))? {
                        return Err(cut_short());
                    }
                }
                self.buf.split_to(n).freeze()
            }
            Framing::Chunked => {
                let mut decoder = http1::ChunkedDecoder::default();
                loop {
                    let (used, done) = decoder.feed(&self.buf, MAX_RESPONSE).map_err(|e| match e {
                        FrameError::TooLarge => too_large(),
                        _ => Exchange::Protocol("a malformed chunked answer".into()),
                    })?;
                    self.buf.advance(used);
                    if done {
                        break;
                    }
                    if !self.fill().await.map_err(|e| Exchange::Io(e.to_string()))? {
                        return Err(cut_short());
                    }
                }
                Bytes::from(decoder.into_body())
            }
            Framing::UntilClose => {
                reusable = false;
                while self.fill().await.map_err(|e| Exchange::Io(e.to_string()))? {
                    if self.buf.len() > MAX_RESPONSE {
                        return Err(too_large());
                    }
                }
                self.buf.split().freeze()
            }
        };
        // Bytes nobody asked for: the connection's framing cannot be trusted.
        reusable &= self.buf.is_empty();
        Ok((Answer { status, lines, body }, reusable))
    }
}

enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Consecutive failures and ejections, per instance id. Calls and probes are counted
/// apart: a call that succeeds does not excuse failing probes, and a failing call does
/// not wait for the next probe.
#[derive(Default)]
pub struct Health {
    map: Mutex<FastMap<String, Record>>,
}

#[derive(Default)]
struct Record {
    call_failures: u32,
    probe_failures: u32,
    ejected_until: Option<Instant>,
}

impl Health {
    fn ejected(&self, id: &str) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).and_then(|r| r.ejected_until).is_some_and(|u| Instant::now() < u)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Record)) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let r = map.entry(id.to_string()).or_default();
        let was_ejected = r.ejected_until.is_some_and(|u| Instant::now() < u);
        f(r);
        if r.call_failures >= EJECT_AFTER || r.probe_failures >= EJECT_AFTER {
            if !was_ejected {
                tracing::warn!(instance = id, calls = r.call_failures, probes = r.probe_failures, "instance ejected");
            }
            r.ejected_until = Some(Instant::now() + EJECT_FOR);
        } else if was_ejected && r.call_failures == 0 && r.probe_failures == 0 {
            r.ejected_until = None;
            tracing::info!(instance = id, "instance back in rotation");
        }
        if r.call_failures == 0 && r.probe_failures == 0 && r.ejected_until.is_none() {
            map.remove(id);
        }
    }

    fn failed(&self, id: &str) {
        self.update(id, |r| r.call_failures += 1);
    }

    fn succeeded(&self, id: &str) {
        // The common case, a healthy instance with no record: nothing to write.
        if self.map.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id) {
            self.update(id, |r| r.call_failures = 0);
        }
    }

    fn probe_failed(&self, id: &str) {
        self.update(id, |r| r.probe_failures += 1);
    }

    fn probe_succeeded(&self, id: &str) {
        self.update(id, |r| r.probe_failures = 0);
    }
}

/// Active health checks: probes every instance that registered a health path, every
/// `period`, with a short timeout; the outcome feeds the same passive-health book, so an
/// instance that fails its probes is ejected before a call finds out.
pub async fn probe(client: &Client, health: &Health, instances: Vec<Arc<Instance>>) {
    for i in instances {
        let Some(path) = &i.health_path else { continue };
        match tokio::time::timeout(Duration::from_secs(2), client.send(&i.authority, &Method::GET, &i.base_path, path, &[], &[], Instant::now())).await {
            Ok(Ok(r)) if r.status.is_success() => health.probe_succeeded(&i.id),
            _ => health.probe_failed(&i.id),
        }
    }
    client.prune();
}

/// Why forwarding failed.
#[derive(Debug)]
pub enum ForwardError {
    /// No instance registered, or every one is ejected (circuit open).
    NoInstance,
    Unreachable(String),
    /// The instance answered something that is not HTTP/1.1, or too much of it.
    BadAnswer(String),
    Timeout,
}

/// Instances in the order to try them: the round-robin choice first, ejected ones left
/// out (all of them, if the circuit is open).
fn candidates<'p>(pool: &'p ServicePool, health: &'p Health) -> impl Iterator<Item = &'p Arc<Instance>> + 'p {
    let n = pool.instances.len();
    if n == 0 {
        return None.into_iter().flatten();
    }
    let total: u32 = pool.instances.iter().map(|i| i.weight).sum();
    let mut slot = (pool.cursor.fetch_add(1, Ordering::Relaxed) % total as usize) as u32;
    let mut first = 0;
    for (idx, i) in pool.instances.iter().enumerate() {
        if slot < i.weight {
            first = idx;
            break;
        }
        slot -= i.weight;
    }
    // Lazily: most calls take the first instance, and health is read only for those tried.
    Some((0..n).map(move |k| &pool.instances[(first + k) % n]).filter(|i| !health.ejected(&i.id))).into_iter().flatten()
}

/// Sends the request to one instance after another until one answers, all within
/// `deadline` (the API's timeout, which covers the answer's body too). `timer` is the
/// caller's, set here to `deadline`: a connection keeps one timer for its heads, bodies
/// and upstream calls, moved later each time, instead of making and dropping one per call.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    client: &Client,
    health: &Health,
    pool: &ServicePool,
    method: &Method,
    path_and_query: &str,
    lines: &[u8],
    body: &[u8],
    started: Instant,
    deadline: tokio::time::Instant,
    mut timer: Pin<&mut tokio::time::Sleep>,
) -> Result<Answer, ForwardError> {
    timer.as_mut().reset(deadline);
    let idempotent = matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS);
    let mut last = ForwardError::NoInstance;
    // With no instance out of ejection, `last` stays `NoInstance`.
    for instance in candidates(pool, health).take(3) {
        let sent = tokio::select! {
            biased;
            sent = client.send(&instance.authority, method, &instance.base_path, path_and_query, lines, body, started) => sent,
            _ = timer.as_mut() => {
                health.failed(&instance.id);
                return Err(ForwardError::Timeout);
            }
        };
        match sent {
            Ok(answer) => {
                health.succeeded(&instance.id);
                return Ok(answer);
            }
            Err(e) => {
                health.failed(&instance.id);
                // A request that may have reached the service is retried only when
                // repeating it is harmless.
                let (retry, error) = match e {
                    SendError::Connect(why) => (true, ForwardError::Unreachable(why)),
                    SendError::Io(why) => (idempotent, ForwardError::Unreachable(why)),
                    SendError::Protocol(why) => (false, ForwardError::BadAnswer(why)),
                };
                last = error;
                if !retry {
                    break;
                }
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_heads_keep_only_what_a_client_may_see() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: backend\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Custom: a b\r\n\r\nok";
        let Ok(Some(Parsed::Final(head))) = read_head(raw, false) else { panic!("not a final head") };
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(String::from_utf8(head.lines).unwrap(), "Server: backend\r\nX-Custom: a b\r\n");
        assert!(matches!(head.framing, Framing::Length(2)));
        assert!(head.reusable);
        assert_eq!(&raw[head.len..], b"ok");
        assert!(matches!(read_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204", false), Ok(Some(Parsed::Interim(25)))));
        assert!(matches!(read_head(b"HTTP/1.1 200 OK\r\nServer", false), Ok(None)));
        assert!(read_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        let Ok(Some(Parsed::Final(closing))) = read_head(b"HTTP/1.0 200 OK\r\n\r\n", false) else { panic!() };
        assert!(!closing.reusable && matches!(closing.framing, Framing::UntilClose));
    }
}

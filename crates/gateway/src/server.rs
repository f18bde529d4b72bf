//! The public listener's own HTTP/1.1 loop. Gateway calls of the ordinary shape (HTTP/1.1,
//! a body framed by `Content-Length` or none) are read, answered and written by this
//! module with one buffer per connection and no per-call task: the head is parsed in
//! place, header values and the body are slices of the bytes read, the answer goes out in
//! one write. They get the trace id, the envelope on panics and the graceful shutdown that
//! the other listeners get from their middleware.
//!
//! Anything else on a connection (the paths of the router: OAuth2, end users, the message
//! channel, probes; HTTP/1.0; `Transfer-Encoding`, `Expect`, `Upgrade`; `HEAD`) hands the
//! connection over to hyper, bytes already read included, for the rest of its life; calls
//! through hyper reach the same pipeline.

use std::{
    io,
    net::SocketAddr,
    ops::Range,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    http::{HeaderName, HeaderValue, Method},
    response::{IntoResponse, Response},
    Router,
};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use portico_core::{http::ApiError, trace, Code};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};
use tower::ServiceExt;

use crate::{
    http1,
    pipeline::{Inbound, Reply},
    Gateway,
};

/// A client must send a whole request head within this time, counted from when the
/// connection starts waiting for it (so an idle keep-alive connection is closed after it).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A client must send its body within this time after the head.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers up to this size are written in the same system call as their head.
const INLINE_BODY: usize = 16 * 1024;
const TRACE_HEADER: HeaderName = HeaderName::from_static(trace::TRACE_HEADER);

/// Paths that belong to the router, not to the gateway.
fn routed(path: &str) -> bool {
    path.starts_with("/oauth2/") || path.starts_with("/users/") || path.starts_with("/.well-known/") || path.starts_with("/messages/") || path == "/healthz" || path == "/readyz"
}

impl Gateway {
    /// Serves the public listener until `stop` resolves, then lets connections finish
    /// for up to `grace`.
    pub async fn serve(self, listener: TcpListener, router: Router, stop: impl std::future::Future<Output = ()>, grace: Duration) -> io::Result<()> {
        // Every connection holds a receiver: `true` asks it to close when idle, and the
        // sender's `closed()` tells when the last one is gone.
        let (closing, _) = watch::channel(false);
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let conn = Connection { gw: self.clone(), router: router.clone(), peer, closing: closing.subscribe() };
            tokio::spawn(conn.run(stream));
        }
        drop(listener);
        let _ = closing.send(true);
        if tokio::time::timeout(grace, closing.closed()).await.is_err() {
            tracing::warn!("public connections still open after the grace period");
        }
        Ok(())
    }
}

struct Connection {
    gw: Gateway,
    router: Router,
    peer: SocketAddr,
    closing: watch::Receiver<bool>,
}

/// What the lean loop makes of a request head.
enum Head {
    /// A call it serves: the head's length, where its parts lie, the body's length and
    /// whether the client asked to close.
    Call { len: usize, method: Range<usize>, target: Range<usize>, body: u64, close: bool },
    /// Not for the lean loop: hyper takes the connection.
    HandOff,
    /// Not valid HTTP/1.1: answered with this and the connection closed.
    Invalid(&'static str),
    /// Too little read yet.
    Partial,
}

impl Connection {
    async fn run(self, mut stream: TcpStream) {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
        // Offsets of each header's name and value in the head.
        let mut fields: Vec<(Range<usize>, Range<usize>)> = Vec::with_capacity(16);
        let timer = tokio::time::sleep(HEAD_TIMEOUT);
        tokio::pin!(timer);
        // Registered once for the connection's life rather than once per wait (each
        // registration takes the channel's lock twice).
        let mut closing = self.closing.clone();
        let closed = closing.changed();
        tokio::pin!(closed);
        loop {
            // A whole head, then a whole body.
            timer.as_mut().reset(Instant::now() + HEAD_TIMEOUT);
            let (len, method, target, body_len, close) = loop {
                match parse_head(&buf, &mut fields) {
                    Head::Call { len, method, target, body, close } => break (len, method, target, body, close),
                    Head::HandOff => return self.hand_off(stream, buf).await,
                    Head::Invalid(why) => return self.refuse(&mut stream, &mut out, ApiError::new(Code::MalformedHttp, why)).await,
                    Head::Partial => {}
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(8 * 1024);
                }
                let idle = buf.is_empty();
                tokio::select! {
                    biased;
                    read = stream.read_buf(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    _ = &mut timer => return,
                    _ = &mut closed, if idle => return,
                }
            };
            if body_len > self.gw.settings().max_body_bytes as u64 {
                return self.refuse(&mut stream, &mut out, ApiError::new(Code::BodyTooLarge, "the request body is larger than the limit")).await;
            }
            let head = buf.split_to(len).freeze();
            let body_len = body_len as usize;
            if buf.len() < body_len {
                timer.as_mut().reset(Instant::now() + BODY_TIMEOUT);
                buf.reserve(body_len - buf.len());
                while buf.len() < body_len {
                    tokio::select! {
                        biased;
                        read = stream.read_buf(&mut buf) => match read {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        },
                        _ = &mut timer => return self.refuse(&mut stream, &mut out, ApiError::new(Code::InvalidJson, "the request body did not arrive in time")).await,
                    }
                }
            }
            let body = buf.split_to(body_len).freeze();
            let mut headers = Vec::with_capacity(fields.len());
            let Some((method, target)) = request(&head, method, target, &fields, &mut headers) else {
                return self.refuse(&mut stream, &mut out, ApiError::new(Code::MalformedHttp, "the request line or a header is not valid")).await;
            };
            let (arrived, at) = (std::time::Instant::now(), portico_core::time::now_ms());
            let trace_id = trace::incoming_or_new_at(headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(trace::TRACE_HEADER)).map(|(_, v)| *v), at);
            let call = Inbound { method, target, headers: &headers, body, peer: self.peer, trace_id: &trace_id, arrived, at };
            let reply = trace::scope(trace_id.clone(), async {
                match AssertUnwindSafe(crate::pipeline::serve(&self.gw, call, timer.as_mut())).catch_unwind().await {
                    Ok(r) => r,
                    Err(panic) => Reply::from_response(portico_core::http::panic_response(panic)).await,
                }
            })
            .await;
            drop(headers);
            drop(head);
            let closing = close || *self.closing.borrow();
            if write_reply(&mut stream, &mut out, &reply, &trace_id, closing).await.is_err() || closing {
                return;
            }
        }
    }

    /// Answers a request the loop cannot take and closes the connection.
    async fn refuse(&self, stream: &mut TcpStream, out: &mut Vec<u8>, error: ApiError) {
        let trace_id = trace::new_trace_id();
        let reply = trace::scope(trace_id.clone(), Reply::from_response(error.into_response())).await;
        let _ = write_reply(stream, out, &reply, &trace_id, true).await;
    }

    /// Serves the rest of the connection with hyper, starting with the bytes already read.
    async fn hand_off(mut self, stream: TcpStream, read: BytesMut) {
        let (gw, router, peer) = (self.gw.clone(), self.router.clone(), self.peer);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (gw, router) = (gw.clone(), router.clone());
            async move { Ok::<_, std::convert::Infallible>(dispatch(gw, router, peer, req.map(Body::new)).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(Rewind { read: read.freeze(), stream }), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = self.closing.changed() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }
}

/// Reads a request head in place. Headers' offsets go to `fields`.
fn parse_head(buf: &[u8], fields: &mut Vec<(Range<usize>, Range<usize>)>) -> Head {
    if buf.is_empty() {
        return Head::Partial;
    }
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; http1::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < http1::MAX_HEAD => return Head::Partial,
        Ok(httparse::Status::Partial) => return Head::Invalid("the request head is larger than 64 KiB"),
        Err(httparse::Error::TooManyHeaders) => return Head::Invalid("the request has more than 100 headers"),
        Err(_) => return Head::Invalid("the request line or a header is not valid HTTP/1.1"),
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        // HTTP/1.0 and its keep-alive rules are left to hyper.
        return Head::HandOff;
    };
    if method == "HEAD" || !target.starts_with('/') || routed(target.split('?').next().unwrap_or(target)) {
        return Head::HandOff;
    }
    let offset = |s: &[u8]| s.as_ptr() as usize - buf.as_ptr() as usize;
    let range = |s: &[u8]| offset(s)..offset(s) + s.len();
    fields.clear();
    let mut body = None;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match http1::content_length(body, h.value) {
                Ok(n) => body = Some(n),
                Err(_) => return Head::Invalid("the Content-Length header is not one decimal number"),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"expect") || name.eq_ignore_ascii_case(b"upgrade") {
            return Head::HandOff;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= http1::wants_close(h.value);
        }
        fields.push((range(name), range(h.value)));
    }
    Head::Call { len, method: range(method.as_bytes()), target: range(target.as_bytes()), body: body.unwrap_or(0), close }
}

/// The method and target of a parsed head, and its headers (into `headers`), as slices
/// of `head`. `None` for a target that is not ASCII or an unknown kind of method.
fn request<'h>(head: &'h [u8], method: Range<usize>, target: Range<usize>, fields: &[(Range<usize>, Range<usize>)], headers: &mut Vec<(&'h str, &'h [u8])>) -> Option<(Method, &'h str)> {
    for (name, value) in fields {
        // The parser let only token characters into names.
        headers.push((std::str::from_utf8(&head[name.clone()]).ok()?, &head[value.clone()]));
    }
    let target = std::str::from_utf8(&head[target]).ok().filter(|t| t.is_ascii())?;
    Some((Method::from_bytes(&head[method]).ok()?, target))
}

/// Writes a reply of the lean loop in one write (two for a large body).
async fn write_reply(stream: &mut TcpStream, out: &mut Vec<u8>, reply: &Reply, trace_id: &str, close: bool) -> io::Result<()> {
    out.clear();
    http1::write_status(out, reply.status);
    out.extend_from_slice(&reply.lines);
    http1::write_header(out, trace::TRACE_HEADER.as_bytes(), trace_id.as_bytes());
    http1::write_date(out);
    http1::write_content_length(out, reply.body.len());
    if close {
        http1::write_header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if reply.body.len() <= INLINE_BODY {
        out.extend_from_slice(&reply.body);
        stream.write_all(out).await
    } else {
        stream.write_all(out).await?;
        stream.write_all(&reply.body).await
    }
}

/// One call that came through hyper: the router's paths to the router, everything else
/// through the pipeline with a trace id and the envelope on a panic.
async fn dispatch(gw: Gateway, router: Router, peer: SocketAddr, mut req: Request) -> Response {
    if routed(req.uri().path()) {
        req.extensions_mut().insert(ConnectInfo(peer));
        return match router.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    }
    let trace_id = trace::incoming_or_new(req.headers().get(TRACE_HEADER).map(|v| v.as_bytes()));
    traced(trace_id, async move {
        match AssertUnwindSafe(crate::pipeline::serve_request(gw, peer, req)).catch_unwind().await {
            Ok(r) => r,
            Err(panic) => portico_core::http::panic_response(panic),
        }
    })
    .await
}

/// Runs `answer` with `trace_id` as the current trace id (logs, envelope) and puts it in
/// the answer's `x-trace-id` header. Not an `async fn`, which would hold `answer` twice.
fn traced(trace_id: String, answer: impl std::future::Future<Output = Response>) -> impl std::future::Future<Output = Response> {
    let header = HeaderValue::from_str(&trace_id).expect("trace ids are ASCII");
    trace::scope(trace_id, answer).map(move |mut response| {
        response.headers_mut().insert(TRACE_HEADER, header);
        response
    })
}

/// A connection handed to hyper: first the bytes the lean loop had read, then the socket.
struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if !me.read.is_empty() {
            let n = me.read.len().min(buf.remaining());
            buf.put_slice(&me.read[..n]);
            me.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(raw: &str) -> Head {
        parse_head(raw.as_bytes(), &mut Vec::new())
    }

    #[test]
    fn heads_are_sorted_into_calls_hand_offs_and_refusals() {
        assert!(matches!(parse("GET /api/x/y?a=1 HTTP/1.1\r\nHost: h\r\n\r\n"), Head::Call { body: 0, close: false, .. }));
        assert!(matches!(parse("POST /a HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"), Head::Call { len: 58, body: 5, close: true, .. }));
        assert!(matches!(parse("GET /a HTTP/1.1\r\nHost: h\r\n"), Head::Partial));
        for hand_off in [
            "GET /a HTTP/1.0\r\n\r\n",
            "HEAD /a HTTP/1.1\r\n\r\n",
            "GET /oauth2/token HTTP/1.1\r\n\r\n",
            "GET /healthz?x HTTP/1.1\r\n\r\n",
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parse(hand_off), Head::HandOff), "{hand_off:?}");
        }
        for invalid in ["GET /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "GET /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "GE T / HTTP/1.1\r\n\r\n"] {
            assert!(matches!(parse(invalid), Head::Invalid(_)), "{invalid:?}");
        }
        let huge = format!("GET /a HTTP/1.1\r\nx: {}", "a".repeat(http1::MAX_HEAD));
        assert!(matches!(parse(&huge), Head::Invalid(_)));
    }

    proptest! {
        /// Any bytes: never a panic, and a call's ranges always lie inside the head.
        #[test]
        fn heads_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut fields = Vec::new();
            if let Head::Call { len, method, target, .. } = parse_head(&raw, &mut fields) {
                prop_assert!(method.end <= len && target.end <= len);
                prop_assert!(fields.iter().all(|(n, v)| n.end <= len && v.end <= len));
                let _ = request(&raw[..len], method, target, &fields, &mut Vec::new());
            }
        }

        /// Well-formed calls keep their target and headers on the way to the pipeline.
        #[test]
        fn calls_reach_the_pipeline_intact(path in "/[a-z0-9/_.-]{0,40}", query in "[a-z0-9=&%]{0,30}", value in "[ -~]{0,40}") {
            let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            prop_assume!(!routed(&path));
            let raw = format!("GET {target} HTTP/1.1\r\nX-Test: {value}\r\n\r\n");
            let mut fields = Vec::new();
            let Head::Call { len, method, target: t, .. } = parse_head(raw.as_bytes(), &mut fields) else { panic!("not a call: {raw:?}") };
            let mut headers = Vec::new();
            let (_, t) = request(&raw.as_bytes()[..len], method, t, &fields, &mut headers).unwrap();
            prop_assert_eq!(t, target);
            prop_assert_eq!(headers, vec![("X-Test", value.trim().as_bytes())]);
        }
    }
}

//! Trace ids: every request gets one (or keeps a well-formed one it brought in
//! `x-trace-id`); it is logged with every line of the request, echoed in the
//! `x-trace-id` response header and written into every envelope.

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};
use rand::RngCore;
use tracing::Instrument;

pub const TRACE_HEADER: &str = "x-trace-id";

tokio::task_local! {
    static TRACE_ID: String;
}

/// The current request's trace id, if called inside one.
pub fn current() -> Option<String> {
    TRACE_ID.try_with(|t| t.clone()).ok()
}

/// A new trace id: 32 hex digits, the first 12 a millisecond clock, the rest random.
/// The clock part lets a call be found by its trace id among the call records of that
/// moment, without an index of every trace id (`minted_at`, store's `calls`).
pub fn new_trace_id() -> String {
    new_trace_id_at(crate::time::now_ms())
}

/// A new trace id for a call that arrived at `ms` (milliseconds since the epoch).
pub fn new_trace_id_at(ms: i64) -> String {
    let mut b = [0u8; 16];
    let ms = (ms as u64).to_be_bytes();
    b[..6].copy_from_slice(&ms[2..]);
    rand::thread_rng().fill_bytes(&mut b[6..]);
    crate::id::hex(&b)
}

/// The millisecond a trace id of `new_trace_id`'s making carries (its first 12 of 32
/// lowercase hex digits); `None` for any other form. A client's trace id of the same form
/// yields some number too: whoever relies on it checks it against the call's time.
pub fn minted_at(trace_id: &str) -> Option<i64> {
    let b = trace_id.as_bytes();
    if b.len() != 32 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    i64::from_str_radix(&trace_id[..12], 16).ok()
}

/// Whether a trace id brought by a client is kept: 8 to 64 letters, digits and dashes.
pub fn acceptable(s: &str) -> bool {
    s.len() >= 8 && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The trace id for a request: the one it carries in `x-trace-id` when acceptable, else
/// a new one.
pub fn incoming_or_new(header: Option<&[u8]>) -> String {
    incoming(header).map_or_else(new_trace_id, str::to_string)
}

/// [`incoming_or_new`] for a call that arrived at `ms`.
pub fn incoming_or_new_at(header: Option<&[u8]>, ms: i64) -> String {
    incoming(header).map_or_else(|| new_trace_id_at(ms), str::to_string)
}

/// The trace id a request brought, when acceptable.
fn incoming(header: Option<&[u8]>) -> Option<&str> {
    header.and_then(|v| std::str::from_utf8(v).ok()).filter(|s| acceptable(s))
}

/// Runs `f` with `trace_id` as the current trace id (for listeners outside the router).
/// Not an `async fn`: that would keep `f` beside the future that runs it, twice its size.
pub fn scope<F: std::future::Future>(trace_id: String, f: F) -> impl std::future::Future<Output = F::Output> {
    TRACE_ID.scope(trace_id, f)
}

/// Middleware: assigns the trace id, opens the request's log span and logs its outcome.
pub async fn layer(req: Request, next: Next) -> Response {
    let trace_id = incoming_or_new(req.headers().get(TRACE_HEADER).map(|v| v.as_bytes()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("request", trace_id = %trace_id, %method, %path);
    let started = std::time::Instant::now();
    let header = HeaderValue::from_str(&trace_id).expect("trace ids are ASCII");
    let mut response = TRACE_ID
        .scope(trace_id, async move { next.run(req).await }.instrument(span.clone()))
        .await;
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "done")
    });
    response.headers_mut().insert(TRACE_HEADER, header);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_time_ordered_and_unique() {
        let a = new_trace_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_trace_id();
        assert_eq!(a.len(), 32);
        assert!(a < b, "{a} < {b}");
        assert_ne!(new_trace_id(), new_trace_id());
        assert!(acceptable(&a));
    }

    #[test]
    fn a_minted_trace_id_tells_its_millisecond() {
        let before = crate::time::now_ms();
        let t = minted_at(&new_trace_id()).unwrap();
        assert!(t >= before && t <= crate::time::now_ms(), "{t}");
        for other in ["", "abc", "0123456789ABCDEF0123456789abcdef", "0123456789abcdef0123456789abcdef0", "0123456789abcdef-123456789abcdef", "é123456789abcdef0123456789abcde"] {
            assert_eq!(minted_at(other), None, "{other}");
        }
        assert_eq!(minted_at("00000000000a0123456789abcdef0123"), Some(10));
    }
}

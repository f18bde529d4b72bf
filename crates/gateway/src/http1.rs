//! HTTP/1.1 framing shared by both sides of the gateway's own forwarding path (the
//! public listener's lean loop in `server.rs`, the upstream client in `upstream.rs`):
//! strict `Content-Length` parsing, an incremental chunked-body decoder, the cached `Date`
//! value, and writing a head into a buffer.
//!
//! Everything here works on bytes already read; the callers own the sockets.

use std::{
    cell::RefCell,
    time::{Duration, SystemTime},
};

use axum::http::{HeaderMap, StatusCode};

/// The most a request or response head may take (request line or status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most headers a head may carry.
pub const MAX_HEADERS: usize = 100;

/// Why a message could not be framed.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A `Content-Length` that is not a plain decimal number, or two that differ.
    BadLength,
    /// A malformed chunk size line or chunk terminator.
    BadChunk,
    /// The body is larger than the caller's limit.
    TooLarge,
}

/// Folds one `Content-Length` value into what was seen so far: digits only (no sign, no
/// spaces inside, at most 18 of them), and a repeated header must repeat the same number
/// (RFC 9112 §6.3: anything else is an unrecoverable framing error).
pub fn content_length(seen: Option<u64>, value: &[u8]) -> Result<u64, FrameError> {
    let v = value.trim_ascii();
    // A comma-separated list of identical values is allowed; each element is checked.
    let mut n = seen;
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 18 || !part.iter().all(u8::is_ascii_digit) {
            return Err(FrameError::BadLength);
        }
        let parsed = part.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        match n {
            Some(prev) if prev != parsed => return Err(FrameError::BadLength),
            _ => n = Some(parsed),
        }
    }
    n.ok_or(FrameError::BadLength)
}

/// Whether a `Transfer-Encoding` value ends in `chunked` (the only coding a message may
/// be framed by).
pub fn is_chunked(value: &[u8]) -> bool {
    value.rsplit(|&b| b == b',').next().is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether a `Connection` value asks to close after this message.
pub fn wants_close(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Decodes a chunked body incrementally: feed it the bytes read so far, it consumes what
/// it can and tells whether the body (trailers included) is complete.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    body: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data, with this much left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

impl ChunkedDecoder {
    /// Consumes from the front of `input`; returns how many bytes were used and whether the
    /// body is complete. Bytes after a complete body are left alone (the next message).
    pub fn feed(&mut self, input: &[u8], limit: usize) -> Result<(usize, bool), FrameError> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok((pos, true)),
                ChunkState::Size => {
                    let Some(line_len) = find_crlf(&input[pos..]) else {
                        // A size line longer than this is not a size line.
                        return if input.len() - pos > 1024 { Err(FrameError::BadChunk) } else { Ok((pos, false)) };
                    };
                    let line = &input[pos..pos + line_len];
                    // chunk-size [; chunk-ext]
                    let size_part = line.split(|&b| b == b';').next().unwrap_or(&[]).trim_ascii();
                    if size_part.is_empty() || size_part.len() > 15 || !size_part.iter().all(u8::is_ascii_hexdigit) {
                        return Err(FrameError::BadChunk);
                    }
                    let size = size_part.iter().fold(0u64, |acc, d| acc * 16 + u64::from((*d as char).to_digit(16).unwrap_or(0)));
                    pos += line_len + 2;
                    self.state = if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
                    if self.body.len() as u64 + size > limit as u64 {
                        return Err(FrameError::TooLarge);
                    }
                }
                ChunkState::Data(left) => {
                    let available = (input.len() - pos) as u64;
                    if available == 0 {
                        return Ok((pos, false));
                    }
                    let take = left.min(available) as usize;
                    self.body.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                }
                ChunkState::DataEnd => {
                    if input.len() - pos < 2 {
                        return Ok((pos, false));
                    }
                    if &input[pos..pos + 2] != b"\r\n" {
                        return Err(FrameError::BadChunk);
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(line_len) = find_crlf(&input[pos..]) else {
                        return if input.len() - pos > MAX_HEAD { Err(FrameError::TooLarge) } else { Ok((pos, false)) };
                    };
                    pos += line_len + 2;
                    if line_len == 0 {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }

    /// The decoded body.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// Appends a `Date` header for now; the value is formatted once per second per thread.
pub fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let secs = unix_secs();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)));
        }
        write_header(out, b"date", c.1.as_bytes());
    })
}

/// Seconds since the epoch. On Linux from the kernel's coarse clock, which is a few
/// nanoseconds to read instead of tens and behind by at most a scheduler tick: plenty
/// for a header that names the second.
fn unix_secs() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec for the call's duration.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            return ts.tv_sec.max(0) as u64;
        }
    }
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Appends a status line (`HTTP/1.1 200 OK`).
pub fn write_status(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one header line.
pub fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends every header of a map, except hop-by-hop ones and `Content-Length` (the
/// writer frames the message itself).
pub fn write_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        if !is_hop_by_hop(name.as_str()) && name != "content-length" {
            write_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

/// Appends `content-length: n`.
pub fn write_content_length(out: &mut Vec<u8>, n: usize) {
    write_number_header(out, b"content-length", n as u64);
}

/// Appends a header whose value is a number.
pub fn write_number_header(out: &mut Vec<u8>, name: &[u8], n: u64) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(portico_signing::decimal(n, &mut [0; 20]));
    out.extend_from_slice(b"\r\n");
}

/// Whether a header value can be sent as it is: visible ASCII, spaces and tabs (what
/// `HeaderValue` accepts, without making one).
pub fn is_valid_value(v: &[u8]) -> bool {
    // Every byte looked at (no early exit), which the compiler turns into vector code.
    v.iter().fold(true, |ok, &b| ok & ((b >= 0x20 && b != 0x7f) || b == b'\t'))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the old `Proxy-Connection`): they belong
/// to one connection and are never forwarded.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP_BY_HOP: [&str; 9] = ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes.get(i).copied().unwrap_or(7).clamp(1, rest.len());
            i += 1;
            out.extend_from_slice(format!("{n:x};ext=1\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        out
    }

    #[test]
    fn content_lengths_are_strict() {
        assert_eq!(content_length(None, b" 42 "), Ok(42));
        assert_eq!(content_length(Some(42), b"42"), Ok(42));
        assert_eq!(content_length(None, b"42, 42"), Ok(42));
        assert_eq!(content_length(Some(41), b"42"), Err(FrameError::BadLength));
        for bad in [&b""[..], b"-1", b"+1", b"1 2", b"0x10", b"42, 43", b"9999999999999999999"] {
            assert_eq!(content_length(None, bad), Err(FrameError::BadLength), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn lengths_and_values_are_written() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 1234567890] {
            write_content_length(&mut out, n);
        }
        assert_eq!(out, b"content-length: 0\r\ncontent-length: 7\r\ncontent-length: 10\r\ncontent-length: 1234567890\r\n");
        assert!(is_valid_value(b"ok value\t1"));
        assert!(!is_valid_value(b"a\r\nx-injected: 1"));
    }

    #[test]
    fn transfer_and_connection_tokens() {
        assert!(is_chunked(b"gzip, Chunked"));
        assert!(!is_chunked(b"chunked, gzip"));
        assert!(wants_close(b"keep-alive, Close"));
        assert!(!wants_close(b"keep-alive"));
    }

    #[test]
    fn chunked_errors_are_named() {
        assert_eq!(ChunkedDecoder::default().feed(b"zz\r\n", 100), Err(FrameError::BadChunk));
        assert_eq!(ChunkedDecoder::default().feed(b"3\r\nabcX\r\n", 100), Err(FrameError::BadChunk));
        assert_eq!(ChunkedDecoder::default().feed(b"ff\r\n", 100), Err(FrameError::TooLarge));
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(b"3\r\nabc\r\n0\r\n\r\nNEXT", 100), Ok((13, true)));
        assert_eq!(d.into_body(), b"abc");
    }

    proptest! {
        #[test]
        fn number_headers_read_as_the_number(n in prop_oneof![any::<u64>(), 0u64..1000]) {
            let mut out = Vec::new();
            write_number_header(&mut out, b"content-length", n);
            prop_assert_eq!(out, format!("content-length: {n}\r\n").into_bytes());
        }

        /// Any body, cut into any chunks, read in any pieces, decodes to itself and stops
        /// exactly at its end.
        #[test]
        fn chunked_round_trip(body in proptest::collection::vec(any::<u8>(), 0..600), sizes in proptest::collection::vec(1usize..80, 0..20), cuts in proptest::collection::vec(1usize..50, 1..40)) {
            let mut wire = encode(&body, &sizes);
            let end = wire.len();
            wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let mut d = ChunkedDecoder::default();
            let mut buffered: Vec<u8> = Vec::new();
            let mut fed = 0;
            let mut used_total = 0;
            let mut cut = cuts.iter().cycle();
            loop {
                let n = (*cut.next().unwrap()).min(wire.len() - fed);
                buffered.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
                let (used, done) = d.feed(&buffered, 1 << 20).unwrap();
                buffered.drain(..used);
                used_total += used;
                if done { break; }
                prop_assert!(fed < wire.len(), "ran out of input before the end");
            }
            prop_assert_eq!(used_total, end);
            prop_assert_eq!(d.into_body(), body);
        }

        /// Garbage never panics the decoder.
        #[test]
        fn chunked_garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ChunkedDecoder::default().feed(&input, 1000);
        }

        #[test]
        fn content_length_never_panics(input in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = content_length(None, &input);
        }
    }
}

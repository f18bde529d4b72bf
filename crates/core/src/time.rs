//! Time as the platform stores it: milliseconds since the Unix epoch in an `i64`, which
//! both database engines store and compare the same way. RFC 3339 only on the wire.

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-12-01T03:29:17.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let t = t.replace_nanosecond((ms.rem_euclid(1000) as u32) * 1_000_000).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// Parses an RFC 3339 timestamp into milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339).ok().map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ms = 1_764_559_757_123;
        assert_eq!(rfc3339(ms), "2025-12-01T03:29:17.123Z");
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
    }
}

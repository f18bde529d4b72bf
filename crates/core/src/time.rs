//! Time as the platform stores it: milliseconds since the Unix epoch in an `i64`, which
//! both database engines store and compare the same way. RFC 3339 only on the wire.

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// Now, in milliseconds since the Unix epoch. Straight from the system clock: going
/// through `OffsetDateTime` computed a calendar date and divided 128-bit nanoseconds on
/// every read, a few times per gateway call.
pub fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64 * 1000 + i64::from(d.subsec_millis()),
        // A clock set before 1970.
        Err(e) => -(e.duration().as_millis() as i64),
    }
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

/// The platform's day: days start at midnight UTC+8 (seed 001's business day). Returns
/// (day number since 1970-01-01, seconds left in the day).
pub fn platform_day(now_secs: i64) -> (i64, u64) {
    let local = now_secs + 8 * 3600;
    (local.div_euclid(86_400), (86_400 - local.rem_euclid(86_400)) as u64)
}

/// `[start, end)` in milliseconds of the platform day written `YYYY-MM-DD`.
pub fn platform_day_bounds(date: &str) -> Option<(i64, i64)> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(date, &format).ok()?;
    let start = day.midnight().assume_utc().unix_timestamp() - 8 * 3600;
    Some((start * 1000, (start + 86_400) * 1000))
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

    #[test]
    fn now_reads_the_same_clock_as_the_calendar() {
        let before = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let now = now_ms();
        let after = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        assert!(before <= now && now <= after, "{before} {now} {after}");
    }

    #[test]
    fn platform_days() {
        let (start, end) = platform_day_bounds("2026-12-01").unwrap();
        assert_eq!(rfc3339(start), "2026-11-30T16:00:00Z");
        assert_eq!(end - start, 86_400_000);
        assert_eq!(platform_day(start / 1000).0, platform_day(end / 1000 - 1).0);
        assert_eq!(platform_day(end / 1000).0, platform_day(start / 1000).0 + 1);
        for bad in ["2026-13-01", "26-12-01", "2026-12-01T00:00", ""] {
            assert!(platform_day_bounds(bad).is_none(), "{bad}");
        }
    }
}

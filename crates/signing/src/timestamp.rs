//! Request timestamps: Unix seconds, or (parameter style) TOP's `yyyy-MM-dd HH:mm:ss` in
//! UTC+8.

use time::{macros::format_description, PrimitiveDateTime, UtcOffset};

/// Parses a timestamp into Unix seconds. `allow_top_format` admits TOP's wall-clock form.
pub fn parse(s: &str, allow_top_format: bool) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    if allow_top_format {
        let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        let offset = UtcOffset::from_hms(8, 0, 0).expect("a valid offset");
        return PrimitiveDateTime::parse(s, &format).ok().map(|t| t.assume_offset(offset).unix_timestamp());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(parse("1700000000", false), Some(1_700_000_000));
        // 1700000000 is 2023-11-14 22:13:20 UTC, which is 2023-11-15 06:13:20 in UTC+8.
        assert_eq!(parse("2023-11-15 06:13:20", true), Some(1_700_000_000));
        assert_eq!(parse("2023-11-15 14:13:20", true), Some(1_700_000_000 + 8 * 3600));
        assert_eq!(parse("2023-11-15 14:13:20", false), None);
        assert_eq!(parse("", true), None);
        assert_eq!(parse("-5", true), None);
        assert_eq!(parse("99999999999999999999", true), None);
        assert_eq!(parse("2023-13-15 14:13:20", true), None);
    }
}

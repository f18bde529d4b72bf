//! Request timestamps: Unix seconds, or (parameter style) TOP's `yyyy-MM-dd HH:mm:ss` in
//! UTC+8.

use time::{macros::format_description, PrimitiveDateTime, UtcOffset};

/// Parses a timestamp into Unix seconds. `allow_top_format` admits TOP's wall-clock form.
pub fn parse(s: &str, allow_top_format: bool) -> Option<i64> {
    let s = s.trim();
    // Unix seconds: digits only, read as they are checked (twelve cannot overflow).
    let mut n = 0i64;
    if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| {
        let digit = b.wrapping_sub(b'0');
        n = n * 10 + i64::from(digit);
        digit < 10
    }) {
        return Some(n);
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

    proptest::proptest! {
        /// Any text: Unix seconds exactly where it is one to twelve digits, as `str::parse` reads them.
        #[test]
        fn seconds_are_read_as_str_parse_reads_them(s in "[0-9]{0,14}|[0-9 a+/:-]{0,14}|\\PC{0,14}") {
            let want = if (1..=12).contains(&s.trim().len()) && s.trim().bytes().all(|b| b.is_ascii_digit()) { s.trim().parse::<i64>().ok() } else { None };
            proptest::prop_assert_eq!(parse(&s, false), want);
        }
    }
}

//! Object ids: a type prefix, then 28 hex digits (a millisecond clock, then random).
//! Ids sort by creation time, which is what keyset pagination relies on. Within one
//! process they strictly increase: an id made in the same millisecond as the one before
//! keeps the clock and takes the previous random part plus one (as monotonic ULIDs do), so
//! "newest first" never depends on chance and the clock part stays the real time however
//! many ids a millisecond holds (ids made by the tens of thousands a second, as call
//! records are, once pushed it ahead of the clock, and after a restart new ids would have
//! sorted before old ones).

use std::sync::Mutex;

use rand::RngCore;

/// The clock and random parts of the last id made.
static LAST: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// A new id such as `mch_0193a4f1c2d94c1e7f0a2b3c4d5e`.
pub fn new_id(prefix: &str) -> String {
    new_id_at(prefix, crate::time::now_ms())
}

/// A new id whose clock part is `ms` (a moment the caller already read, such as a call's
/// arrival), or the last id's if that is later: ids still strictly increase.
pub fn new_id_at(prefix: &str, ms: i64) -> String {
    let now = ms as u64 & 0xffff_ffff_ffff;
    let (ms, random) = {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        *last = match *last {
            (ms, random) if ms >= now => match random.checked_add(1) {
                Some(next) => (ms, next),
                None => (ms + 1, 0),
            },
            _ => (now, rand::thread_rng().next_u64() >> 1),
        };
        *last
    };
    let mut id = String::with_capacity(prefix.len() + 29);
    id.push_str(prefix);
    id.push('_');
    push_hex(&mut id, &ms.to_be_bytes()[2..]);
    push_hex(&mut id, &random.to_be_bytes());
    id
}

/// A random token of `bytes` bytes, hex-encoded behind a prefix (`pk_live_…`).
pub fn random_token(prefix: &str, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    let mut out = String::with_capacity(prefix.len() + bytes * 2);
    out.push_str(prefix);
    push_hex(&mut out, &buf);
    out
}

/// `N` random bytes from the operating system's generator (via the thread RNG).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::thread_rng().fill_bytes(&mut buf);
    buf
}

/// Lower-case hex of `bytes`, in one allocation.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Digits written into a stack buffer and pushed a buffer at a time (a trace id on every
/// call, an id on every call record: pushing char by char cost four times as much).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(buf.len() / 2) {
        let digits = &mut buf[..chunk.len() * 2];
        for (pair, b) in digits.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        out.push_str(std::str::from_utf8(digits).expect("hex digits are ASCII"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(random_token("p_", 4).len(), 2 + 8);
    }

    proptest::proptest! {
        /// Any length, across the stack buffer's size too: the formatter's digits.
        #[test]
        fn hex_is_the_formatters(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            proptest::prop_assert_eq!(hex(&bytes), bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
    }

    #[test]
    fn ids_are_prefix_then_28_lowercase_hex_digits() {
        let id = new_id("mch");
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.starts_with("mch_") && id[4..].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{id}");
    }

    #[test]
    fn an_id_for_an_earlier_moment_still_sorts_after_the_last() {
        let a = new_id("cal");
        let b = new_id_at("cal", crate::time::now_ms() - 60_000);
        assert!(b > a, "{b} after {a}");
    }

    #[test]
    fn ids_made_together_still_sort_in_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("aud")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn many_ids_a_millisecond_keep_the_real_clock() {
        let ids: Vec<String> = (0..100_000).map(|_| new_id("cal")).collect();
        let end = crate::time::now_ms() as u64;
        let clock = |id: &str| u64::from_str_radix(&id[4..16], 16).unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert!(clock(ids.last().unwrap()) <= end, "{} is ahead of the clock ({end})", ids.last().unwrap());
    }

    #[test]
    fn ids_sort_by_time_and_are_unique() {
        let a = new_id("app");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("app");
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.len(), "app_".len() + 28);
        assert_ne!(new_id("x"), new_id("x"));
    }
}

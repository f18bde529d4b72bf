//! Object ids: a type prefix, then 28 hex digits (a millisecond clock, then random).
//! Ids sort by creation time, which is what keyset pagination relies on. Within one
//! process they strictly increase: two ids made in the same millisecond get successive
//! clock values, so "newest first" never depends on chance.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::RngCore;

static LAST_MS: AtomicU64 = AtomicU64::new(0);

/// A new id such as `mch_0193a4f1c2d94c1e7f0a2b3c4d5e`.
pub fn new_id(prefix: &str) -> String {
    let now = crate::time::now_ms() as u64 & 0xffff_ffff_ffff;
    let previous = LAST_MS.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1))).unwrap_or(now);
    let ms = now.max(previous + 1);
    let mut random = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut random);
    format!("{prefix}_{ms:012x}{:016x}", u64::from_be_bytes(random))
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

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
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

    #[test]
    fn ids_made_together_still_sort_in_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("aud")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
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

//! Opaque bearer tokens. The caller gets the token once; the database keeps only its
//! SHA-256, so a leaked table gives no working token. A prefix tells what a leaked token
//! is (`pt_at_` console access token, `pt_rt_` refresh token, `pt_ss_` browser session).

use sha2::{Digest, Sha256};

/// A new random token of 32 bytes behind `prefix`.
pub fn generate(prefix: &str) -> String {
    portico_core::id::random_token(prefix, 32)
}

/// The digest stored in place of the token, hex-encoded.
pub fn digest(token: &str) -> String {
    digest_in(token, &mut [0u8; 64]).to_owned()
}

/// [`digest`] written into `buf` (a gateway call looks its token up by it, and keeps it
/// only when the cache misses). `hex::encode` would collect chars one by one.
pub fn digest_in<'b>(token: &str, buf: &'b mut [u8; 64]) -> &'b str {
    let _ = hex::encode_to_slice(Sha256::digest(token.as_bytes()), buf);
    std::str::from_utf8(buf).unwrap_or_default()
}

/// Constant-time equality for secrets and signatures (one implementation, the signing
/// crate's).
pub use portico_signing::constant_time_eq;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_digests_stable() {
        let a = generate("pt_at_");
        assert!(a.starts_with("pt_at_") && a.len() == 6 + 64);
        assert_ne!(a, generate("pt_at_"));
        assert_eq!(digest(&a), digest(&a));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

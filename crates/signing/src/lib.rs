//! Portico's request-signature schemes, as pinned in `shared/spec/signing.md`:
//!
//! - **parameter style** (seed 001, Taobao TOP, Alipay): a canonical string of the request
//!   parameters, signed with `md5`, `hmac-sha256`, `rsa2`, or TOP's own `top-md5`,
//!   `top-hmac`, `top-hmac-sha256` ([`params`]);
//! - **header style** (WeChat Pay v3 pattern): `Authorization: PORTICO-HMAC-SHA256 …` over
//!   method, path, timestamp, nonce and body ([`header`]).
//!
//! It also holds the signed identity the gateway hands to services ([`identity`]) and
//! the Standard Webhooks signatures on message deliveries ([`webhook`]).
//!
//! This crate is pure computation, no I/O: the server's verifier (freshness, replay,
//! credential lookup) and the SDK's signer both build on it, so both sides compute the
//! same bytes by construction.

pub mod header;
pub mod identity;
pub mod params;
pub mod timestamp;
pub mod webhook;

use hmac::{Hmac, Mac};
use rsa::{pkcs1v15, signature::Verifier as _};
use sha2::Sha256;

pub use params::SignMethod;
pub use rsa::{RsaPrivateKey, RsaPublicKey};

/// `n` in decimal, written at the end of `buf` (no formatting machinery: the identity
/// headers, the gateway's number headers and call records' addresses write these on every
/// call).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    // Two digits per division.
    const PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    let mut start = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        buf[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        start -= 2;
        buf[start..start + 2].copy_from_slice(&PAIRS[n as usize * 2..n as usize * 2 + 2]);
    } else {
        start -= 1;
        buf[start] = b'0' + n as u8;
    }
    &buf[start..]
}

/// What produces a signature: the app secret, or (for RSA2) the app's private key.
#[derive(Clone, Copy)]
pub enum Signer<'a> {
    Secret(&'a str),
    Rsa(&'a RsaPrivateKey),
}

/// What checks a signature: the app secret (as text, or keyed ahead), or (for RSA2) the
/// app's public key.
#[derive(Clone, Copy)]
pub enum Verifier<'a> {
    Secret(&'a str),
    Keyed(&'a AppSecret),
    Rsa(&'a RsaPublicKey),
}

/// An HMAC-SHA256 key, keyed once: the inner and outer pads hashed ahead, so that each
/// message costs its own SHA-256 blocks only (two fewer a message). The keys the gateway
/// uses on every call are held this way: the identity key, and each app secret.
#[derive(Clone)]
pub struct HmacKey(Hmac<Sha256>);

impl HmacKey {
    pub fn new(key: &[u8]) -> HmacKey {
        HmacKey(Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length"))
    }

    /// A MAC to feed, already keyed.
    pub fn start(&self) -> Hmac<Sha256> {
        self.0.clone()
    }

    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.start();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

/// An app secret as the gateway keeps it: the text (for the MD5 methods and TOP's
/// HMAC-MD5), and keyed for the HMAC-SHA256 ones.
#[derive(Clone)]
pub struct AppSecret {
    text: String,
    sha256: HmacKey,
}

impl AppSecret {
    pub fn new(text: String) -> AppSecret {
        AppSecret { sha256: HmacKey::new(text.as_bytes()), text }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn sha256(&self) -> &HmacKey {
        &self.sha256
    }
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppSecret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The signature does not match.
    #[error("the signature does not match")]
    Mismatch,
    /// The presented signature is not even of the right form (not hex, not base64).
    #[error("the signature is malformed: {0}")]
    Malformed(&'static str),
    /// An HMAC or MD5 method was given an RSA key, or the other way round.
    #[error("{0} needs {1}")]
    WrongKey(&'static str, &'static str),
    #[error("RSA signing failed")]
    Rsa,
}

pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    HmacKey::new(key).mac(message)
}

pub(crate) fn hmac_md5(key: &[u8], message: &[u8]) -> [u8; 16] {
    let mut mac = Hmac::<md5::Md5>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

pub(crate) fn rsa_sign(key: &RsaPrivateKey, message: &[u8]) -> Result<Vec<u8>, SignError> {
    use rsa::signature::{SignatureEncoding, Signer as _};
    let signing_key = pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    signing_key.try_sign(message).map(|s| s.to_vec()).map_err(|_| SignError::Rsa)
}

pub(crate) fn rsa_verify(key: &RsaPublicKey, message: &[u8], signature: &[u8]) -> Result<(), SignError> {
    let verifying_key = pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
    let signature = pkcs1v15::Signature::try_from(signature).map_err(|_| SignError::Malformed("not an RSA signature"))?;
    verifying_key.verify(message, &signature).map_err(|_| SignError::Mismatch)
}

/// Compares a presented hex signature with the expected bytes: case-insensitive, in
/// constant time.
pub(crate) fn eq_hex(presented: &str, expected: &[u8]) -> Result<(), SignError> {
    // Decoded into a fixed buffer (this runs on every signed call); a presented value of
    // another length cannot match.
    let presented = presented.trim();
    let mut decoded = [0u8; 64];
    if presented.len() != expected.len() * 2 || expected.len() > decoded.len() {
        return if presented.len().is_multiple_of(2) && presented.bytes().all(|c| c.is_ascii_hexdigit()) {
            Err(SignError::Mismatch)
        } else {
            Err(SignError::Malformed("not hexadecimal"))
        };
    }
    let decoded = &mut decoded[..expected.len()];
    if !decode_hex(presented.as_bytes(), decoded) {
        return Err(SignError::Malformed("not hexadecimal"));
    }
    eq_bytes(decoded, expected)
}

/// Decodes hex digits of either case, two to a byte of `out`, through a table and
/// without a branch per digit (the `hex` crate's decoder took a thousand instructions for
/// a signature, on every signed call); false if any character is not a hex digit.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> bool {
    /// A digit's value, or 0x10 for anything else.
    static VALUE: [u8; 256] = {
        let mut t = [0x10u8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let mut bad = 0u8;
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (VALUE[usize::from(pair[0])], VALUE[usize::from(pair[1])]);
        bad |= high | low;
        *byte = high << 4 | low;
    }
    bad < 0x10
}

pub(crate) fn eq_bytes(presented: &[u8], expected: &[u8]) -> Result<(), SignError> {
    if constant_time_eq(presented, expected) {
        Ok(())
    } else {
        Err(SignError::Mismatch)
    }
}

/// Whether two byte strings (secrets, signatures, digests) are equal, in constant time:
/// the differences of every byte are gathered first and looked at once, behind an
/// optimizer barrier. (`subtle`'s `ct_eq` puts a barrier on each byte, twenty
/// instructions a byte on every signed call; this folds them in a few vector
/// instructions.) Only the lengths, which are not secret, decide early.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    a.len() == b.len() && std::hint::black_box(diff) == 0
}

pub(crate) fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[cfg(test)]
mod vectors {
    //! Published test vectors for the primitives: RFC 2202 (HMAC-MD5) and RFC 4231
    //! (HMAC-SHA256), and RFC 1321's MD5 suite.
    use super::*;

    #[test]
    fn rfc4231_hmac_sha256() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (&[0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            (&[0xaa; 20], &[0xdd; 50], "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &[0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hex::encode(hmac_sha256(key, data)), *want);
        }
    }

    #[test]
    fn rfc2202_hmac_md5() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (&[0x0b; 16], b"Hi There", "9294727a3638bb1c13f48ef8158bfc9d"),
            (b"Jefe", b"what do ya want for nothing?", "750c783e6ab0b503eaa86e310a5db738"),
            (&[0xaa; 16], &[0xdd; 50], "56be34521d144c88dbb8c733f0e8b3f6"),
            (&[0xaa; 80], b"Test Using Larger Than Block-Size Key - Hash Key First", "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"),
        ];
        for (key, data, want) in cases {
            assert_eq!(hex::encode(hmac_md5(key, data)), *want);
        }
    }

    proptest::proptest! {
        /// Any text: the same bytes as the `hex` crate, or a refusal where it refuses.
        #[test]
        fn hex_decodes_as_the_hex_crate(text in "([0-9a-fA-F]{2}|[g-zG-Z ]|é){0,40}") {
            let mut ours = vec![0u8; text.len() / 2];
            let ok = text.len() % 2 == 0 && decode_hex(text.as_bytes(), &mut ours);
            match hex::decode(&text) {
                Ok(theirs) => proptest::prop_assert_eq!(Some(theirs), ok.then_some(ours)),
                Err(_) => proptest::prop_assert!(!ok),
            }
        }

        /// Any two byte strings: equal exactly when they are.
        #[test]
        fn constant_time_eq_is_equality(a in proptest::collection::vec(0u8..4, 0..40), b in proptest::collection::vec(0u8..4, 0..40)) {
            proptest::prop_assert_eq!(constant_time_eq(&a, &b), a == b);
            proptest::prop_assert_eq!(eq_bytes(&a, &b).is_ok(), a == b);
            proptest::prop_assert!(constant_time_eq(&a, &a));
        }

        /// Any number, the shortest and the longest included: its `Display`.
        #[test]
        fn decimal_is_display(n in proptest::prop_oneof![proptest::prelude::any::<u64>(), 0u64..1000, proptest::strategy::Just(u64::MAX)]) {
            let (mut buf, text) = ([0; 20], n.to_string());
            proptest::prop_assert_eq!(decimal(n, &mut buf), text.as_bytes());
        }
    }

    #[test]
    fn rfc1321_md5() {
        use md5::Digest;
        for (input, want) in [("", "d41d8cd98f00b204e9800998ecf8427e"), ("abc", "900150983cd24fb0d6963f7d28e17f72"), ("message digest", "f96b697d7cb7938d525a2f31aaf161d0")] {
            assert_eq!(hex::encode(md5::Md5::digest(input.as_bytes())), want);
        }
    }
}

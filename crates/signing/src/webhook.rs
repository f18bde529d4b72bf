//! Standard Webhooks (standard-webhooks/standard-webhooks, `spec/standard-webhooks.md`),
//! as pinned in `shared/spec/messaging.md`: every delivery carries `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64(HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}"))>`, a space-separated list while a secret rotates. Secrets
//! are `whsec_` + base64 of 24 to 64 random bytes; the key is the decoded bytes.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const PREFIX: &str = "whsec_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the secret must be whsec_ followed by base64 of 24 to 64 bytes")]
    BadSecret,
    #[error("webhook-timestamp is missing or not a number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is too far from now")]
    Stale,
    #[error("no signature in webhook-signature matches")]
    NoMatch,
}

/// A signing key: the decoded bytes of a `whsec_` secret.
#[derive(Clone)]
pub struct WebhookKey(Vec<u8>);

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKey(…)")
    }
}

impl WebhookKey {
    /// Parses `whsec_<base64>` (the prefix is optional, as in the reference libraries).
    pub fn parse(secret: &str) -> Result<WebhookKey, WebhookError> {
        let b64 = secret.strip_prefix(PREFIX).unwrap_or(secret);
        let bytes = STANDARD.decode(b64).map_err(|_| WebhookError::BadSecret)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(WebhookError::BadSecret);
        }
        Ok(WebhookKey(bytes))
    }

    /// The `whsec_` form of raw key bytes (24 to 64 of them).
    pub fn encode(bytes: &[u8]) -> String {
        format!("{PREFIX}{}", STANDARD.encode(bytes))
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` value: one `v1,…` per key, space-separated.
pub fn signature_header(keys: &[WebhookKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter().map(|k| k.sign(msg_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// What a receiver does: checks the timestamp is within `tolerance_secs` of `now` and
/// that one of the signatures in the header is the key's.
pub fn verify(key: &WebhookKey, msg_id: &str, timestamp: &str, signatures: &str, body: &[u8], now: i64, tolerance_secs: i64) -> Result<(), WebhookError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| WebhookError::BadTimestamp)?;
    if (now - ts).abs() > tolerance_secs {
        return Err(WebhookError::Stale);
    }
    let expected = key.sign(msg_id, ts, body);
    let expected = expected.as_bytes();
    let matched = signatures.split(' ').any(|s| crate::constant_time_eq(s.as_bytes(), expected));
    if matched {
        Ok(())
    } else {
        Err(WebhookError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector published with the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn published_vector() {
        let key = WebhookKey::parse(SECRET).unwrap();
        assert_eq!(key.sign(MSG_ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
        verify(&key, MSG_ID, "1614265330", SIGNATURE, BODY.as_bytes(), TIMESTAMP + 10, 300).unwrap();
        // Also without the prefix, as the reference libraries accept.
        assert_eq!(WebhookKey::parse(SECRET.trim_start_matches(PREFIX)).unwrap().sign(MSG_ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn verification_fails_as_the_reference_libraries_do() {
        let key = WebhookKey::parse(SECRET).unwrap();
        let other = WebhookKey::parse(&WebhookKey::encode(&[7u8; 32])).unwrap();
        // Rotation: either key in a space-separated list verifies.
        let both = signature_header(&[other.clone(), key.clone()], MSG_ID, TIMESTAMP, BODY.as_bytes());
        verify(&key, MSG_ID, "1614265330", &both, BODY.as_bytes(), TIMESTAMP, 300).unwrap();
        verify(&other, MSG_ID, "1614265330", &both, BODY.as_bytes(), TIMESTAMP, 300).unwrap();
        assert_eq!(verify(&key, MSG_ID, "1614265330", SIGNATURE, b"{\"test\": 2432232315}", TIMESTAMP, 300), Err(WebhookError::NoMatch));
        assert_eq!(verify(&key, "msg_other", "1614265330", SIGNATURE, BODY.as_bytes(), TIMESTAMP, 300), Err(WebhookError::NoMatch));
        assert_eq!(verify(&key, MSG_ID, "1614265330", SIGNATURE, BODY.as_bytes(), TIMESTAMP + 301, 300), Err(WebhookError::Stale));
        assert_eq!(verify(&key, MSG_ID, "16142x", SIGNATURE, BODY.as_bytes(), TIMESTAMP, 300), Err(WebhookError::BadTimestamp));
        assert_eq!(verify(&key, MSG_ID, "1614265330", "v1,", BODY.as_bytes(), TIMESTAMP, 300), Err(WebhookError::NoMatch));
    }

    #[test]
    fn secrets_are_checked() {
        assert_eq!(WebhookKey::parse("whsec_c2hvcnQ=").unwrap_err(), WebhookError::BadSecret);
        assert_eq!(WebhookKey::parse("whsec_not base64!").unwrap_err(), WebhookError::BadSecret);
        let s = WebhookKey::encode(&[1u8; 24]);
        assert!(s.starts_with("whsec_"));
        WebhookKey::parse(&s).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,120}") {
            let _ = WebhookKey::parse(&s);
        }

        #[test]
        fn any_body_round_trips(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512), ts in 0i64..4_000_000_000) {
            let key = WebhookKey::parse(SECRET).unwrap();
            let sig = key.sign(MSG_ID, ts, &body);
            proptest::prop_assert!(verify(&key, MSG_ID, &ts.to_string(), &sig, &body, ts, 0).is_ok());
        }
    }
}

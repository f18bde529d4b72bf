//! The identity the gateway hands to services: who is calling, signed with a key shared
//! with the services, so that a service can trust it and a forged internal call fails.
//!
//! Headers: `x-portico-app-id`, `x-portico-merchant-id`, `x-portico-internal-user-id`,
//! `x-portico-user-id`, `x-portico-scope`, `x-portico-environment`, `x-trace-id`,
//! `x-portico-timestamp` and `x-portico-identity` = base64 HMAC-SHA256 over
//! `app\nmerchant\ninternal_user\nuser\nscope\nenvironment\ntrace\ntimestamp\n`.
//! The internal user, end user and scope headers are left out when empty (most calls
//! have no end user); a missing one reads as empty.
//! Clients cannot send any `x-portico-*` header through the gateway: they are removed.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::HmacKey;

pub const PREFIX: &str = "x-portico-";

/// The identity of one call. Owned (`String`) on the service's side; the gateway signs
/// one made of borrowed fields (`Identity<&str>`), without copying them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity<S = String> {
    pub app_id: S,
    pub merchant_id: S,
    pub internal_user_id: S,
    pub user_id: S,
    pub scope: S,
    pub environment: S,
    pub trace_id: S,
    pub timestamp: i64,
}

/// The signature header's value: base64 of 32 bytes.
const SIGNATURE_LEN: usize = 44;

impl<S: AsRef<str>> Identity<S> {
    /// The MAC over `app\nmerchant\n…\ntimestamp\n`, fed piece by piece.
    fn mac(&self, key: &HmacKey) -> Hmac<Sha256> {
        let mut mac = key.start();
        for part in [&self.app_id, &self.merchant_id, &self.internal_user_id, &self.user_id, &self.scope, &self.environment, &self.trace_id] {
            mac.update(part.as_ref().as_bytes());
            mac.update(b"\n");
        }
        let mut digits = [0u8; 20];
        mac.update(decimal(self.timestamp, &mut digits));
        mac.update(b"\n");
        mac
    }

    pub fn sign(&self, key: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.mac(&HmacKey::new(key)).finalize().into_bytes())
    }

    /// Hands each header to send upstream, signature included, to `f` (name, value); the
    /// optional ones only when not empty.
    pub fn each_header(&self, key: &HmacKey, mut f: impl FnMut(&'static str, &[u8])) {
        let mut signature = [0u8; SIGNATURE_LEN];
        let written = base64::engine::general_purpose::STANDARD.encode_slice(self.mac(key).finalize().into_bytes(), &mut signature).unwrap_or(0);
        let mut digits = [0u8; 20];
        f("x-portico-app-id", self.app_id.as_ref().as_bytes());
        f("x-portico-merchant-id", self.merchant_id.as_ref().as_bytes());
        for (name, value) in [("x-portico-internal-user-id", &self.internal_user_id), ("x-portico-user-id", &self.user_id), ("x-portico-scope", &self.scope)] {
            if !value.as_ref().is_empty() {
                f(name, value.as_ref().as_bytes());
            }
        }
        f("x-portico-environment", self.environment.as_ref().as_bytes());
        f("x-trace-id", self.trace_id.as_ref().as_bytes());
        f("x-portico-timestamp", decimal(self.timestamp, &mut digits));
        f("x-portico-identity", &signature[..written]);
    }

    /// The headers to send upstream, signature included.
    pub fn headers(&self, key: &[u8]) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(9);
        self.each_header(&HmacKey::new(key), |k, v| out.push((k, String::from_utf8_lossy(v).into_owned())));
        out
    }
}

/// `n` in decimal, in `buf` (19 digits at most, so a sign fits before them).
fn decimal(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len() - crate::decimal(n.unsigned_abs(), buf).len();
    if n < 0 {
        start -= 1;
        buf[start] = b'-';
    }
    &buf[start..]
}

impl Identity {
    /// Reads and checks the headers on the service's side (the SDK uses this).
    pub fn verify(get: impl Fn(&str) -> Option<String>, key: &[u8]) -> Option<Identity> {
        let id = Identity {
            app_id: get("x-portico-app-id")?,
            merchant_id: get("x-portico-merchant-id")?,
            internal_user_id: get("x-portico-internal-user-id").unwrap_or_default(),
            user_id: get("x-portico-user-id").unwrap_or_default(),
            scope: get("x-portico-scope").unwrap_or_default(),
            environment: get("x-portico-environment")?,
            trace_id: get("x-trace-id")?,
            timestamp: get("x-portico-timestamp")?.parse().ok()?,
        };
        let presented = base64::engine::general_purpose::STANDARD.decode(get("x-portico-identity")?).ok()?;
        id.mac(&HmacKey::new(key)).verify_slice(&presented).ok()?;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_detects_forgery() {
        let id = Identity { app_id: "app_1".into(), merchant_id: "mch_1".into(), environment: "production".into(), trace_id: "t".into(), timestamp: 1, ..Default::default() };
        let headers: std::collections::HashMap<String, String> = id.headers(b"k").iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let get = |h: &std::collections::HashMap<String, String>| {
            let h = h.clone();
            move |n: &str| h.get(n).cloned()
        };
        assert_eq!(Identity::verify(get(&headers), b"k"), Some(id.clone()));
        // Empty optional fields are not sent, and read back as empty.
        assert!(["x-portico-internal-user-id", "x-portico-user-id", "x-portico-scope"].iter().all(|h| !headers.contains_key(*h)));
        let with_user = Identity { user_id: "usr_1".into(), scope: "order".into(), ..id.clone() };
        let sent: std::collections::HashMap<String, String> = with_user.headers(b"k").iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        assert_eq!(sent.get("x-portico-user-id").map(String::as_str), Some("usr_1"));
        assert_eq!(Identity::verify(get(&sent), b"k"), Some(with_user));
        assert_eq!(Identity::verify(get(&headers), b"other key"), None);
        let mut forged = headers.clone();
        forged.insert("x-portico-merchant-id".into(), "mch_2".into());
        assert_eq!(Identity::verify(get(&forged), b"k"), None);
        // Piecewise MAC = MAC over the documented message.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"app_1\nmch_1\n\n\n\nproduction\nt\n1\n");
        assert_eq!(id.sign(b"k"), base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
        let negative = Identity { timestamp: -120, ..Identity::<&str>::default() };
        assert!(negative.headers(b"k").contains(&("x-portico-timestamp", "-120".to_string())));
    }

    proptest::proptest! {
        /// The MAC, keyed ahead, is the one over the documented message.
        #[test]
        fn signs_the_documented_message(app in ".{0,40}", scope in ".{0,40}", trace in "[0-9a-f]{0,64}", timestamp in proptest::prelude::any::<i64>()) {
            let id = Identity { app_id: app.as_str(), merchant_id: "mch_1", scope: scope.as_str(), environment: "sandbox", trace_id: trace.as_str(), timestamp, ..Default::default() };
            let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
            mac.update(format!("{app}\nmch_1\n\n\n{scope}\nsandbox\n{trace}\n{timestamp}\n").as_bytes());
            proptest::prop_assert_eq!(id.sign(b"k"), base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
        }

        #[test]
        fn timestamps_read_as_their_display(n in proptest::prop_oneof![proptest::prelude::any::<i64>(), proptest::strategy::Just(i64::MIN), -1000i64..1000]) {
            let (mut buf, text) = ([0; 20], n.to_string());
            proptest::prop_assert_eq!(decimal(n, &mut buf), text.as_bytes());
        }
    }
}

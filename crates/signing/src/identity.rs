//! The identity the gateway hands to services: who is calling, signed with a key shared
//! with the services, so that a service can trust it and a forged internal call fails.
//!
//! Headers: `x-portico-app-id`, `x-portico-merchant-id`, `x-portico-internal-user-id`,
//! `x-portico-user-id`, `x-portico-scope`, `x-portico-environment`, `x-trace-id`,
//! `x-portico-timestamp` and `x-portico-identity` = base64 HMAC-SHA256 over
//! `app\nmerchant\ninternal_user\nuser\nscope\nenvironment\ntrace\ntimestamp\n`.
//! Clients cannot send any `x-portico-*` header through the gateway: they are removed.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const PREFIX: &str = "x-portico-";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub app_id: String,
    pub merchant_id: String,
    pub internal_user_id: String,
    pub user_id: String,
    pub scope: String,
    pub environment: String,
    pub trace_id: String,
    pub timestamp: i64,
}

impl Identity {
    fn message(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.app_id, self.merchant_id, self.internal_user_id, self.user_id, self.scope, self.environment, self.trace_id, self.timestamp
        )
    }

    pub fn sign(&self, key: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(self.message().as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    /// The headers to send upstream, signature included.
    pub fn headers(&self, key: &[u8]) -> [(&'static str, String); 9] {
        [
            ("x-portico-app-id", self.app_id.clone()),
            ("x-portico-merchant-id", self.merchant_id.clone()),
            ("x-portico-internal-user-id", self.internal_user_id.clone()),
            ("x-portico-user-id", self.user_id.clone()),
            ("x-portico-scope", self.scope.clone()),
            ("x-portico-environment", self.environment.clone()),
            ("x-trace-id", self.trace_id.clone()),
            ("x-portico-timestamp", self.timestamp.to_string()),
            ("x-portico-identity", self.sign(key)),
        ]
    }

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
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(id.message().as_bytes());
        mac.verify_slice(&presented).ok()?;
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
        assert_eq!(Identity::verify(get(&headers), b"k"), Some(id));
        assert_eq!(Identity::verify(get(&headers), b"other key"), None);
        let mut forged = headers.clone();
        forged.insert("x-portico-merchant-id".into(), "mch_2".into());
        assert_eq!(Identity::verify(get(&forged), b"k"), None);
    }
}

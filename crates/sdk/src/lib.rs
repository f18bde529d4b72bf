//! The Portico SDK for Rust.
//!
//! Signing a parameter-style call (the `/router/rest` single entry, or any REST path):
//!
//! ```
//! use portico_sdk::{Credentials, SignMethod};
//! let creds = Credentials::new("ak_live_…", "sk_live_…");
//! let params = creds.sign_params(SignMethod::HmacSha256, &[("method", "order.get"), ("v", "1.0")], 1_700_000_000, Some("n-1"));
//! // send `params` as the query string or form body
//! assert!(params.iter().any(|(k, _)| k == "sign"));
//! ```
//!
//! Signing a JSON call in the header style:
//!
//! ```
//! # use portico_sdk::Credentials;
//! # let creds = Credentials::new("ak_live_…", "sk_live_…");
//! let authorization = creds.authorization("POST", "/api/order/create", br#"{"sku":"hoodie"}"#, 1_700_000_000, "n-2");
//! assert!(authorization.starts_with("PORTICO-HMAC-SHA256 "));
//! ```
//!
//! A service behind the gateway checks who is calling with [`Identity::verify`] and the
//! key it shares with Portico (`gateway.identity_key`):
//!
//! ```
//! # use portico_sdk::Identity;
//! # let headers = std::collections::HashMap::<String, String>::new();
//! let caller = Identity::verify(|name| headers.get(name).cloned(), b"the shared identity key");
//! assert!(caller.is_none(), "no identity headers, no caller");
//! ```
//!
//! The same code runs on the server (`portico-signing`), so what this SDK signs is what
//! Portico checks, byte for byte.

pub mod registry;

pub use portico_signing::{header::Scheme, identity::Identity, params::canonical, SignMethod};
use portico_signing::{header, params, Signer, Verifier};

/// An app's key pair (sandbox or production).
#[derive(Clone)]
pub struct Credentials {
    pub app_key: String,
    app_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("app_key", &self.app_key).field("app_secret", &"***").finish()
    }
}

impl Credentials {
    pub fn new(app_key: impl Into<String>, app_secret: impl Into<String>) -> Credentials {
        Credentials { app_key: app_key.into(), app_secret: app_secret.into() }
    }

    /// Returns `params` with `app_key`, `timestamp`, `sign_method`, `nonce` (if given; it is
    /// required on every call but GET) and `sign` added. `method` must not be `rsa2` (use
    /// [`sign_params_rsa2`]).
    pub fn sign_params(&self, method: SignMethod, business: &[(&str, &str)], timestamp: i64, nonce: Option<&str>) -> Vec<(String, String)> {
        let ts = timestamp.to_string();
        let mut p: Vec<(&str, &str)> = business.to_vec();
        p.extend([("app_key", self.app_key.as_str()), ("timestamp", ts.as_str()), ("sign_method", method.as_str())]);
        if let Some(n) = nonce {
            p.push(("nonce", n));
        }
        let sign = params::sign(method, &p, Signer::Secret(&self.app_secret)).expect("secret-keyed methods cannot fail");
        finish(p, sign)
    }

    /// The header-style `Authorization` value for a call with a body.
    pub fn authorization(&self, http_method: &str, path_and_query: &str, body: &[u8], timestamp: i64, nonce: &str) -> String {
        header::sign(header::Scheme::HmacSha256, &self.app_key, http_method, path_and_query, &timestamp.to_string(), nonce, body, Signer::Secret(&self.app_secret))
            .expect("HMAC signing cannot fail")
    }

    /// Checks a parameter-style signature made with this app's secret (for example on a
    /// response or callback Portico signed).
    pub fn verify_params(&self, method: SignMethod, params: &[(&str, &str)], sign: &str) -> bool {
        params::verify(method, params, sign, Verifier::Secret(&self.app_secret)).is_ok()
    }
}

/// Signs with the app's RSA private key (`sign_method=rsa2`).
pub fn sign_params_rsa2(app_key: &str, key: &rsa_key::RsaPrivateKey, business: &[(&str, &str)], timestamp: i64, nonce: Option<&str>) -> Vec<(String, String)> {
    let ts = timestamp.to_string();
    let mut p: Vec<(&str, &str)> = business.to_vec();
    p.extend([("app_key", app_key), ("timestamp", ts.as_str()), ("sign_method", "rsa2")]);
    if let Some(n) = nonce {
        p.push(("nonce", n));
    }
    let sign = params::sign(SignMethod::Rsa2, &p, Signer::Rsa(key)).expect("RSA signing with a valid key");
    finish(p, sign)
}

/// Re-exported so that callers name the same RSA key type as the signer.
pub mod rsa_key {
    pub use portico_signing::RsaPrivateKey;
}

/// A random nonce (128 bits, hex).
pub fn nonce() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn finish(p: Vec<(&str, &str)>, sign: String) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = p.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    out.push(("sign".to_string(), sign));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_what_the_server_checks() {
        let c = Credentials::new("ak_1", "s");
        let p = c.sign_params(SignMethod::HmacSha256, &[("method", "order.get")], 1_700_000_000, Some("n"));
        let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let sign = &p.iter().find(|(k, _)| k == "sign").unwrap().1;
        assert!(c.verify_params(SignMethod::HmacSha256, &refs, sign));
        assert_eq!(canonical(&refs), "app_key=ak_1&method=order.get&nonce=n&sign_method=hmac-sha256&timestamp=1700000000");
        assert_eq!(nonce().len(), 32);
        assert!(!format!("{c:?}").contains("\"s\""));
    }
}

//! Verification of signed calls (`shared/spec/signing.md`): parameter style and header
//! style, the timestamp window, the nonce cache, and refusals with their own codes. The
//! gateway calls this for every signed request; it looks credentials up through a
//! closure (its in-memory snapshot), so verification never touches the database.

use std::time::Duration;

use portico_core::{http::ApiError, Code};
use portico_signing::{header, params, timestamp, AppSecret, SignError, SignMethod, Verifier};
use rsa::RsaPublicKey;
use serde_json::json;

use crate::replay::NonceStore;

/// What the verifier needs to know about the app behind an `app_key`, borrowed from
/// wherever the caller keeps apps (the gateway's snapshot): nothing is copied per call.
pub struct AppKeys<'k> {
    /// The current secret first, then a rotated one still in its grace period.
    pub secrets: &'k [AppSecret],
    pub rsa_public_key: Option<&'k RsaPublicKey>,
    /// Sandbox credentials get the canonical string back on a bad signature.
    pub sandbox: bool,
    /// False when the app is disabled or its merchant is not active.
    pub usable: bool,
}

/// A verified call: its caller is the app the lookup found (the lookup can keep what it
/// found; the verifier copies nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub timestamp: i64,
}

/// Why a signed call was refused. Each has its own business code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    MissingParameter(&'static str),
    UnknownAppKey,
    AppDisabled,
    /// `canonical` is the string the server signed, for sandbox credentials only.
    BadSignature { canonical: Option<String>, reason: String },
    StaleTimestamp { server_time: i64 },
    ReplayedNonce,
    UnsupportedSignMethod(String),
    MalformedAuthorization { field: &'static str, reason: String },
    Unavailable(String),
}

impl Rejection {
    pub fn code(&self) -> Code {
        match self {
            Rejection::MissingParameter(_) => Code::MissingParameter,
            Rejection::UnknownAppKey => Code::UnknownAppKey,
            Rejection::AppDisabled => Code::AppDisabled,
            Rejection::BadSignature { .. } => Code::BadSignature,
            Rejection::StaleTimestamp { .. } => Code::StaleTimestamp,
            Rejection::ReplayedNonce => Code::ReplayedNonce,
            Rejection::UnsupportedSignMethod(_) => Code::UnsupportedSignMethod,
            Rejection::MalformedAuthorization { .. } => Code::MalformedAuthorization,
            Rejection::Unavailable(_) => Code::Unavailable,
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> ApiError {
        let code = r.code();
        let (msg, data) = match r {
            Rejection::MissingParameter(p) => (format!("missing parameter {p}"), json!({ "field": p })),
            Rejection::UnknownAppKey => ("unknown app_key".to_string(), json!(null)),
            Rejection::AppDisabled => ("the app is disabled or its merchant is not active".to_string(), json!(null)),
            Rejection::BadSignature { canonical: Some(c), reason } => (format!("bad signature: {reason}"), json!({ "canonical": c })),
            Rejection::BadSignature { canonical: None, reason } => (format!("bad signature: {reason}"), json!(null)),
            Rejection::StaleTimestamp { server_time } => {
                ("timestamp is outside the allowed window".to_string(), json!({ "server_time": server_time }))
            }
            Rejection::ReplayedNonce => ("this nonce was already used".to_string(), json!(null)),
            Rejection::UnsupportedSignMethod(m) => (
                format!("unsupported sign_method {m:?}"),
                json!({ "supported": SignMethod::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>() }),
            ),
            Rejection::MalformedAuthorization { field, reason } => (reason, json!({ "field": field })),
            Rejection::Unavailable(cause) => {
                tracing::warn!(%cause, "signature verification could not reach the nonce store");
                ("the service is temporarily unavailable".to_string(), json!(null))
            }
        };
        let mut e = ApiError::new(code, msg);
        e.data = data;
        e
    }
}

/// Freshness window and nonce cache: the state of signature verification.
pub struct RequestVerifier {
    window: Duration,
    nonces: NonceStore,
}

impl RequestVerifier {
    pub fn new(window: Duration, nonces: NonceStore) -> RequestVerifier {
        RequestVerifier { window, nonces }
    }

    /// Verifies a parameter-style call. `params` are the decoded query and form
    /// parameters (any pairs of texts, as the caller parsed them); `is_get` makes the
    /// nonce optional.
    pub async fn verify_params<'k, K: AsRef<str>, V: AsRef<str>>(
        &self,
        is_get: bool,
        params: &[(K, V)],
        lookup: impl FnOnce(&str) -> Option<AppKeys<'k>>,
        now_secs: i64,
    ) -> Result<Verified, Rejection> {
        let get = |name: &'static str| params.iter().find(|(k, _)| k.as_ref() == name).map(|(_, v)| v.as_ref()).filter(|v| !v.is_empty());
        let app_key = get("app_key").ok_or(Rejection::MissingParameter("app_key"))?;
        let method_text = get("sign_method").ok_or(Rejection::MissingParameter("sign_method"))?;
        let method = SignMethod::parse(method_text).ok_or_else(|| Rejection::UnsupportedSignMethod(method_text.to_string()))?;
        let sign = get("sign").ok_or(Rejection::MissingParameter("sign"))?;
        let ts_text = get("timestamp").ok_or(Rejection::MissingParameter("timestamp"))?;
        let nonce = get("nonce");
        if nonce.is_none() && !is_get {
            return Err(Rejection::MissingParameter("nonce"));
        }
        let keys = lookup(app_key).ok_or(Rejection::UnknownAppKey)?;
        if !keys.usable {
            return Err(Rejection::AppDisabled);
        }
        let ts = self.fresh(ts_text, true, now_secs)?;
        let string = params::string_to_sign(method, params);
        let result = if method == SignMethod::Rsa2 {
            let public = keys.rsa_public_key.ok_or_else(|| Rejection::UnsupportedSignMethod("rsa2 (the app has no RSA public key)".into()))?;
            params::verify_string(method, &string, sign, Verifier::Rsa(public))
        } else {
            first_ok(keys.secrets, |s| params::verify_string(method, &string, sign, Verifier::Keyed(s)))
        };
        if let Err(e) = result {
            return Err(Rejection::BadSignature { canonical: keys.sandbox.then_some(string), reason: e.to_string() });
        }
        if let Some(n) = nonce {
            self.remember(app_key, n).await?;
        }
        Ok(Verified { timestamp: ts })
    }

    /// Verifies a header-style call (`Authorization: PORTICO-HMAC-SHA256 …`).
    pub async fn verify_header<'k>(
        &self,
        authorization: &str,
        http_method: &str,
        path_and_query: &str,
        body: &[u8],
        lookup: impl FnOnce(&str) -> Option<AppKeys<'k>>,
        now_secs: i64,
    ) -> Result<Verified, Rejection> {
        let auth = header::parse(authorization).map_err(|e| Rejection::MalformedAuthorization { field: e.field, reason: e.to_string() })?;
        let keys = lookup(&auth.app_key).ok_or(Rejection::UnknownAppKey)?;
        if !keys.usable {
            return Err(Rejection::AppDisabled);
        }
        let ts = self.fresh(&auth.timestamp, false, now_secs)?;
        let result = match auth.scheme {
            header::Scheme::Rsa2 => {
                let public = keys.rsa_public_key.ok_or_else(|| Rejection::UnsupportedSignMethod("PORTICO-RSA2 (the app has no RSA public key)".into()))?;
                header::verify(&auth, http_method, path_and_query, body, Verifier::Rsa(public))
            }
            header::Scheme::HmacSha256 => first_ok(keys.secrets, |s| header::verify(&auth, http_method, path_and_query, body, Verifier::Keyed(s))),
        };
        if let Err(e) = result {
            let message = keys.sandbox.then(|| String::from_utf8_lossy(&header::message(http_method, path_and_query, &auth.timestamp, &auth.nonce, body)).into_owned());
            return Err(Rejection::BadSignature { canonical: message, reason: e.to_string() });
        }
        self.remember(&auth.app_key, &auth.nonce).await?;
        Ok(Verified { timestamp: ts })
    }

    fn fresh(&self, text: &str, allow_top: bool, now_secs: i64) -> Result<i64, Rejection> {
        let ts = timestamp::parse(text, allow_top).ok_or(Rejection::StaleTimestamp { server_time: now_secs })?;
        if (ts - now_secs).unsigned_abs() > self.window.as_secs() {
            return Err(Rejection::StaleTimestamp { server_time: now_secs });
        }
        Ok(ts)
    }

    async fn remember(&self, app_key: &str, nonce: &str) -> Result<(), Rejection> {
        if nonce.len() > 128 {
            return Err(Rejection::MalformedAuthorization { field: "nonce", reason: "nonce is longer than 128 characters".into() });
        }
        // Twice the window: a timestamp may be up to one window old or ahead.
        match self.nonces.first_use(app_key, nonce, self.window * 2).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Rejection::ReplayedNonce),
            Err(e) => Err(Rejection::Unavailable(e.to_string())),
        }
    }
}

fn first_ok(secrets: &[AppSecret], check: impl Fn(&AppSecret) -> Result<(), SignError>) -> Result<(), SignError> {
    let mut last = SignError::Mismatch;
    for s in secrets {
        match check(s) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_signing::Signer;

    const NOW: i64 = 1_700_000_000;

    fn verifier() -> RequestVerifier {
        RequestVerifier::new(Duration::from_secs(300), NonceStore::memory(Duration::from_secs(600)))
    }

    static SECRETS: std::sync::LazyLock<[AppSecret; 2]> = std::sync::LazyLock::new(|| [AppSecret::new("new".into()), AppSecret::new("old".into())]);

    fn keys(sandbox: bool) -> impl FnOnce(&str) -> Option<AppKeys<'static>> {
        move |k| (k == "ak_1").then(|| AppKeys { secrets: &SECRETS[..], rsa_public_key: None, sandbox, usable: true })
    }

    fn signed(method: SignMethod, secret: &str, extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
        let mut p: Vec<(&str, &str)> = vec![("app_key", "ak_1"), ("method", "order.get"), ("timestamp", "1700000000"), ("sign_method", method.as_str())];
        p.extend_from_slice(extra);
        let sig = params::sign(method, &p, Signer::Secret(secret)).unwrap();
        let mut out: Vec<(String, String)> = p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        out.push(("sign".into(), sig));
        out
    }

    fn refs(p: &[(String, String)]) -> Vec<(&str, &str)> {
        p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[tokio::test]
    async fn params_accept_current_and_grace_secrets_and_refuse_with_codes() {
        let v = verifier();
        for m in [SignMethod::Md5, SignMethod::HmacSha256, SignMethod::TopMd5, SignMethod::TopHmac, SignMethod::TopHmacSha256] {
            for secret in ["new", "old"] {
                let p = signed(m, secret, &[]);
                assert!(v.verify_params(true, &refs(&p), keys(false), NOW).await.is_ok(), "{m:?} with {secret}");
            }
        }
        let p = signed(SignMethod::HmacSha256, "wrong", &[]);
        let r = v.verify_params(true, &refs(&p), keys(false), NOW).await.unwrap_err();
        assert!(matches!(r, Rejection::BadSignature { canonical: None, .. }), "production never echoes: {r:?}");
        let r = v.verify_params(true, &refs(&p), keys(true), NOW).await.unwrap_err();
        let Rejection::BadSignature { canonical: Some(c), .. } = r else { panic!("sandbox echoes") };
        assert_eq!(c, "app_key=ak_1&method=order.get&sign_method=hmac-sha256&timestamp=1700000000");
        assert!(!c.contains("wrong") && !c.contains("new"));

        let p = signed(SignMethod::HmacSha256, "new", &[]);
        assert_eq!(v.verify_params(true, &refs(&p), keys(false), NOW + 301).await.unwrap_err().code(), Code::StaleTimestamp);
        assert_eq!(v.verify_params(true, &refs(&p), |_| None, NOW).await.unwrap_err(), Rejection::UnknownAppKey);
        assert_eq!(
            v.verify_params(true, &refs(&p), |_| Some(AppKeys { secrets: &SECRETS[..1], rsa_public_key: None, sandbox: false, usable: false }), NOW).await.unwrap_err(),
            Rejection::AppDisabled
        );
        // Non-GET calls need a nonce, and a nonce works once.
        assert_eq!(v.verify_params(false, &refs(&p), keys(false), NOW).await.unwrap_err(), Rejection::MissingParameter("nonce"));
        let p = signed(SignMethod::HmacSha256, "new", &[("nonce", "n-1")]);
        assert!(v.verify_params(false, &refs(&p), keys(false), NOW).await.is_ok());
        assert_eq!(v.verify_params(false, &refs(&p), keys(false), NOW).await.unwrap_err(), Rejection::ReplayedNonce);

        let mut p = signed(SignMethod::HmacSha256, "new", &[]);
        p.retain(|(k, _)| k != "timestamp");
        assert_eq!(v.verify_params(true, &refs(&p), keys(false), NOW).await.unwrap_err(), Rejection::MissingParameter("timestamp"));
        let mut p = signed(SignMethod::HmacSha256, "new", &[]);
        for (k, val) in p.iter_mut() {
            if k == "sign_method" {
                *val = "sha1".into();
            }
        }
        assert_eq!(v.verify_params(true, &refs(&p), keys(false), NOW).await.unwrap_err().code(), Code::UnsupportedSignMethod);
    }

    #[tokio::test]
    async fn header_style() {
        let v = verifier();
        let h = header::sign(header::Scheme::HmacSha256, "ak_1", "POST", "/api/orders", "1700000000", "n-1", b"{}", Signer::Secret("old")).unwrap();
        assert!(v.verify_header(&h, "POST", "/api/orders", b"{}", keys(false), NOW).await.is_ok());
        assert_eq!(v.verify_header(&h, "POST", "/api/orders", b"{}", keys(false), NOW).await.unwrap_err(), Rejection::ReplayedNonce);
        let h = header::sign(header::Scheme::HmacSha256, "ak_1", "POST", "/api/orders", "1700000000", "n-2", b"{}", Signer::Secret("old")).unwrap();
        let r = v.verify_header(&h, "POST", "/api/orders", b"{\"x\":1}", keys(true), NOW).await.unwrap_err();
        let Rejection::BadSignature { canonical: Some(m), .. } = r else { panic!() };
        assert_eq!(m, "POST\n/api/orders\n1700000000\nn-2\n{\"x\":1}\n");
        let r = v.verify_header("PORTICO-HMAC-SHA256 app_key=\"ak_1\"", "GET", "/", b"", keys(false), NOW).await.unwrap_err();
        assert!(matches!(r, Rejection::MalformedAuthorization { field: "timestamp", .. }), "{r:?}");
        // The refusals become envelopes with their codes.
        let e = ApiError::from(r);
        assert_eq!(e.code, Code::MalformedAuthorization);
        assert_eq!(e.data["field"], "timestamp");
    }
}

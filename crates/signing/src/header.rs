//! Header-style signatures, for REST calls with a JSON body (the WeChat Pay v3 pattern):
//!
//! ```text
//! Authorization: PORTICO-HMAC-SHA256 app_key="…",timestamp="1700000000",nonce="…",signature="…"
//! ```
//!
//! The signed message is `METHOD\nPATH[?QUERY]\nTIMESTAMP\nNONCE\nBODY\n` (every line
//! ends in `\n`, the last one too). `signature` is base64: HMAC-SHA256 keyed with the app
//! secret, or SHA256withRSA with the app's key pair for `PORTICO-RSA2`.

use base64::Engine;

use crate::{b64, eq_bytes, hmac_sha256, rsa_sign, rsa_verify, SignError, Signer, Verifier};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    HmacSha256,
    Rsa2,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::HmacSha256 => "PORTICO-HMAC-SHA256",
            Scheme::Rsa2 => "PORTICO-RSA2",
        }
    }
}

/// A parsed `Authorization` header of the header style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub scheme: Scheme,
    pub app_key: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

/// Why an `Authorization` header could not be read; `field` names the missing or bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Authorization header: {reason}")]
pub struct HeaderError {
    pub field: &'static str,
    pub reason: String,
}

fn header_error(field: &'static str, reason: impl Into<String>) -> HeaderError {
    HeaderError { field, reason: reason.into() }
}

/// Whether a header value is of the header style at all (to choose the verifier).
pub fn is_header_style(value: &str) -> bool {
    value.starts_with("PORTICO-HMAC-SHA256 ") || value.starts_with("PORTICO-RSA2 ")
}

/// Parses `SCHEME k="v",k="v",…`. Every one of `app_key`, `timestamp`, `nonce` and
/// `signature` must be present exactly once.
pub fn parse(value: &str) -> Result<Authorization, HeaderError> {
    let (scheme_text, rest) = value.trim().split_once(' ').ok_or_else(|| header_error("scheme", "expected `PORTICO-HMAC-SHA256 app_key=\"…\",…`"))?;
    let scheme = match scheme_text {
        "PORTICO-HMAC-SHA256" => Scheme::HmacSha256,
        "PORTICO-RSA2" => Scheme::Rsa2,
        other => return Err(header_error("scheme", format!("unknown scheme {other:?}"))),
    };
    let (mut app_key, mut timestamp, mut nonce, mut signature) = (None, None, None, None);
    for part in split_params(rest) {
        let (k, v) = part.split_once('=').ok_or_else(|| header_error("authorization", format!("expected name=\"value\", got {part:?}")))?;
        let k = k.trim();
        let v = v.trim();
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or_else(|| header_error("authorization", format!("the value of {k} must be quoted")))?;
        let slot = match k {
            "app_key" => &mut app_key,
            "timestamp" => &mut timestamp,
            "nonce" => &mut nonce,
            "signature" => &mut signature,
            _ => continue,
        };
        if slot.replace(v.to_string()).is_some() {
            return Err(header_error("authorization", format!("{k} is given twice")));
        }
    }
    let need = |v: Option<String>, f: &'static str| v.filter(|s| !s.is_empty()).ok_or_else(|| header_error(f, format!("{f} is missing")));
    Ok(Authorization {
        scheme,
        app_key: need(app_key, "app_key")?,
        timestamp: need(timestamp, "timestamp")?,
        nonce: need(nonce, "nonce")?,
        signature: need(signature, "signature")?,
    })
}

/// Splits on commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

/// The signed message: `METHOD\nPATH[?QUERY]\nTIMESTAMP\nNONCE\nBODY\n`.
pub fn message(method: &str, path_and_query: &str, timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(method.len() + path_and_query.len() + timestamp.len() + nonce.len() + body.len() + 5);
    for part in [method.as_bytes(), path_and_query.as_bytes(), timestamp.as_bytes(), nonce.as_bytes(), body] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m
}

/// Signs a request and returns the whole `Authorization` header value.
pub fn sign(
    scheme: Scheme,
    app_key: &str,
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
    key: Signer<'_>,
) -> Result<String, SignError> {
    let msg = message(method, path_and_query, timestamp, nonce, body);
    let raw = match (scheme, key) {
        (Scheme::HmacSha256, Signer::Secret(s)) => hmac_sha256(s.as_bytes(), &msg).to_vec(),
        (Scheme::Rsa2, Signer::Rsa(k)) => rsa_sign(k, &msg)?,
        (Scheme::HmacSha256, _) => return Err(SignError::WrongKey("PORTICO-HMAC-SHA256", "the app secret")),
        (Scheme::Rsa2, _) => return Err(SignError::WrongKey("PORTICO-RSA2", "the app's RSA private key")),
    };
    Ok(format!(
        "{} app_key=\"{app_key}\",timestamp=\"{timestamp}\",nonce=\"{nonce}\",signature=\"{}\"",
        scheme.as_str(),
        b64().encode(raw)
    ))
}

/// Checks a parsed header against the request it came with.
pub fn verify(auth: &Authorization, method: &str, path_and_query: &str, body: &[u8], key: Verifier<'_>) -> Result<(), SignError> {
    let msg = message(method, path_and_query, &auth.timestamp, &auth.nonce, body);
    let presented = b64().decode(auth.signature.as_bytes()).map_err(|_| SignError::Malformed("not base64"))?;
    match (auth.scheme, key) {
        (Scheme::HmacSha256, Verifier::Secret(s)) => eq_bytes(&presented, &hmac_sha256(s.as_bytes(), &msg)),
        (Scheme::HmacSha256, Verifier::Keyed(s)) => eq_bytes(&presented, &s.sha256().mac(&msg)),
        (Scheme::Rsa2, Verifier::Rsa(k)) => rsa_verify(k, &msg, &presented),
        (Scheme::HmacSha256, _) => Err(SignError::WrongKey("PORTICO-HMAC-SHA256", "the app secret")),
        (Scheme::Rsa2, _) => Err(SignError::WrongKey("PORTICO-RSA2", "the app's RSA public key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn message_layout() {
        assert_eq!(message("POST", "/api/order/create?x=1", "1700000000", "n1", b"{}"), b"POST\n/api/order/create?x=1\n1700000000\nn1\n{}\n".to_vec());
    }

    #[test]
    fn sign_parse_verify() {
        let h = sign(Scheme::HmacSha256, "ak_1", "POST", "/api/a", "1700000000", "abc", b"{\"a\":1}", Signer::Secret("s")).unwrap();
        assert!(is_header_style(&h));
        let a = parse(&h).unwrap();
        assert_eq!((a.app_key.as_str(), a.timestamp.as_str(), a.nonce.as_str()), ("ak_1", "1700000000", "abc"));
        verify(&a, "POST", "/api/a", b"{\"a\":1}", Verifier::Secret("s")).unwrap();
        assert_eq!(verify(&a, "POST", "/api/a", b"{\"a\":2}", Verifier::Secret("s")), Err(SignError::Mismatch));
        assert_eq!(verify(&a, "PUT", "/api/a", b"{\"a\":1}", Verifier::Secret("s")), Err(SignError::Mismatch));
        assert_eq!(verify(&a, "POST", "/api/a", b"{\"a\":1}", Verifier::Secret("t")), Err(SignError::Mismatch));
        // The secret keyed ahead, as the gateway holds it, answers the same.
        verify(&a, "POST", "/api/a", b"{\"a\":1}", Verifier::Keyed(&crate::AppSecret::new("s".into()))).unwrap();
        assert_eq!(verify(&a, "POST", "/api/a", b"{\"a\":2}", Verifier::Keyed(&crate::AppSecret::new("s".into()))), Err(SignError::Mismatch));
        assert_eq!(verify(&a, "POST", "/api/a", b"{\"a\":1}", Verifier::Keyed(&crate::AppSecret::new("t".into()))), Err(SignError::Mismatch));

        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let h = sign(Scheme::Rsa2, "ak_1", "GET", "/api/b?q=1", "1700000000", "n", b"", Signer::Rsa(&key)).unwrap();
        let a = parse(&h).unwrap();
        assert_eq!(a.scheme, Scheme::Rsa2);
        verify(&a, "GET", "/api/b?q=1", b"", Verifier::Rsa(&rsa::RsaPublicKey::from(&key))).unwrap();
    }

    #[test]
    fn parse_errors_name_the_part() {
        assert_eq!(parse("Bearer x").unwrap_err().field, "scheme");
        assert_eq!(parse("PORTICO-HMAC-SHA256 app_key=\"a\",timestamp=\"1\",signature=\"s\"").unwrap_err().field, "nonce");
        assert_eq!(parse("PORTICO-HMAC-SHA256 app_key=a").unwrap_err().field, "authorization");
        assert_eq!(parse("PORTICO-HMAC-SHA256 app_key=\"a\",app_key=\"b\"").unwrap_err().field, "authorization");
        // Commas inside quotes do not split.
        let a = parse("PORTICO-HMAC-SHA256 app_key=\"a\", timestamp=\"1\", nonce=\"x,y\", signature=\"s\"").unwrap();
        assert_eq!(a.nonce, "x,y");
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
            let _ = parse(&format!("PORTICO-HMAC-SHA256 {s}"));
        }
    }
}

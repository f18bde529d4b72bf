//! Parameter-style signatures: over the request's query and form parameters.
//!
//! Canonical string: every parameter except `sign`; parameters with an empty value and
//! parameters given more than once are dropped; sorted by name in byte order; joined as
//! `name=value` with `&`, values as decoded (not URL-encoded), UTF-8. Seed 001's example:
//! `foo=1, bar=2, foo_bar=3, foobar=4` → `bar=2&foo=1&foo_bar=3&foobar=4`.
//!
//! TOP's string: the same selection and order, concatenated as `namevalue` with no
//! separators.

use base64::Engine;
use md5::{Digest, Md5};


use crate::{b64, eq_hex, hmac_md5, hmac_sha256, rsa_sign, rsa_verify, SignError, Signer, Verifier};

/// The `sign_method` parameter's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignMethod {
    /// Hex MD5 of `canonical + "&secret=" + secret` (seed 001; kept for compatibility).
    Md5,
    /// Hex HMAC-SHA256 of the canonical string, keyed with the secret. Recommended.
    HmacSha256,
    /// Base64 SHA256withRSA (PKCS#1 v1.5) of the canonical string (Alipay).
    Rsa2,
    /// Uppercase hex MD5 of `secret + top_string + secret` (Taobao).
    TopMd5,
    /// Uppercase hex HMAC-MD5 of the TOP string (Taobao).
    TopHmac,
    /// Uppercase hex HMAC-SHA256 of the TOP string (Taobao).
    TopHmacSha256,
}

impl SignMethod {
    pub const ALL: [SignMethod; 6] =
        [SignMethod::Md5, SignMethod::HmacSha256, SignMethod::Rsa2, SignMethod::TopMd5, SignMethod::TopHmac, SignMethod::TopHmacSha256];

    /// The method a `sign_method` value names, in any letter case (compared in place:
    /// this runs on every signed call).
    pub fn parse(s: &str) -> Option<SignMethod> {
        const NAMES: [(&str, SignMethod); 7] = [
            ("md5", SignMethod::Md5),
            ("hmac-sha256", SignMethod::HmacSha256),
            ("hmac_sha256", SignMethod::HmacSha256),
            ("rsa2", SignMethod::Rsa2),
            ("top-md5", SignMethod::TopMd5),
            ("top-hmac", SignMethod::TopHmac),
            ("top-hmac-sha256", SignMethod::TopHmacSha256),
        ];
        NAMES.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)).map(|(_, m)| *m)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SignMethod::Md5 => "md5",
            SignMethod::HmacSha256 => "hmac-sha256",
            SignMethod::Rsa2 => "rsa2",
            SignMethod::TopMd5 => "top-md5",
            SignMethod::TopHmac => "top-hmac",
            SignMethod::TopHmacSha256 => "top-hmac-sha256",
        }
    }

    fn is_top(self) -> bool {
        matches!(self, SignMethod::TopMd5 | SignMethod::TopHmac | SignMethod::TopHmacSha256)
    }
}

/// The parameters that take part in signing, sorted: not `sign`, not empty, not repeated.
/// Parameters are any pairs of texts: `(&str, &str)`, or the gateway's borrowed-or-decoded
/// `Cow`s as parsed, without a copy.
fn selected<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Vec<(&str, &str)> {
    let mut v: Vec<(&str, &str)> = Vec::with_capacity(params.len());
    v.extend(params.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).filter(|(k, _)| *k != "sign"));
    v.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    // Kept pairs move to the front of the same vector.
    let mut kept = 0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i + 1;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        // A name given more than once is an array: dropped, as the spec says.
        if j == i + 1 && !v[i].1.is_empty() {
            v[kept] = v[i];
            kept += 1;
        }
        i = j;
    }
    v.truncate(kept);
    v
}

/// The canonical string: `a=1&b=2`.
pub fn canonical<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let sel = selected(params);
    let mut s = String::with_capacity(sel.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in sel.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

/// TOP's string: `a1b2`.
pub fn top_string<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let sel = selected(params);
    let mut s = String::with_capacity(sel.iter().map(|(k, v)| k.len() + v.len()).sum());
    for (k, v) in sel {
        s.push_str(k);
        s.push_str(v);
    }
    s
}

/// The string that `method` signs: the canonical string, or TOP's.
pub fn string_to_sign<K: AsRef<str>, V: AsRef<str>>(method: SignMethod, params: &[(K, V)]) -> String {
    if method.is_top() {
        top_string(params)
    } else {
        canonical(params)
    }
}

fn secret_of(method: SignMethod, key: Signer<'_>) -> Result<&str, SignError> {
    match key {
        Signer::Secret(s) => Ok(s),
        Signer::Rsa(_) => Err(SignError::WrongKey(method.as_str(), "the app secret")),
    }
}

/// Signs the parameters (the `sign` parameter, if present, is ignored).
pub fn sign<K: AsRef<str>, V: AsRef<str>>(method: SignMethod, params: &[(K, V)], key: Signer<'_>) -> Result<String, SignError> {
    sign_string(method, &string_to_sign(method, params), key)
}

/// Signs an already built string to sign.
pub fn sign_string(method: SignMethod, string: &str, key: Signer<'_>) -> Result<String, SignError> {
    Ok(match method {
        SignMethod::Md5 => {
            let secret = secret_of(method, key)?;
            let mut h = Md5::new();
            h.update(string.as_bytes());
            h.update(b"&secret=");
            h.update(secret.as_bytes());
            hex::encode(h.finalize())
        }
        SignMethod::HmacSha256 => hex::encode(hmac_sha256(secret_of(method, key)?.as_bytes(), string.as_bytes())),
        SignMethod::Rsa2 => match key {
            Signer::Rsa(k) => b64().encode(rsa_sign(k, string.as_bytes())?),
            Signer::Secret(_) => return Err(SignError::WrongKey("rsa2", "the app's RSA private key")),
        },
        SignMethod::TopMd5 => {
            let secret = secret_of(method, key)?;
            let mut h = Md5::new();
            h.update(secret.as_bytes());
            h.update(string.as_bytes());
            h.update(secret.as_bytes());
            hex::encode_upper(h.finalize())
        }
        SignMethod::TopHmac => hex::encode_upper(hmac_md5(secret_of(method, key)?.as_bytes(), string.as_bytes())),
        SignMethod::TopHmacSha256 => hex::encode_upper(hmac_sha256(secret_of(method, key)?.as_bytes(), string.as_bytes())),
    })
}

/// Checks `presented` against the string to sign. Hex signatures compare
/// case-insensitively; every comparison is constant-time.
pub fn verify_string(method: SignMethod, string: &str, presented: &str, key: Verifier<'_>) -> Result<(), SignError> {
    match (method, key) {
        (SignMethod::HmacSha256 | SignMethod::TopHmacSha256, Verifier::Keyed(secret)) => eq_hex(presented, &secret.sha256().mac(string.as_bytes())),
        (_, Verifier::Keyed(secret)) => verify_string(method, string, presented, Verifier::Secret(secret.as_str())),
        (SignMethod::Rsa2, Verifier::Rsa(public)) => {
            let sig = b64().decode(presented.trim()).map_err(|_| SignError::Malformed("not base64"))?;
            rsa_verify(public, string.as_bytes(), &sig)
        }
        (SignMethod::Rsa2, Verifier::Secret(_)) => Err(SignError::WrongKey("rsa2", "the app's RSA public key")),
        (_, Verifier::Rsa(_)) => Err(SignError::WrongKey(method.as_str(), "the app secret")),
        (SignMethod::Md5 | SignMethod::TopMd5, Verifier::Secret(secret)) => {
            let mut h = Md5::new();
            if method == SignMethod::Md5 {
                h.update(string.as_bytes());
                h.update(b"&secret=");
                h.update(secret.as_bytes());
            } else {
                h.update(secret.as_bytes());
                h.update(string.as_bytes());
                h.update(secret.as_bytes());
            }
            eq_hex(presented, &h.finalize())
        }
        (SignMethod::HmacSha256 | SignMethod::TopHmacSha256, Verifier::Secret(secret)) => {
            eq_hex(presented, &hmac_sha256(secret.as_bytes(), string.as_bytes()))
        }
        (SignMethod::TopHmac, Verifier::Secret(secret)) => eq_hex(presented, &hmac_md5(secret.as_bytes(), string.as_bytes())),
    }
}

/// Checks the `sign` of a parameter set.
pub fn verify<K: AsRef<str>, V: AsRef<str>>(method: SignMethod, params: &[(K, V)], presented: &str, key: Verifier<'_>) -> Result<(), SignError> {
    verify_string(method, &string_to_sign(method, params), presented, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_001_example() {
        assert_eq!(canonical(&[("foo", "1"), ("bar", "2"), ("foo_bar", "3"), ("foobar", "4")]), "bar=2&foo=1&foo_bar=3&foobar=4");
    }

    #[test]
    fn drops_sign_empty_and_repeated() {
        let p = [("b", "2"), ("sign", "XYZ"), ("a", "1"), ("empty", ""), ("arr", "1"), ("arr", "2"), ("z", "日本")];
        assert_eq!(canonical(&p), "a=1&b=2&z=日本");
        assert_eq!(top_string(&p), "a1b2z日本");
    }

    #[test]
    fn known_answers() {
        // Expected values computed independently with coreutils and openssl:
        //   printf '%s' "$CANONICAL&secret=secret" | md5sum
        //   printf '%s' "$CANONICAL" | openssl dgst -sha256 -hmac secret
        //   printf '%s' "secret${TOP}secret" | md5sum
        //   printf '%s' "$TOP" | openssl dgst -md5 -hmac secret
        //   printf '%s' "$TOP" | openssl dgst -sha256 -hmac secret
        let p = [("v", "1.0"), ("app_key", "ak_test_1"), ("sign_method", ""), ("method", "order.get"), ("timestamp", "1700000000")];
        assert_eq!(canonical(&p), "app_key=ak_test_1&method=order.get&timestamp=1700000000&v=1.0");
        assert_eq!(top_string(&p), "app_keyak_test_1methodorder.gettimestamp1700000000v1.0");
        let s = Signer::Secret("secret");
        assert_eq!(sign(SignMethod::Md5, &p, s).unwrap(), "487b79e7adaae4337f1fc766f257a07a");
        assert_eq!(sign(SignMethod::HmacSha256, &p, s).unwrap(), "829a54d5aa651334ccff4d6e4bd25e12bb471347e792d9ac24c6f72555d7744c");
        assert_eq!(sign(SignMethod::TopMd5, &p, s).unwrap(), "AAE236F101D7832F5509A8FA72E9CE6D");
        assert_eq!(sign(SignMethod::TopHmac, &p, s).unwrap(), "5255090CAFED22E89C742367B468CFCE");
        assert_eq!(sign(SignMethod::TopHmacSha256, &p, s).unwrap(), "9896379ABF43D3204547A090897B2CF422E18080812E4670E3E054983485DFF8");
    }

    #[test]
    fn every_method_round_trips_and_hex_is_case_insensitive() {
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let public = rsa::RsaPublicKey::from(&key);
        let p = [("app_key", "k"), ("timestamp", "1700000000"), ("biz_content", "{\"order_id\":\"1\"}")];
        for m in SignMethod::ALL {
            let (signer, verifier) = if m == SignMethod::Rsa2 {
                (Signer::Rsa(&key), Verifier::Rsa(&public))
            } else {
                (Signer::Secret("s3cr3t"), Verifier::Secret("s3cr3t"))
            };
            let sig = sign(m, &p, signer).unwrap();
            verify(m, &p, &sig, verifier).unwrap();
            if m != SignMethod::Rsa2 {
                verify(m, &p, &sig.to_lowercase(), verifier).unwrap();
                verify(m, &p, &sig.to_uppercase(), verifier).unwrap();
                assert_eq!(verify(m, &p, &sig, Verifier::Secret("other")), Err(SignError::Mismatch));
                assert!(matches!(verify(m, &p, "zz-not-hex", verifier), Err(SignError::Malformed(_))));
            }
            assert_eq!(SignMethod::parse(m.as_str()), Some(m));
        }
        assert!(matches!(sign(SignMethod::Rsa2, &p, Signer::Secret("x")), Err(SignError::WrongKey(..))));
        assert!(matches!(verify(SignMethod::HmacSha256, &p, "00", Verifier::Rsa(&public)), Err(SignError::WrongKey(..))));
        assert_eq!(SignMethod::parse("sha1"), None);
        assert_eq!(SignMethod::parse("HMAC_SHA256"), Some(SignMethod::HmacSha256));
        assert_eq!(SignMethod::parse("Top-HMAC"), Some(SignMethod::TopHmac));
        assert_eq!(SignMethod::parse("md5 "), None);
    }

    fn params_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::btree_map("[a-z_]{1,8}", "[ -~]{1,12}", 1..8).prop_map(|m| m.into_iter().filter(|(k, _)| k != "sign").collect())
    }

    proptest! {
        #[test]
        fn order_never_matters(params in params_strategy(), seed in any::<u64>()) {
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut shuffled = p.clone();
            let n = shuffled.len();
            for i in 0..n {
                shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n);
            }
            prop_assert_eq!(canonical(&p), canonical(&shuffled));
            for m in [SignMethod::Md5, SignMethod::HmacSha256, SignMethod::TopMd5, SignMethod::TopHmac, SignMethod::TopHmacSha256] {
                let sig = sign(m, &p, Signer::Secret("k")).unwrap();
                prop_assert!(verify(m, &shuffled, &sig, Verifier::Secret("k")).is_ok());
            }
        }

        #[test]
        fn any_change_to_any_parameter_breaks_the_signature(params in params_strategy(), which in any::<usize>(), extra in "[ -~]{1,4}") {
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let i = which % p.len();
            let changed_value = format!("{}{}", p[i].1, extra);
            let mut q = p.clone();
            q[i].1 = &changed_value;
            for m in [SignMethod::Md5, SignMethod::HmacSha256, SignMethod::TopMd5, SignMethod::TopHmac, SignMethod::TopHmacSha256] {
                let sig = sign(m, &p, Signer::Secret("k")).unwrap();
                prop_assert_eq!(verify(m, &q, &sig, Verifier::Secret("k")), Err(SignError::Mismatch));
            }
            // Adding a parameter breaks it too.
            let mut r = p.clone();
            r.push(("zzzz_added", "1"));
            let sig = sign(SignMethod::HmacSha256, &p, Signer::Secret("k")).unwrap();
            prop_assert_eq!(verify(SignMethod::HmacSha256, &r, &sig, Verifier::Secret("k")), Err(SignError::Mismatch));
        }

        /// A secret keyed ahead (as the gateway's snapshot holds it) gives every method's
        /// answer the text gives: matches, mismatches, malformed signatures and the RSA
        /// method's refusal alike.
        #[test]
        fn a_keyed_secret_verifies_as_its_text_does(params in params_strategy(), secret in "[ -~]{0,80}", method in 0usize..6, tamper in any::<bool>()) {
            let m = SignMethod::ALL[method];
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut sig = if m == SignMethod::Rsa2 { "c2lnbg==".to_string() } else { sign(m, &p, Signer::Secret(&secret)).unwrap() };
            if tamper {
                sig.replace_range(..1, if sig.starts_with('0') { "1" } else { "0" });
            }
            let keyed = crate::AppSecret::new(secret.clone());
            prop_assert_eq!(verify(m, &p, &sig, Verifier::Keyed(&keyed)), verify(m, &p, &sig, Verifier::Secret(&secret)));
            if !tamper && m != SignMethod::Rsa2 {
                prop_assert_eq!(verify(m, &p, &sig, Verifier::Keyed(&keyed)), Ok(()));
            }
        }

        #[test]
        fn verify_never_panics(sig in "\\PC{0,100}", method in 0usize..6) {
            let m = SignMethod::ALL[method];
            if m != SignMethod::Rsa2 {
                let _ = verify(m, &[("a", "1")], &sig, Verifier::Secret("k"));
            }
        }
    }
}

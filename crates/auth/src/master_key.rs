//! The master key encrypts what must be read back: app secrets (for HMAC checks) and
//! sensitive business fields (licence numbers, phone numbers).
//!
//! Sealed values are text: `v1.` + base64(nonce ‖ ciphertext ‖ tag), AES-256-GCM with a
//! fresh 96-bit nonce each time. The associated data binds a value to where it is stored
//! (for example `app_secret:{credential_id}`), so a ciphertext copied into another row
//! does not decrypt.

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Nonce,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use rand::RngCore;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the master key must be 32 bytes as 64 hex digits or base64; got {0}")]
    BadFormat(String),
    #[error("a stored secret could not be decrypted (wrong master key, or the value was tampered with)")]
    Decrypt,
}

#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
    /// HMAC-SHA256 of the key material under a fixed label: the root for derived keys,
    /// so the raw key is not kept twice.
    derive_root: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// A new random key, returned with its hex form for storing.
    pub fn generate() -> (MasterKey, String) {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        (MasterKey::from_bytes(&bytes), hex::encode(bytes))
    }

    /// Parses a key written as 64 hex digits or as base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<MasterKey, KeyError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|e| KeyError::BadFormat(e.to_string()))?
        } else {
            STANDARD.decode(t).map_err(|_| KeyError::BadFormat("text that is neither hex nor base64".into()))?
        };
        if bytes.len() != 32 {
            return Err(KeyError::BadFormat(format!("{} bytes", bytes.len())));
        }
        Ok(MasterKey::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> MasterKey {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(bytes).expect("any key length");
        mac.update(b"portico derived keys v1");
        MasterKey { cipher: Aes256Gcm::new_from_slice(bytes).expect("32-byte key"), derive_root: mac.finalize().into_bytes().into() }
    }

    /// A key for another purpose (e.g. `gateway identity`), derived from the master key:
    /// the same on every instance that shares the master key.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.derive_root).expect("any key length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn seal(&self, plaintext: &str, aad: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!("v1.{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, KeyError> {
        let raw = sealed.strip_prefix("v1.").ok_or(KeyError::Decrypt)?;
        let bytes = STANDARD.decode(raw).map_err(|_| KeyError::Decrypt)?;
        if bytes.len() < 12 + 16 {
            return Err(KeyError::Decrypt);
        }
        let (nonce, ct) = bytes.split_at(12);
        let pt = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: aad.as_bytes() })
            .map_err(|_| KeyError::Decrypt)?;
        String::from_utf8(pt).map_err(|_| KeyError::Decrypt)
    }
}

/// Shows the last four characters of a sensitive value, the rest as `*`.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let keep = if chars.len() > 6 { 4 } else { chars.len().saturating_sub(2).min(2) };
    let hidden = chars.len() - keep;
    std::iter::repeat_n('*', hidden).chain(chars[hidden..].iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seal_open_and_bind_to_place() {
        let (key, hex_form) = MasterKey::generate();
        let sealed = key.seal("s3cret", "app_secret:cred_1");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("s3cret"));
        assert_eq!(key.open(&sealed, "app_secret:cred_1").unwrap(), "s3cret");
        assert!(key.open(&sealed, "app_secret:cred_2").is_err(), "aad binds the row");
        let same = MasterKey::parse(&hex_form).unwrap();
        assert_eq!(same.open(&sealed, "app_secret:cred_1").unwrap(), "s3cret");
        let (other, _) = MasterKey::generate();
        assert!(other.open(&sealed, "app_secret:cred_1").is_err());
        assert!(MasterKey::parse("abc").is_err());
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 32])).is_ok());
    }

    #[test]
    fn masks() {
        assert_eq!(mask("91310000MA1K4XXXXX"), "**************XXXX");
        assert_eq!(mask("13800138000"), "*******8000");
        assert_eq!(mask("123"), "**3");
        assert_eq!(mask(""), "");
    }

    proptest! {
        #[test]
        fn open_never_panics_on_garbage(s in "\\PC{0,200}") {
            let (key, _) = MasterKey::generate();
            let _ = key.open(&s, "x");
            let _ = key.open(&format!("v1.{s}"), "x");
        }
    }
}

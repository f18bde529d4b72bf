//! JWT access tokens (RFC 9068), when `oauth.access_token_format = "jwt"`: RS256, header
//! `typ: at+jwt`, signed with a key that rotates every `oauth.jwt_key_rotation_days` and
//! published with the keys still needed for unexpired tokens at
//! `/.well-known/jwks.json`. Resource servers can verify them offline; Portico still
//! stores their digest, so revocation and introspection work as for opaque tokens.

use std::{sync::RwLock, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use portico_auth::MasterKey;
use portico_core::{id::new_id, time::now_ms, Error};
use portico_store::{oauth, oauth::SigningKeyRecord, Store};
use rsa::{
    pkcs1v15::SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding},
    signature::{RandomizedSigner, SignatureEncoding},
    traits::PublicKeyParts,
    RsaPrivateKey,
};
use serde_json::{json, Value};
use sha2::Sha256;

pub struct JwtKeys {
    rotation: Duration,
    /// How long a retired key stays published: the longest access-token lifetime.
    publish_after_retirement: Duration,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    /// The key that signs, with its kid.
    active: Option<(String, SigningKey<Sha256>, i64)>,
    /// Every published public key as a JWK.
    jwks: Vec<Value>,
}

impl JwtKeys {
    pub fn new(rotation: Duration, publish_after_retirement: Duration) -> JwtKeys {
        JwtKeys { rotation, publish_after_retirement, state: RwLock::new(State::default()) }
    }

    /// Loads the keys, creating (and retiring older ones) when there is no active key or
    /// the active one is older than the rotation period. Safe to run on every instance:
    /// each then signs with the newest key in the database.
    pub async fn refresh(&self, store: &Store, master: &MasterKey) -> Result<(), Error> {
        let now = now_ms();
        let keys = {
            let mut conn = store.read().await?;
            oauth::signing_keys(&mut conn, now - self.publish_after_retirement.as_millis() as i64).await?
        };
        let newest_active = keys.iter().find(|k| k.retired_at.is_none());
        let due = newest_active.is_none_or(|k| now - k.created_at >= self.rotation.as_millis() as i64);
        let keys = if due {
            let private = tokio::task::spawn_blocking(|| RsaPrivateKey::new(&mut rand_core_os(), 2048))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(|e| Error::Internal(format!("RSA key generation: {e}")))?;
            let kid = new_id("kid");
            let pem = private.to_pkcs8_pem(LineEnding::LF).map_err(|e| Error::Internal(e.to_string()))?;
            let record = SigningKeyRecord {
                private_key_sealed: master.seal(&pem, &format!("oauth_signing_key:{kid}")),
                public_n: B64.encode(private.n().to_bytes_be()),
                public_e: B64.encode(private.e().to_bytes_be()),
                kid: kid.clone(),
                created_at: now,
                retired_at: None,
            };
            let mut tx = store.begin().await?;
            oauth::insert_signing_key(&mut tx, &record).await?;
            oauth::retire_signing_keys_except(&mut tx, &kid, now).await?;
            portico_store::commit(tx).await?;
            tracing::info!(%kid, "rotated the JWT signing key");
            let mut conn = store.read().await?;
            oauth::signing_keys(&mut conn, now - self.publish_after_retirement.as_millis() as i64).await?
        } else {
            keys
        };
        let mut state = State::default();
        for k in &keys {
            state.jwks.push(json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.kid, "n": k.public_n, "e": k.public_e }));
        }
        if let Some(k) = keys.iter().find(|k| k.retired_at.is_none()) {
            let pem = master.open(&k.private_key_sealed, &format!("oauth_signing_key:{}", k.kid)).map_err(|e| Error::Internal(e.to_string()))?;
            let private = RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| Error::Internal(e.to_string()))?;
            state.active = Some((k.kid.clone(), SigningKey::<Sha256>::new(private), k.created_at));
        }
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        Ok(())
    }

    /// Signs the claims as an `at+jwt`.
    pub fn sign(&self, claims: &Value) -> Result<String, Error> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let (kid, key, _) = state.active.as_ref().ok_or_else(|| Error::Unavailable("no JWT signing key loaded".into()))?;
        let header = json!({ "alg": "RS256", "typ": "at+jwt", "kid": kid });
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let signature = key.sign_with_rng(&mut rand_core_os(), signing_input.as_bytes()).to_vec();
        Ok(format!("{signing_input}.{}", B64.encode(signature)))
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": self.state.read().unwrap_or_else(|p| p.into_inner()).jwks })
    }
}

fn rand_core_os() -> rand::rngs::ThreadRng {
    rand::thread_rng()
}

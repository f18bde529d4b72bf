//! Issuing, validating, revoking and introspecting tokens.

use std::{sync::Arc, time::Duration};

use portico_auth::token;
use portico_core::{id::new_id, time::now_ms, Error};
use portico_store::{oauth, oauth::TokenRecord, Conn, Store};
use tokio::sync::{mpsc, oneshot};
use serde::Serialize;

use crate::{
    cache::{AppStatus, TokenInfo},
    clients::Client,
    OAuth,
};

pub const ACCESS_PREFIX: &str = "pat_";
pub const REFRESH_PREFIX: &str = "prt_";

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// Who a new token is for.
pub(crate) struct Grant<'a> {
    pub client: &'a Client,
    pub user_id: Option<&'a str>,
    pub scope: &'a str,
    pub family_id: String,
    pub code_id: Option<&'a str>,
    pub with_refresh: bool,
}

impl OAuth {
    /// Writes a new access token (and refresh token) in the caller's transaction.
    pub(crate) async fn issue(&self, conn: &mut Conn, g: Grant<'_>) -> Result<TokenResponse, Error> {
        let (response, records) = self.mint(&g)?;
        for r in &records {
            oauth::insert_token(conn, r).await?;
        }
        Ok(response)
    }

    /// Issues tokens that need no other change in the same transaction (client
    /// credentials): concurrent issuances are committed together in one transaction by
    /// the token writer, and each answers only after its rows are committed.
    pub(crate) async fn issue_batched(&self, g: Grant<'_>) -> Result<TokenResponse, Error> {
        let (response, records) = self.mint(&g)?;
        self.token_writer().write(records).await?;
        Ok(response)
    }

    /// The token values and the rows that store them.
    fn mint(&self, g: &Grant<'_>) -> Result<(TokenResponse, Vec<TokenRecord>), Error> {
        let s = self.settings();
        let now = now_ms();
        let access_ttl = if g.user_id.is_some() { s.user_access_token_ttl } else { s.app_access_token_ttl };
        let mut records = Vec::with_capacity(2);
        let access = self.mint_one(g, "access", ACCESS_PREFIX, access_ttl, now, &mut records)?;
        let refresh = if g.with_refresh { Some(self.mint_one(g, "refresh", REFRESH_PREFIX, s.refresh_token_ttl, now, &mut records)?) } else { None };
        let response = TokenResponse { access_token: access, token_type: "Bearer", expires_in: access_ttl.as_secs(), refresh_token: refresh, scope: g.scope.to_string() };
        Ok((response, records))
    }

    fn mint_one(&self, g: &Grant<'_>, kind: &str, prefix: &str, ttl: Duration, now: i64, out: &mut Vec<TokenRecord>) -> Result<String, Error> {
        let id = new_id("tok");
        let expires_at = now + ttl.as_millis() as i64;
        let value = match (kind, self.jwt()) {
            ("access", Some(keys)) => {
                let issuer = &self.settings().issuer;
                keys.sign(&serde_json::json!({
                    "iss": issuer,
                    "aud": issuer,
                    "sub": g.user_id.unwrap_or(&g.client.app.id),
                    "client_id": g.client.credential.app_key,
                    "scope": g.scope,
                    "iat": now / 1000,
                    "exp": expires_at / 1000,
                    "jti": id,
                    "app_id": g.client.app.id,
                    "merchant_id": g.client.app.merchant_id,
                    "environment": g.client.credential.environment,
                }))?
            }
            _ => token::generate(prefix),
        };
        out.push(TokenRecord {
            id,
            token_digest: token::digest(&value),
            kind: kind.into(),
            app_id: g.client.app.id.clone(),
            merchant_id: g.client.app.merchant_id.clone(),
            credential_id: g.client.credential.id.clone(),
            environment: g.client.credential.environment.clone(),
            user_id: g.user_id.map(str::to_string),
            scope: g.scope.to_string(),
            family_id: g.family_id.clone(),
            code_id: g.code_id.map(str::to_string),
            expires_at,
            rotated_at: None,
            revoked_at: None,
            created_at: now,
        });
        Ok(value)
    }

    /// Validates an access token: from the cache when possible, else from the database
    /// (and then cached). `None` for unknown, expired, revoked or non-access tokens.
    pub async fn validate(&self, presented: &str) -> Result<Option<Arc<TokenInfo>>, Error> {
        self.validate_at(presented, now_ms()).await
    }

    /// [`validate`](Self::validate) at `now` (milliseconds since the epoch): the gateway
    /// reads the time once per call.
    pub async fn validate_at(&self, presented: &str, now: i64) -> Result<Option<Arc<TokenInfo>>, Error> {
        let opaque = presented.starts_with(ACCESS_PREFIX) && presented.len() <= 200;
        let jwt = presented.starts_with("eyJ") && presented.len() <= 4096 && presented.matches('.').count() == 2;
        if !opaque && !jwt {
            return Ok(None);
        }
        // Kept as a String only when the cache misses.
        let mut buf = [0u8; 64];
        let digest = token::digest_in(presented, &mut buf);
        if let Some(info) = self.cache().get(digest, now) {
            return Ok(Some(info));
        }
        let record = {
            let mut conn = self.platform().store().read().await?;
            oauth::token(&mut conn, digest).await?
        };
        let Some(t) = record.filter(|t| t.kind == "access" && t.revoked_at.is_none() && t.expires_at > now) else {
            return Ok(None);
        };
        let client_id = {
            let mut conn = self.platform().store().read().await?;
            portico_store::apps::credentials(&mut conn, &t.merchant_id, &t.app_id)
                .await?
                .into_iter()
                .find(|c| c.id == t.credential_id)
                .map(|c| c.app_key)
                .unwrap_or_default()
        };
        let info = Arc::new(info_of(&t, client_id));
        self.cache().insert(digest.to_owned(), info.clone());
        Ok(Some(info))
    }

    /// Evicts revoked digests from this instance's cache (others follow within a second).
    pub(crate) fn forget(&self, digests: &[String]) {
        for d in digests {
            self.cache().evict(d);
        }
    }

    /// RFC 7662 introspection. Also inactive when the app is disabled or its merchant is
    /// no longer active.
    pub async fn introspect(&self, presented: &str) -> Result<serde_json::Value, Error> {
        let inactive = serde_json::json!({ "active": false });
        let now = now_ms();
        let digest = token::digest(presented);
        let (info, token_type) = if presented.starts_with(REFRESH_PREFIX) {
            let mut conn = self.platform().store().read().await?;
            match oauth::token(&mut conn, &digest).await? {
                Some(t) if t.kind == "refresh" && t.revoked_at.is_none() && t.expires_at > now => {
                    let grace_over = t.rotated_at.is_some_and(|r| now - r > self.settings().refresh_grace.as_millis() as i64);
                    if grace_over {
                        return Ok(inactive);
                    }
                    (Arc::new(info_of(&t, String::new())), "refresh_token")
                }
                _ => return Ok(inactive),
            }
        } else {
            match self.validate(presented).await? {
                Some(i) => (i, "Bearer"),
                None => return Ok(inactive),
            }
        };
        let status = self.app_status(&info.app_id, &info.merchant_id).await?;
        if !status.usable {
            return Ok(inactive);
        }
        let client_id = if info.client_id.is_empty() { self.client_id_of(&info).await? } else { info.client_id.clone() };
        Ok(serde_json::json!({
            "active": true,
            "scope": info.scope,
            "client_id": client_id,
            "token_type": token_type,
            "exp": info.expires_at / 1000,
            "iat": info.issued_at / 1000,
            "sub": info.user_id.clone().unwrap_or_else(|| info.app_id.clone()),
            "iss": self.settings().issuer,
            "app_id": info.app_id,
            "merchant_id": info.merchant_id,
            "environment": info.environment,
            "user_id": info.user_id,
            "internal_user_id": status.internal_user_id,
        }))
    }
}

impl OAuth {
    /// Whether the app behind a token may use it now (cached for up to a second).
    pub async fn app_status(&self, app_id: &str, merchant_id: &str) -> Result<AppStatus, Error> {
        if let Some(s) = self.app_status_cache().get(app_id) {
            return Ok(s);
        }
        let mut conn = self.platform().store().read().await?;
        let app = portico_store::apps::get(&mut conn, merchant_id, app_id).await?;
        let merchant = portico_store::merchants::get(&mut conn, merchant_id).await?;
        let status = match (app, merchant) {
            (Some(a), Some(m)) => AppStatus { usable: a.status == "active" && m.state == "active", internal_user_id: m.internal_user_id },
            _ => AppStatus { usable: false, internal_user_id: None },
        };
        self.app_status_cache().insert(app_id, status.clone());
        Ok(status)
    }

    async fn client_id_of(&self, info: &TokenInfo) -> Result<String, Error> {
        let mut conn = self.platform().store().read().await?;
        Ok(portico_store::apps::credentials(&mut conn, &info.merchant_id, &info.app_id)
            .await?
            .into_iter()
            .find(|c| c.environment == info.environment)
            .map(|c| c.app_key)
            .unwrap_or_default())
    }
}

fn info_of(t: &TokenRecord, client_id: String) -> TokenInfo {
    TokenInfo {
        token_id: t.id.clone(),
        app_id: t.app_id.clone(),
        merchant_id: t.merchant_id.clone(),
        client_id,
        environment: t.environment.clone(),
        user_id: t.user_id.clone(),
        scope: t.scope.clone(),
        issued_at: t.created_at,
        expires_at: t.expires_at,
    }
}

/// Group commit for token rows: one task drains every pending issuance into a single
/// transaction, so concurrent clients share one commit instead of queueing for one each.
pub(crate) struct TokenWriter {
    queue: mpsc::Sender<(Vec<TokenRecord>, oneshot::Sender<Result<(), Error>>)>,
}

const MAX_BATCH: usize = 512;

impl TokenWriter {
    /// Starts the writer task; must be called inside a Tokio runtime.
    pub(crate) fn start(store: Store) -> TokenWriter {
        let (queue, mut rx) = mpsc::channel::<(Vec<TokenRecord>, oneshot::Sender<Result<(), Error>>)>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let result = async {
                    let mut tx = store.begin().await?;
                    for (records, _) in &batch {
                        for r in records {
                            oauth::insert_token(&mut tx, r).await?;
                        }
                    }
                    portico_store::commit(tx).await
                }
                .await;
                for (_, ack) in batch {
                    let _ = ack.send(result.as_ref().map(|_| ()).map_err(clone_error));
                }
            }
        });
        TokenWriter { queue }
    }

    pub(crate) async fn write(&self, records: Vec<TokenRecord>) -> Result<(), Error> {
        let (ack, done) = oneshot::channel();
        self.queue.send((records, ack)).await.map_err(|_| Error::Unavailable("the token writer stopped".into()))?;
        done.await.map_err(|_| Error::Unavailable("the token writer stopped".into()))?
    }
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        other => Error::Internal(other.to_string()),
    }
}

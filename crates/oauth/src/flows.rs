//! The token endpoint's grants and the revocation endpoint.

use base64::Engine;
use portico_auth::token;
use portico_console::apps::ClientType;
use portico_core::{id::new_id, time::now_ms};
use portico_store::oauth;
use sha2::{Digest, Sha256};

use crate::{
    clients::{resolve_scope, Client},
    tokens::{Grant, TokenResponse, REFRESH_PREFIX},
    OAuth, OAuthError,
};

/// A form body: each parameter at most once (RFC 6749 §3.2).
#[derive(Debug)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Form, OAuthError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(OAuthError::invalid_request(format!("parameter {k} is given more than once")));
            }
        }
        Ok(Form(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }
}

/// Client credentials as presented: HTTP Basic (form-urlencoded parts, RFC 6749 §2.3.1)
/// or `client_id`/`client_secret` in the body, never both.
pub(crate) fn presented_client(authorization: Option<&str>, form: &Form) -> Result<(String, Option<String>, bool), OAuthError> {
    match authorization {
        Some(h) => {
            let encoded = h.strip_prefix("Basic ").ok_or_else(|| OAuthError::invalid_client("Authorization must be Basic client credentials"))?;
            if form.get("client_secret").is_some() {
                return Err(OAuthError::invalid_request("use one client authentication method, not two"));
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            let (id, secret) = decoded.split_once(':').ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            let unescape = |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default();
            let id = unescape(id);
            if let Some(body_id) = form.get("client_id") {
                if body_id != id {
                    return Err(OAuthError::invalid_request("client_id differs from the Basic credentials"));
                }
            }
            Ok((id, Some(unescape(secret)), true))
        }
        None => {
            let id = form.get("client_id").ok_or_else(|| OAuthError::invalid_client("client authentication required"))?;
            Ok((id.to_string(), form.get("client_secret").map(str::to_string), false))
        }
    }
}

impl OAuth {
    /// A token request as the endpoint receives it: the `Authorization` header, the
    /// form-urlencoded body, the caller's address.
    pub async fn token_request(&self, authorization: Option<&str>, body: &[u8], ip: &str) -> Result<TokenResponse, OAuthError> {
        self.token(authorization, &Form::parse(body)?, ip).await
    }

    /// `POST /oauth2/token`.
    pub(crate) async fn token(&self, authorization: Option<&str>, form: &Form, ip: &str) -> Result<TokenResponse, OAuthError> {
        let grant_type = form.require("grant_type")?;
        if !matches!(grant_type, "client_credentials" | "authorization_code" | "refresh_token") {
            return Err(OAuthError::unsupported_grant_type(format!("grant_type {grant_type:?} is not supported")));
        }
        let (client_id, secret, basic) = presented_client(authorization, form)?;
        let client = self.authenticate_client(&client_id, secret.as_deref(), ip, basic).await?;
        match grant_type {
            "client_credentials" => self.client_credentials(&client, form).await,
            "authorization_code" => self.authorization_code(&client, form).await,
            _ => self.refresh(&client, form).await,
        }
    }

    async fn client_credentials(&self, client: &Client, form: &Form) -> Result<TokenResponse, OAuthError> {
        if client.client_type == ClientType::Public {
            return Err(OAuthError::unauthorized_client("public clients cannot use client_credentials"));
        }
        let scope = resolve_scope(form.get("scope"), &client.grants)?;
        let grant = Grant { client, user_id: None, scope: &scope, family_id: new_id("fam"), code_id: None, with_refresh: false };
        Ok(self.issue_batched(grant).await?)
    }

    async fn authorization_code(&self, client: &Client, form: &Form) -> Result<TokenResponse, OAuthError> {
        let code = form.require("code")?;
        let now = now_ms();
        let mut tx = self.platform().store().begin().await?;
        let record = oauth::code(&mut tx, &token::digest(code)).await?.ok_or_else(|| OAuthError::invalid_grant("unknown authorization code"))?;
        if record.credential_id != client.credential.id {
            return Err(OAuthError::invalid_grant("the code was issued to another client"));
        }
        if !oauth::use_code(&mut tx, &record.id, now).await? {
            // A replayed code: whoever holds it may be an attacker, so everything issued
            // from it is revoked (RFC 6749 §4.1.2).
            let revoked = oauth::revoke_by_code(&mut tx, &record.id, now).await?;
            portico_store::commit(tx).await?;
            self.forget(&revoked);
            tracing::warn!(code = %record.id, revoked = revoked.len(), "authorization code replayed; tokens revoked");
            return Err(OAuthError::invalid_grant("the authorization code was already used"));
        }
        if record.expires_at <= now {
            portico_store::commit(tx).await?;
            return Err(OAuthError::invalid_grant("the authorization code has expired"));
        }
        if form.get("redirect_uri") != Some(record.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant("redirect_uri does not match the authorization request"));
        }
        match (&record.code_challenge, form.get("code_verifier")) {
            (Some(challenge), Some(verifier)) => {
                if !valid_verifier(verifier) {
                    return Err(OAuthError::invalid_request("code_verifier must be 43 to 128 unreserved characters"));
                }
                let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
                if !token::constant_time_eq(computed.as_bytes(), challenge.as_bytes()) {
                    return Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge"));
                }
            }
            (Some(_), None) => return Err(OAuthError::invalid_grant("code_verifier is required")),
            (None, Some(_)) => return Err(OAuthError::invalid_grant("no code_challenge was sent with the authorization request")),
            (None, None) => {}
        }
        let grant = Grant {
            client,
            user_id: Some(&record.user_id),
            scope: &record.scope,
            family_id: new_id("fam"),
            code_id: Some(&record.id),
            with_refresh: true,
        };
        let response = self.issue(&mut tx, grant).await?;
        portico_store::commit(tx).await?;
        Ok(response)
    }

    async fn refresh(&self, client: &Client, form: &Form) -> Result<TokenResponse, OAuthError> {
        let presented = form.require("refresh_token")?;
        if !presented.starts_with(REFRESH_PREFIX) {
            return Err(OAuthError::invalid_grant("not a refresh token"));
        }
        let now = now_ms();
        let mut tx = self.platform().store().begin().await?;
        let old = oauth::token(&mut tx, &token::digest(presented)).await?.filter(|t| t.kind == "refresh").ok_or_else(|| OAuthError::invalid_grant("unknown refresh token"))?;
        if old.credential_id != client.credential.id {
            return Err(OAuthError::invalid_grant("the refresh token was issued to another client"));
        }
        if old.revoked_at.is_some() {
            return Err(OAuthError::invalid_grant("the refresh token was revoked"));
        }
        if old.expires_at <= now {
            return Err(OAuthError::invalid_grant("the refresh token has expired"));
        }
        if !oauth::mark_rotated(&mut tx, &old.id, now).await? {
            // Already rotated. Within the grace period this is a concurrent refresh and gets
            // its own pair; after it, the token was stolen or replayed: end the family.
            let rotated_at = old.rotated_at.unwrap_or(now);
            if now - rotated_at > self.settings().refresh_grace.as_millis() as i64 {
                let revoked = oauth::revoke_family(&mut tx, &old.family_id, now).await?;
                portico_store::commit(tx).await?;
                self.forget(&revoked);
                tracing::warn!(family = %old.family_id, "rotated refresh token reused; family revoked");
                return Err(OAuthError::invalid_grant("the refresh token was already used"));
            }
        }
        let scope = match form.get("scope") {
            None => old.scope.clone(),
            Some(req) => {
                let have: Vec<String> = old.scope.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect();
                resolve_scope(Some(req), &have)?
            }
        };
        let grant = Grant { client, user_id: old.user_id.as_deref(), scope: &scope, family_id: old.family_id.clone(), code_id: old.code_id.as_deref(), with_refresh: true };
        let response = self.issue(&mut tx, grant).await?;
        portico_store::commit(tx).await?;
        Ok(response)
    }

    /// `POST /oauth2/revoke` (RFC 7009). Revoking a refresh token revokes its whole family
    /// (the access tokens issued with it too). Unknown tokens and tokens of other clients
    /// are answered with success and left alone, so the endpoint reveals nothing.
    pub(crate) async fn revoke(&self, authorization: Option<&str>, form: &Form, ip: &str) -> Result<(), OAuthError> {
        let presented = form.require("token")?;
        let (client_id, secret, basic) = presented_client(authorization, form)?;
        let client = self.authenticate_client(&client_id, secret.as_deref(), ip, basic).await?;
        let now = now_ms();
        let mut tx = self.platform().store().begin().await?;
        let Some(t) = oauth::token(&mut tx, &token::digest(presented)).await? else {
            return Ok(());
        };
        if t.credential_id != client.credential.id {
            return Ok(());
        }
        let revoked = if t.kind == "refresh" { oauth::revoke_family(&mut tx, &t.family_id, now).await? } else { oauth::revoke_token(&mut tx, &t.id, now).await? };
        portico_store::commit(tx).await?;
        self.forget(&revoked);
        Ok(())
    }
}

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`.
pub(crate) fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(valid_verifier(verifier));
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(!valid_verifier("short"));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(50))));
    }

    #[test]
    fn forms_and_basic_credentials() {
        assert_eq!(Form::parse(b"a=1&a=2").unwrap_err().error, "invalid_request");
        let f = Form::parse(b"grant_type=client_credentials&scope=a+b").unwrap();
        assert_eq!(f.get("scope"), Some("a b"));
        // RFC 6749 §2.3.1: the parts are form-urlencoded before base64.
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ak%3A1:s%2Bx"));
        let (id, secret, used_basic) = presented_client(Some(&basic), &f).unwrap();
        assert_eq!((id.as_str(), secret.as_deref(), used_basic), ("ak:1", Some("s+x"), true));
        assert_eq!(presented_client(Some("Basic !!!"), &f).unwrap_err().error, "invalid_client");
        assert_eq!(presented_client(Some("Bearer x"), &f).unwrap_err().error, "invalid_client");
        assert_eq!(presented_client(None, &f).unwrap_err().error, "invalid_client");
        let both = Form::parse(b"client_secret=x").unwrap();
        assert_eq!(presented_client(Some(&basic), &both).unwrap_err().error, "invalid_request");
    }
}

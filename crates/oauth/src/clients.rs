//! OAuth2 clients are apps: `client_id` is one of the app's `app_key`s (so sandbox and
//! production are separate clients), the secret is its `app_secret`.

use portico_console::apps::ClientType;
use portico_core::Error;
use portico_store::{apps, apps::AppRecord, apps::CredentialRecord};

use crate::{OAuth, OAuthError};

/// A client as the OAuth2 flows need it.
pub(crate) struct Client {
    pub app: AppRecord,
    pub credential: CredentialRecord,
    pub merchant_name: String,
    pub client_type: ClientType,
    pub redirect_uris: Vec<String>,
    pub grants: Vec<String>,
}

impl OAuth {
    /// Loads a usable client: app enabled, merchant active.
    pub(crate) async fn client(&self, client_id: &str) -> Result<Option<Client>, Error> {
        let mut conn = self.platform().store().read().await?;
        let Some((credential, app, merchant_state, merchant_name)) = apps::caller_by_app_key(&mut conn, client_id).await? else {
            return Ok(None);
        };
        if app.status != "active" || merchant_state != "active" {
            return Ok(None);
        }
        let grants = apps::grants(&mut conn, &app.merchant_id, &app.id).await?;
        Ok(Some(Client {
            client_type: ClientType::parse(&app.client_type).unwrap_or(ClientType::Confidential),
            redirect_uris: serde_json::from_str(&app.redirect_uris).unwrap_or_default(),
            merchant_name,
            grants,
            app,
            credential,
        }))
    }

    /// Authenticates the client of a token-endpoint request. `secret` is `None` for public
    /// clients, which are then identified but not authenticated (PKCE protects them).
    /// Failures count against the client and the address.
    pub(crate) async fn authenticate_client(&self, client_id: &str, secret: Option<&str>, ip: &str, basic: bool) -> Result<Client, OAuthError> {
        let client_key = format!("client:{client_id}");
        let ip_key = format!("ip:{ip}");
        if let Some(wait) = self.limiter().blocked(&[&client_key, &ip_key]) {
            return Err(OAuthError::too_many_attempts(wait));
        }
        let fail = |why: &str| {
            self.limiter().fail(&[&client_key, &ip_key]);
            OAuthError { basic_challenge: basic, ..OAuthError::invalid_client(why.to_string()) }
        };
        let client = self.client(client_id).await?.ok_or_else(|| fail("unknown client or client disabled"))?;
        match (client.client_type, secret) {
            (ClientType::Confidential, Some(secret)) => {
                if !self.platform().secret_matches(&client.credential, secret)? {
                    return Err(fail("client authentication failed"));
                }
            }
            (ClientType::Confidential, None) => return Err(fail("this client must authenticate with its secret")),
            (ClientType::Public, Some(_)) => return Err(fail("public clients have no secret; use PKCE")),
            (ClientType::Public, None) => {}
        }
        self.limiter().succeed(&client_key);
        Ok(client)
    }
}

/// Parses a requested scope against what the client was granted: absent means all of
/// them; anything not granted is `invalid_scope`. Returns the space-separated result.
pub(crate) fn resolve_scope(requested: Option<&str>, granted: &[String]) -> Result<String, OAuthError> {
    let Some(req) = requested.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(granted.join(" "));
    };
    let mut out: Vec<&str> = Vec::new();
    for s in req.split(' ').filter(|s| !s.is_empty()) {
        if !granted.iter().any(|g| g == s) {
            return Err(OAuthError::invalid_scope(format!("scope {s:?} is not granted to this client")));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out.sort_unstable();
    Ok(out.join(" "))
}

/// Whether every scope in `wanted` is in `have` (both space-separated).
pub(crate) fn covers(have: &str, wanted: &str) -> bool {
    wanted.split(' ').filter(|s| !s.is_empty()).all(|w| have.split(' ').any(|h| h == w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let g = vec!["orders".to_string(), "profile".to_string()];
        assert_eq!(resolve_scope(None, &g).unwrap(), "orders profile");
        assert_eq!(resolve_scope(Some("profile  orders profile"), &g).unwrap(), "orders profile");
        assert_eq!(resolve_scope(Some("admin"), &g).unwrap_err().error, "invalid_scope");
        assert!(covers("orders profile", "profile"));
        assert!(!covers("orders", "orders profile"));
        assert!(covers("orders", ""));
    }
}

//! Apps and their credentials. Each app has a sandbox and a production credential: a
//! public `app_key` and an `app_secret` that is shown exactly once (at creation or
//! rotation), stored sealed under the master key, and never returned again. A rotated
//! secret keeps working for a grace period so merchants can roll without downtime.

use std::time::Duration;

use portico_core::{
    domain::{CallbackUrl, IpAllowlist, RedirectUri, Text},
    id::{new_id, random_token},
    page::{Page, PageRequest},
    time::{now_ms, rfc3339},
    Error,
};
use portico_store::{
    apps::{self, AppRecord, CredentialRecord},
    Conn,
};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::{audit, merchants::MerchantState, Platform, Principal};

/// The longest grace period a rotation may ask for.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How the merchant integrates (seed 001): server-to-server API, H5 pages, or an SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationMode {
    Api,
    H5,
    Sdk,
}

impl IntegrationMode {
    fn as_str(self) -> &'static str {
        match self {
            IntegrationMode::Api => "api",
            IntegrationMode::H5 => "h5",
            IntegrationMode::Sdk => "sdk",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "api" => IntegrationMode::Api,
            "h5" => IntegrationMode::H5,
            "sdk" => IntegrationMode::Sdk,
            _ => return None,
        })
    }
}

/// OAuth2 client type (RFC 6749 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientType {
    /// A server that keeps the app secret: authenticates with it at the token endpoint.
    Confidential,
    /// A browser or native app that cannot keep a secret: authenticates with PKCE only.
    Public,
}

impl ClientType {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientType::Confidential => "confidential",
            ClientType::Public => "public",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "confidential" => Some(ClientType::Confidential),
            "public" => Some(ClientType::Public),
            _ => None,
        }
    }
}

/// Sandbox or production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Sandbox,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Sandbox => "sandbox",
            Environment::Production => "production",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sandbox" => Some(Environment::Sandbox),
            "production" => Some(Environment::Production),
            _ => None,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Environment::Sandbox => "test",
            Environment::Production => "live",
        }
    }
}

/// A new app.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AppIn {
    pub name: String,
    pub integration_mode: IntegrationMode,
    /// Where Portico pushes events: https, or http to localhost for development.
    pub callback_url: Option<String>,
    /// IPv4/IPv6 addresses or CIDR networks allowed to call; empty allows every address.
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
    /// PEM (SPKI or PKCS#1) or bare base64 DER of the app's RSA public key, at least 2048
    /// bits, for RSA2 signatures.
    pub rsa_public_key: Option<String>,
    /// OAuth2 redirect URIs for the authorization-code flow, matched exactly.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// OAuth2 client type (default `confidential`).
    pub client_type: Option<ClientType>,
}

/// Changes to an app; absent fields stay, `null` clears an optional one.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AppPatch {
    pub name: Option<String>,
    pub integration_mode: Option<IntegrationMode>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub callback_url: Option<Option<String>>,
    pub ip_allowlist: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub rsa_public_key: Option<Option<String>>,
    pub redirect_uris: Option<Vec<String>>,
    pub client_type: Option<ClientType>,
}

fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Options of a rotation.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RotateIn {
    /// How long the old secret keeps working, 0 to 2592000 s (default from the
    /// configuration, 24 h).
    pub grace_seconds: Option<u64>,
}

/// An app on the wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppOut {
    pub id: String,
    pub merchant_id: String,
    pub name: String,
    pub integration_mode: IntegrationMode,
    pub callback_url: Option<String>,
    pub ip_allowlist: Vec<String>,
    pub rsa_public_key: Option<String>,
    pub redirect_uris: Vec<String>,
    pub client_type: ClientType,
    /// Scopes (API groups) granted to the app: what its tokens may carry.
    pub scopes: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    pub credentials: Vec<CredentialOut>,
    pub created_at: String,
    pub updated_at: String,
}

/// A credential without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialOut {
    pub environment: Environment,
    pub app_key: String,
    pub secret_created_at: String,
    /// Until when the previous secret still works, during a rotation's grace period.
    pub previous_secret_expires_at: Option<String>,
}

/// A secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretOut {
    pub environment: Environment,
    pub app_key: String,
    pub app_secret: String,
    pub previous_secret_expires_at: Option<String>,
}

/// A new app with both secrets, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppCreatedOut {
    pub app: AppOut,
    pub secrets: Vec<SecretOut>,
}

/// Who an `app_key` and secret belong to, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppIdentity {
    pub app_id: String,
    pub merchant_id: String,
    pub environment: Environment,
    pub internal_user_id: Option<String>,
}

impl Platform {
    /// Creates an app with sandbox and production credentials; the merchant must be active.
    pub async fn create_app(&self, actor: &Principal, merchant_id: &str, input: AppIn) -> Result<AppCreatedOut, Error> {
        actor.can_manage_apps(merchant_id)?;
        let name = Text::parse("name", &input.name, 100)?;
        let callback_url = input.callback_url.as_deref().map(CallbackUrl::parse).transpose()?;
        let allowlist = IpAllowlist::parse("ip_allowlist", &input.ip_allowlist)?;
        let rsa_public_key = input.rsa_public_key.as_deref().map(parse_rsa_public_key).transpose()?;
        let redirect_uris = parse_redirect_uris(&input.redirect_uris)?;
        self.require_active(merchant_id).await?;
        let now = now_ms();
        let app = AppRecord {
            id: new_id("app"),
            merchant_id: merchant_id.to_string(),
            name: name.into_string(),
            integration_mode: input.integration_mode.as_str().into(),
            callback_url: callback_url.map(|u| u.as_str().to_string()),
            ip_allowlist: serde_json::to_string(&allowlist.to_strings()).expect("strings serialize"),
            rsa_public_key,
            status: "active".into(),
            redirect_uris,
            client_type: input.client_type.unwrap_or(ClientType::Confidential).as_str().into(),
            created_at: now,
            updated_at: now,
        };
        let mut secrets = Vec::new();
        let mut tx = self.store().begin().await?;
        apps::insert(&mut tx, &app).await?;
        for env in [Environment::Sandbox, Environment::Production] {
            let (record, secret) = self.new_credential(&app, env, now);
            apps::insert_credential(&mut tx, &record).await?;
            secrets.push(SecretOut { environment: env, app_key: record.app_key, app_secret: secret, previous_secret_expires_at: None });
        }
        audit::record(&mut tx, actor, app_event(&app, "app.created", json!({ "name": app.name }))).await?;
        let out = self.app_view(&mut tx, &app).await?;
        portico_store::commit(tx).await?;
        Ok(AppCreatedOut { app: out, secrets })
    }

    pub async fn app(&self, actor: &Principal, merchant_id: &str, app_id: &str) -> Result<AppOut, Error> {
        actor.can_see(merchant_id)?;
        let mut conn = self.store().read().await?;
        let app = apps::get(&mut conn, merchant_id, app_id).await?.ok_or(Error::NotFound("app"))?;
        self.app_view(&mut conn, &app).await
    }

    pub async fn apps(&self, actor: &Principal, merchant_id: &str, page: &PageRequest) -> Result<Page<AppOut>, Error> {
        actor.can_see(merchant_id)?;
        let mut conn = self.store().read().await?;
        let rows = apps::list(&mut conn, merchant_id, page).await?;
        let page = Page::from_rows(rows, page.limit, |a| a.id.clone());
        let mut items = Vec::with_capacity(page.items.len());
        for app in &page.items {
            items.push(self.app_view(&mut conn, app).await?);
        }
        Ok(Page { items, next_cursor: page.next_cursor })
    }

    pub async fn update_app(&self, actor: &Principal, merchant_id: &str, app_id: &str, patch: AppPatch) -> Result<AppOut, Error> {
        actor.can_manage_apps(merchant_id)?;
        let mut tx = self.store().begin().await?;
        let mut app = apps::get(&mut tx, merchant_id, app_id).await?.ok_or(Error::NotFound("app"))?;
        let mut changed = Vec::new();
        if let Some(name) = patch.name {
            app.name = Text::parse("name", &name, 100)?.into_string();
            changed.push("name");
        }
        if let Some(mode) = patch.integration_mode {
            app.integration_mode = mode.as_str().into();
            changed.push("integration_mode");
        }
        if let Some(url) = patch.callback_url {
            app.callback_url = url.as_deref().map(CallbackUrl::parse).transpose()?.map(|u| u.as_str().to_string());
            changed.push("callback_url");
        }
        if let Some(list) = patch.ip_allowlist {
            let parsed = IpAllowlist::parse("ip_allowlist", &list)?;
            app.ip_allowlist = serde_json::to_string(&parsed.to_strings()).expect("strings serialize");
            changed.push("ip_allowlist");
        }
        if let Some(key) = patch.rsa_public_key {
            app.rsa_public_key = key.as_deref().map(parse_rsa_public_key).transpose()?;
            changed.push("rsa_public_key");
        }
        if let Some(uris) = patch.redirect_uris {
            app.redirect_uris = parse_redirect_uris(&uris)?;
            changed.push("redirect_uris");
        }
        if let Some(t) = patch.client_type {
            app.client_type = t.as_str().into();
            changed.push("client_type");
        }
        app.updated_at = now_ms();
        apps::update(&mut tx, &app).await?;
        audit::record(&mut tx, actor, app_event(&app, "app.updated", json!({ "fields": changed }))).await?;
        let out = self.app_view(&mut tx, &app).await?;
        portico_store::commit(tx).await?;
        self.announce_app(&app);
        Ok(out)
    }

    /// Disables or re-enables an app; a disabled app's credentials stop working.
    pub async fn set_app_enabled(&self, actor: &Principal, merchant_id: &str, app_id: &str, enabled: bool) -> Result<AppOut, Error> {
        actor.can_manage_apps(merchant_id)?;
        let mut tx = self.store().begin().await?;
        let mut app = apps::get(&mut tx, merchant_id, app_id).await?.ok_or(Error::NotFound("app"))?;
        let status = if enabled { "active" } else { "disabled" };
        if app.status != status {
            app.status = status.into();
            app.updated_at = now_ms();
            apps::update(&mut tx, &app).await?;
            let action = if enabled { "app.enabled" } else { "app.disabled" };
            audit::record(&mut tx, actor, app_event(&app, action, json!({}))).await?;
        }
        let out = self.app_view(&mut tx, &app).await?;
        portico_store::commit(tx).await?;
        self.announce_app(&app);
        Ok(out)
    }

    /// Issues a new secret for one environment; the old one works until the grace ends.
    pub async fn rotate_secret(
        &self,
        actor: &Principal,
        merchant_id: &str,
        app_id: &str,
        env: Environment,
        input: RotateIn,
    ) -> Result<SecretOut, Error> {
        actor.can_manage_apps(merchant_id)?;
        let grace = match input.grace_seconds {
            Some(s) if s > MAX_ROTATION_GRACE.as_secs() => {
                return Err(Error::validation("grace_seconds", format!("must be at most {}", MAX_ROTATION_GRACE.as_secs())))
            }
            Some(s) => Duration::from_secs(s),
            None => self.settings().rotation_grace,
        };
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let app = apps::get(&mut tx, merchant_id, app_id).await?.ok_or(Error::NotFound("app"))?;
        let credential = apps::credentials(&mut tx, merchant_id, app_id)
            .await?
            .into_iter()
            .find(|c| c.environment == env.as_str())
            .ok_or(Error::NotFound("credential"))?;
        let secret = new_secret(env);
        let sealed = self.key().seal(&secret, &secret_aad(&credential.id));
        let expires = now + grace.as_millis() as i64;
        if !apps::rotate_secret(&mut tx, &credential, &sealed, expires, now).await? {
            return Err(Error::Conflict("the secret was rotated meanwhile; try again".into()));
        }
        apps::touch(&mut tx, app_id, now).await?;
        audit::record(
            &mut tx,
            actor,
            app_event(&app, "app.secret_rotated", json!({ "environment": env.as_str(), "grace_seconds": grace.as_secs() })),
        )
        .await?;
        portico_store::commit(tx).await?;
        self.announce_app(&app);
        Ok(SecretOut {
            environment: env,
            app_key: credential.app_key,
            app_secret: secret,
            previous_secret_expires_at: Some(rfc3339(expires)),
        })
    }

    /// Checks an `app_key` and secret (the current one, or the previous one within its
    /// grace period). Fails alike for an unknown key and a wrong secret; fails for a
    /// disabled app and for a merchant that is not active.
    pub async fn authenticate_app(&self, app_key: &str, app_secret: &str) -> Result<AppIdentity, Error> {
        let mut conn = self.store().read().await?;
        let credential = apps::credential_by_app_key(&mut conn, app_key).await?.ok_or(Error::InvalidCredentials)?;
        if !self.secret_matches(&credential, app_secret)? {
            return Err(Error::InvalidCredentials);
        }
        let app = apps::get(&mut conn, &credential.merchant_id, &credential.app_id).await?.ok_or(Error::InvalidCredentials)?;
        if app.status != "active" {
            return Err(Error::Forbidden("the app is disabled".into()));
        }
        drop(conn);
        let merchant = self.load(&credential.merchant_id).await?;
        if merchant.state != MerchantState::Active.as_str() {
            return Err(Error::MerchantNotActive);
        }
        Ok(AppIdentity {
            app_id: app.id,
            merchant_id: merchant.id,
            environment: Environment::parse(&credential.environment).ok_or_else(|| Error::Internal("bad environment".into()))?,
            internal_user_id: merchant.internal_user_id,
        })
    }

    /// The secrets a credential accepts now: the current one, and the previous one during
    /// its rotation grace period.
    pub fn live_secrets(&self, credential: &CredentialRecord) -> Result<Vec<String>, Error> {
        let aad = secret_aad(&credential.id);
        let mut out = vec![self.key().open(&credential.secret_sealed, &aad).map_err(|e| Error::Internal(e.to_string()))?];
        if let (Some(prev), Some(until)) = (&credential.previous_secret_sealed, credential.previous_secret_expires_at) {
            if until > now_ms() {
                out.push(self.key().open(prev, &aad).map_err(|e| Error::Internal(e.to_string()))?);
            }
        }
        Ok(out)
    }

    /// Whether `presented` is one of the credential's live secrets (constant time).
    pub fn secret_matches(&self, credential: &CredentialRecord, presented: &str) -> Result<bool, Error> {
        let mut ok = false;
        for s in self.live_secrets(credential)? {
            ok |= portico_auth::token::constant_time_eq(s.as_bytes(), presented.as_bytes());
        }
        Ok(ok)
    }

    async fn require_active(&self, merchant_id: &str) -> Result<(), Error> {
        let merchant = self.load(merchant_id).await?;
        if merchant.state != MerchantState::Active.as_str() {
            return Err(Error::MerchantNotActive);
        }
        Ok(())
    }

    fn new_credential(&self, app: &AppRecord, env: Environment, now: i64) -> (CredentialRecord, String) {
        let id = new_id("crd");
        let secret = new_secret(env);
        let record = CredentialRecord {
            secret_sealed: self.key().seal(&secret, &secret_aad(&id)),
            id,
            app_id: app.id.clone(),
            merchant_id: app.merchant_id.clone(),
            environment: env.as_str().into(),
            app_key: random_token(&format!("ak_{}_", env.tag()), 10),
            secret_created_at: now,
            previous_secret_sealed: None,
            previous_secret_expires_at: None,
            created_at: now,
        };
        (record, secret)
    }

    async fn app_view(&self, conn: &mut Conn, app: &AppRecord) -> Result<AppOut, Error> {
        let now = now_ms();
        let credentials = apps::credentials(conn, &app.merchant_id, &app.id)
            .await?
            .into_iter()
            .map(|c| CredentialOut {
                environment: Environment::parse(&c.environment).unwrap_or(Environment::Sandbox),
                app_key: c.app_key,
                secret_created_at: rfc3339(c.secret_created_at),
                previous_secret_expires_at: c.previous_secret_expires_at.filter(|t| *t > now).map(rfc3339),
            })
            .collect();
        let scopes = apps::grants(conn, &app.merchant_id, &app.id).await?;
        Ok(AppOut {
            id: app.id.clone(),
            merchant_id: app.merchant_id.clone(),
            name: app.name.clone(),
            integration_mode: IntegrationMode::parse(&app.integration_mode).unwrap_or(IntegrationMode::Api),
            callback_url: app.callback_url.clone(),
            ip_allowlist: serde_json::from_str(&app.ip_allowlist).unwrap_or_default(),
            rsa_public_key: app.rsa_public_key.clone(),
            redirect_uris: serde_json::from_str(&app.redirect_uris).unwrap_or_default(),
            client_type: ClientType::parse(&app.client_type).unwrap_or(ClientType::Confidential),
            scopes,
            status: app.status.clone(),
            credentials,
            created_at: rfc3339(app.created_at),
            updated_at: rfc3339(app.updated_at),
        })
    }
}

impl Platform {
    /// Grants a scope (API group) to an app: operators who manage the catalog.
    pub async fn grant_scope(&self, actor: &Principal, merchant_id: &str, app_id: &str, scope: &str) -> Result<AppOut, Error> {
        actor.require(&[crate::Role::ProductManager], "grant scopes to apps")?;
        let scope = parse_scope(scope)?;
        let mut tx = self.store().begin().await?;
        let app = apps::get(&mut tx, merchant_id, app_id).await?.ok_or(Error::NotFound("app"))?;
        let (actor_kind, actor_id, _) = actor.audit_actor();
        if apps::grant(&mut tx, merchant_id, app_id, &scope, actor_id.as_deref().or(Some(actor_kind)), now_ms()).await? {
            apps::touch(&mut tx, app_id, now_ms()).await?;
            audit::record(&mut tx, actor, app_event(&app, "app.scope_granted", json!({ "scope": scope }))).await?;
        }
        let out = self.app_view(&mut tx, &app).await?;
        portico_store::commit(tx).await?;
        self.announce_app(&app);
        Ok(out)
    }

    /// Withdraws a scope from an app.
    pub async fn revoke_scope(&self, actor: &Principal, merchant_id: &str, app_id: &str, scope: &str) -> Result<AppOut, Error> {
        actor.require(&[crate::Role::ProductManager], "withdraw scopes from apps")?;
        let mut tx = self.store().begin().await?;
        let app = apps::get(&mut tx, merchant_id, app_id).await?.ok_or(Error::NotFound("app"))?;
        if !apps::revoke_grant(&mut tx, merchant_id, app_id, scope).await? {
            return Err(Error::NotFound("grant"));
        }
        apps::touch(&mut tx, app_id, now_ms()).await?;
        audit::record(&mut tx, actor, app_event(&app, "app.scope_revoked", json!({ "scope": scope }))).await?;
        let out = self.app_view(&mut tx, &app).await?;
        portico_store::commit(tx).await?;
        self.announce_app(&app);
        Ok(out)
    }
}

/// A scope name: 1 to 64 of `a-z 0-9 . _ : -`, as OAuth2 scope tokens must be simple.
pub fn parse_scope(s: &str) -> Result<String, Error> {
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".:_-".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(Error::validation("scope", "must be 1 to 64 of a-z, 0-9, '.', ':', '_', '-'"))
    }
}

fn parse_redirect_uris(uris: &[String]) -> Result<String, Error> {
    if uris.len() > 20 {
        return Err(Error::validation("redirect_uris", "at most 20 entries"));
    }
    let mut out: Vec<String> = Vec::with_capacity(uris.len());
    for (i, u) in uris.iter().enumerate() {
        let parsed = RedirectUri::parse(u).map_err(|e| e.at(&format!("redirect_uris[{i}]")))?;
        if !out.iter().any(|x| x == parsed.as_str()) {
            out.push(parsed.as_str().to_string());
        }
    }
    Ok(serde_json::to_string(&out).expect("strings serialize"))
}

impl Platform {
    fn announce_app(&self, app: &AppRecord) {
        self.announce(crate::Change::App { merchant_id: app.merchant_id.clone(), app_id: app.id.clone() });
    }
}

fn new_secret(env: Environment) -> String {
    random_token(&format!("sk_{}_", env.tag()), 24)
}

fn secret_aad(credential_id: &str) -> String {
    format!("app_secret:{credential_id}")
}

fn app_event<'a>(app: &'a AppRecord, action: &'a str, detail: serde_json::Value) -> audit::Event<'a> {
    audit::Event { merchant_id: Some(&app.merchant_id), action, target_type: "app", target_id: &app.id, reason: None, detail }
}

/// Accepts PEM (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`) or bare base64 of the SPKI
/// DER (as Alipay's console shows keys); returns the key as SPKI PEM.
pub fn parse_rsa_public_key(input: &str) -> Result<String, Error> {
    use rsa::{pkcs1::DecodeRsaPublicKey, traits::PublicKeyParts, RsaPublicKey};
    let bad = |why: &str| Error::validation("rsa_public_key", why.to_string());
    let s = input.trim();
    if s.len() > 8192 {
        return Err(bad("is too long"));
    }
    let key = if s.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        RsaPublicKey::from_pkcs1_pem(s).map_err(|_| bad("is not a valid PKCS#1 RSA public key"))?
    } else if s.starts_with("-----BEGIN PUBLIC KEY-----") {
        RsaPublicKey::from_public_key_pem(s).map_err(|_| bad("is not a valid RSA public key (SPKI PEM)"))?
    } else {
        // PEM wants the base64 in lines of 64 characters.
        let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let lines: Vec<&str> = compact.chunks(64).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"));
        RsaPublicKey::from_public_key_pem(&pem).map_err(|_| bad("must be a PEM or base64 DER RSA public key"))?
    };
    let bits = key.size() * 8;
    if bits < 2048 {
        return Err(bad(&format!("must be at least 2048 bits, got {bits}")));
    }
    key.to_public_key_pem(LineEnding::LF).map_err(|_| bad("could not be re-encoded"))
}

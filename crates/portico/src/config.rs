//! Layered configuration: the commented defaults embedded in the binary
//! (`portico.default.toml`) → an optional TOML file → `PORTICO_*` environment variables
//! (`__` for nesting) → command-line flags. Validated once, at start; an invalid value
//! stops start-up with a message that names it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use figment::{
    providers::{Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

pub const DEFAULTS: &str = include_str!("../portico.default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub master_key: String,
    pub database: DatabaseConfig,
    pub public: ListenerConfig,
    pub console: ConsoleConfig,
    pub internal: ListenerConfig,
    pub http: HttpConfig,
    pub oauth: OAuthConfig,
    pub gateway: GatewayConfig,
    pub messaging: MessagingConfig,
    pub mail: MailConfig,
    pub redis: RedisConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub addr: SocketAddr,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub lock_after_failures: u32,
    pub lock_duration_secs: u64,
    pub failed_login_delay_ms: u64,
    pub rotation_grace_secs: u64,
    pub secure_cookies: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    pub issuer: String,
    pub app_access_token_ttl_secs: u64,
    pub user_access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub code_ttl_secs: u64,
    pub refresh_grace_secs: u64,
    pub user_session_ttl_secs: u64,
    pub failure_limit: u32,
    pub failure_window_secs: u64,
    pub cache_max_entries: usize,
    pub access_token_format: TokenFormat,
    pub jwt_key_rotation_days: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub identity_key: String,
    pub app_rate_limit_per_second: u64,
    pub signature_window_secs: u64,
    pub records_on_idle_cpu: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagingConfig {
    pub allowed_private_targets: StringList,
    pub concurrency: usize,
    pub batch_size: usize,
    pub lease_secs: u64,
    pub poll_interval_ms: u64,
    pub disable_after_secs: u64,
    pub max_events_per_request: usize,
    pub amqp_url: String,
    pub amqp_queue: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    pub smtp_url: String,
    pub from: String,
}

/// A list given as a TOML array or, from the environment, as one comma-separated string.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StringList {
    Many(Vec<String>),
    One(String),
}

impl StringList {
    pub fn items(&self) -> Vec<String> {
        match self {
            StringList::Many(v) => v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            StringList::One(s) => s.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    Opaque,
    Jwt,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    pub grace_secs: u64,
}

/// Values given as flags; `None` leaves the lower layers alone.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub public_addr: Option<SocketAddr>,
    pub console_addr: Option<SocketAddr>,
    pub internal_addr: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
}

impl Overrides {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut put = |key, v: Option<String>| {
            if let Some(v) = v {
                out.push((key, v));
            }
        };
        put("data_dir", self.data_dir.as_ref().map(|p| p.display().to_string()));
        put("database.url", self.database_url.clone());
        put("public.addr", self.public_addr.map(|a| a.to_string()));
        put("console.addr", self.console_addr.map(|a| a.to_string()));
        put("internal.addr", self.internal_addr.map(|a| a.to_string()));
        put("log.format", self.log_format.map(|f| if f == LogFormat::Json { "json".into() } else { "human".into() }));
        out
    }
}

/// Environment variables that name a setting differently from the `__` rule.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("admin_email", "admin.email"),
    ("admin_password", "admin.password"),
    ("database_url", "database.url"),
];

impl Config {
    /// Loads the layers. `env` is the process environment (a parameter so that tests can
    /// give their own). Returns the configuration and warnings about unknown variables.
    pub fn load(file: Option<&std::path::Path>, env: &[(String, String)], overrides: &Overrides) -> anyhow::Result<(Config, Vec<String>)> {
        let known = known_keys();
        let mut warnings = Vec::new();
        let mut env_values = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("PORTICO_") else { continue };
            let lower = rest.to_ascii_lowercase();
            let key = ENV_ALIASES.iter().find(|(a, _)| *a == lower).map(|(_, k)| k.to_string()).unwrap_or_else(|| lower.replace("__", "."));
            if let Some(default) = known.get(&key) {
                env_values.push((key, typed_like(default, value)));
            } else if !lower.starts_with("test_") && lower != "worker_threads" && lower != "config" && lower != "data_dir" && lower != "database_url" {
                warnings.push(format!("ignoring unknown environment variable {name}"));
            }
        }
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = file {
            if !path.exists() {
                bail!("configuration file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        for (key, value) in env_values {
            figment = figment.merge(Serialized::default(&key, value));
        }
        for (key, value) in overrides.pairs() {
            figment = figment.merge(Serialized::default(key, value));
        }
        let config: Config = figment.extract().map_err(|e| anyhow::anyhow!("invalid configuration: {}", describe(e)))?;
        config.validate()?;
        Ok((config, warnings))
    }

    fn validate(&self) -> anyhow::Result<()> {
        let url = &self.database.url;
        if !url.is_empty() && !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            bail!("invalid configuration: database.url must start with sqlite: or postgres: (got {})", mask_url(url));
        }
        if self.database.max_connections == 0 {
            bail!("invalid configuration: database.max_connections must be at least 1");
        }
        for (key, v) in [
            ("console.access_token_ttl_secs", self.console.access_token_ttl_secs),
            ("console.refresh_token_ttl_secs", self.console.refresh_token_ttl_secs),
            ("console.lock_duration_secs", self.console.lock_duration_secs),
            ("http.request_timeout_secs", self.http.request_timeout_secs),
            ("oauth.app_access_token_ttl_secs", self.oauth.app_access_token_ttl_secs),
            ("oauth.user_access_token_ttl_secs", self.oauth.user_access_token_ttl_secs),
            ("oauth.refresh_token_ttl_secs", self.oauth.refresh_token_ttl_secs),
            ("oauth.code_ttl_secs", self.oauth.code_ttl_secs),
            ("oauth.user_session_ttl_secs", self.oauth.user_session_ttl_secs),
            ("oauth.failure_window_secs", self.oauth.failure_window_secs),
            ("oauth.jwt_key_rotation_days", self.oauth.jwt_key_rotation_days),
            ("gateway.signature_window_secs", self.gateway.signature_window_secs),
            ("messaging.lease_secs", self.messaging.lease_secs),
            ("messaging.poll_interval_ms", self.messaging.poll_interval_ms),
            ("messaging.disable_after_secs", self.messaging.disable_after_secs),
            ("messaging.concurrency", self.messaging.concurrency as u64),
            ("messaging.batch_size", self.messaging.batch_size as u64),
            ("messaging.max_events_per_request", self.messaging.max_events_per_request as u64),
        ] {
            if v == 0 {
                bail!("invalid configuration: {key} must be greater than 0");
            }
        }
        if self.console.lock_after_failures == 0 {
            bail!("invalid configuration: console.lock_after_failures must be at least 1");
        }
        if self.oauth.failure_limit == 0 {
            bail!("invalid configuration: oauth.failure_limit must be at least 1");
        }
        if !self.oauth.issuer.is_empty() {
            let ok = url::Url::parse(&self.oauth.issuer).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.fragment().is_none());
            if !ok {
                bail!("invalid configuration: oauth.issuer must be an http(s) URL without query or fragment");
            }
        }
        if !self.redis.url.is_empty() && !(self.redis.url.starts_with("redis://") || self.redis.url.starts_with("rediss://")) {
            bail!("invalid configuration: redis.url must start with redis:// or rediss://");
        }
        if !self.gateway.identity_key.is_empty() && self.gateway.identity_key.len() < 32 {
            bail!("invalid configuration: gateway.identity_key must be at least 32 characters");
        }
        portico_core::domain::IpAllowlist::parse("messaging.allowed_private_targets", &self.messaging.allowed_private_targets.items())
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if self.messaging.lease_secs < 5 {
            bail!("invalid configuration: messaging.lease_secs must be at least 5");
        }
        if !self.messaging.amqp_url.is_empty() && !self.messaging.amqp_url.starts_with("amqp://") {
            bail!("invalid configuration: messaging.amqp_url must start with amqp://");
        }
        if !self.mail.smtp_url.is_empty() && !(self.mail.smtp_url.starts_with("smtp://") || self.mail.smtp_url.starts_with("smtps://")) {
            bail!("invalid configuration: mail.smtp_url must start with smtp:// or smtps://");
        }
        if self.http.max_body_bytes < 1024 {
            bail!("invalid configuration: http.max_body_bytes must be at least 1024");
        }
        if !self.master_key.is_empty() {
            portico_auth::MasterKey::parse(&self.master_key).map_err(|e| anyhow::anyhow!("invalid configuration: master_key: {e}"))?;
        }
        if portico_core::domain::Email::parse(&self.admin.email).is_err() {
            bail!("invalid configuration: admin.email is not an email address");
        }
        if !self.admin.password.is_empty() {
            portico_core::domain::Password::parse(&self.admin.password).map_err(|e| anyhow::anyhow!("invalid configuration: admin.{e}"))?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).with_context(|| format!("invalid configuration: log.level {:?}", self.log.level))?;
        Ok(())
    }

    /// The database URL in effect: the configured one, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}?mode=rwc", self.data_dir.join("portico.db").display())
        } else {
            self.database.url.clone()
        }
    }

    pub fn is_embedded(&self) -> bool {
        self.database_url().starts_with("sqlite:")
    }

    pub fn console_settings(&self) -> portico_console::ConsoleSettings {
        let c = &self.console;
        portico_console::ConsoleSettings {
            access_token_ttl: Duration::from_secs(c.access_token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(c.refresh_token_ttl_secs),
            lock_after_failures: c.lock_after_failures,
            lock_duration: Duration::from_secs(c.lock_duration_secs),
            failed_login_delay: Duration::from_millis(c.failed_login_delay_ms),
            rotation_grace: Duration::from_secs(c.rotation_grace_secs),
            secure_cookies: c.secure_cookies,
            webhook_targets: portico_core::domain::TargetPolicy::new(
                portico_core::domain::IpAllowlist::parse("messaging.allowed_private_targets", &self.messaging.allowed_private_targets.items()).expect("validated at load"),
            ),
        }
    }

    pub fn messaging_settings(&self) -> portico_messaging::MessagingSettings {
        let m = &self.messaging;
        portico_messaging::MessagingSettings {
            concurrency: m.concurrency,
            batch_size: m.batch_size,
            lease: Duration::from_secs(m.lease_secs),
            poll_interval: Duration::from_millis(m.poll_interval_ms),
            disable_after: Duration::from_secs(m.disable_after_secs),
            max_events_per_request: m.max_events_per_request,
            amqp: (!m.amqp_url.is_empty()).then(|| (m.amqp_url.clone(), m.amqp_queue.clone())),
            mail: (!self.mail.smtp_url.is_empty()).then(|| portico_messaging::MailSettings { smtp_url: self.mail.smtp_url.clone(), from: self.mail.from.clone() }),
        }
    }

    /// OAuth2 settings, given the addresses the listeners actually bound.
    pub fn oauth_settings(&self, public: std::net::SocketAddr, internal: std::net::SocketAddr) -> portico_oauth::OAuthSettings {
        let o = &self.oauth;
        portico_oauth::OAuthSettings {
            issuer: if o.issuer.is_empty() { format!("http://{public}") } else { o.issuer.trim_end_matches('/').to_string() },
            introspection_base: format!("http://{internal}"),
            app_access_token_ttl: Duration::from_secs(o.app_access_token_ttl_secs),
            user_access_token_ttl: Duration::from_secs(o.user_access_token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(o.refresh_token_ttl_secs),
            code_ttl: Duration::from_secs(o.code_ttl_secs),
            refresh_grace: Duration::from_secs(o.refresh_grace_secs),
            user_session_ttl: Duration::from_secs(o.user_session_ttl_secs),
            failure_limit: o.failure_limit,
            failure_window: Duration::from_secs(o.failure_window_secs),
            cache_max_entries: o.cache_max_entries,
            secure_cookies: self.console.secure_cookies,
            jwt_access_tokens: o.access_token_format == TokenFormat::Jwt,
            jwt_key_rotation: Duration::from_secs(o.jwt_key_rotation_days * 24 * 3600),
        }
    }

    pub fn gateway_settings(&self) -> portico_gateway::GatewaySettings {
        let g = &self.gateway;
        portico_gateway::GatewaySettings {
            max_body_bytes: self.http.max_body_bytes,
            app_rate_limit_per_second: g.app_rate_limit_per_second,
            signature_window: Duration::from_secs(g.signature_window_secs),
            identity_key: (!g.identity_key.is_empty()).then(|| g.identity_key.as_bytes().to_vec()),
            redis_url: (!self.redis.url.is_empty()).then(|| self.redis.url.clone()),
            records_on_idle_cpu: g.records_on_idle_cpu,
        }
    }

    /// The configuration as TOML with secrets masked, for `portico config`.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.master_key.is_empty() {
            shown.master_key = "********".into();
        }
        if !shown.admin.password.is_empty() {
            shown.admin.password = "********".into();
        }
        shown.database.url = mask_url(&shown.database.url);
        shown.redis.url = mask_url(&shown.redis.url);
        shown.messaging.amqp_url = mask_url(&shown.messaging.amqp_url);
        shown.mail.smtp_url = mask_url(&shown.mail.smtp_url);
        if !shown.gateway.identity_key.is_empty() {
            shown.gateway.identity_key = "********".into();
        }
        toml_string(&shown)
    }
}

fn toml_string(config: &Config) -> String {
    // figment's TOML support is for reading; write the few sections by hand from JSON.
    let value = serde_json::to_value(config).expect("config serializes");
    let mut top = String::new();
    let mut sections = String::new();
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            match v {
                serde_json::Value::Object(inner) => {
                    sections.push_str(&format!("\n[{k}]\n"));
                    for (ik, iv) in inner {
                        sections.push_str(&format!("{ik} = {iv}\n"));
                    }
                }
                other => top.push_str(&format!("{k} = {other}\n")),
            }
        }
    }
    top + &sections
}

/// Hides the password in a database URL.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("********"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Every dotted key the defaults define, with its default value; environment variables
/// must name one of them.
fn known_keys() -> std::collections::HashMap<String, serde_json::Value> {
    let value: serde_json::Value = Figment::from(Toml::string(DEFAULTS)).extract().expect("the built-in defaults parse");
    let mut keys = std::collections::HashMap::new();
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            match v {
                serde_json::Value::Object(inner) => keys.extend(inner.into_iter().map(|(ik, iv)| (format!("{k}.{ik}"), iv))),
                other => {
                    keys.insert(k, other);
                }
            }
        }
    }
    keys
}

/// Reads an environment value as the type of the setting's default, so that `8` is a
/// number for a number setting and stays text for a password. A value that does not
/// parse stays text and fails validation with the key named.
fn typed_like(default: &serde_json::Value, raw: &str) -> serde_json::Value {
    use serde_json::Value;
    match default {
        Value::Bool(_) => raw.trim().parse::<bool>().map(Value::from).unwrap_or_else(|_| Value::from(raw)),
        Value::Number(_) => raw.trim().parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::from(raw)),
        _ => Value::from(raw),
    }
}

fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|err| {
            let path = err.path.join(".");
            if path.is_empty() {
                err.kind.to_string()
            } else {
                format!("{path}: {}", err.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_load() {
        let (c, w) = Config::load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(c.public.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.console.addr.port(), 8081);
        assert!(c.is_embedded());
        assert!(w.is_empty());
        assert!(c.gateway_settings().records_on_idle_cpu);
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[public]\naddr = \"127.0.0.1:9000\"\n[console]\naddr = \"127.0.0.1:9001\"\n").unwrap();
        let e = env(&[("PORTICO_CONSOLE__ADDR", "127.0.0.1:9101"), ("PORTICO_ADMIN_PASSWORD", "a long password"), ("PORTICO_CONSOLE__SECURE_COOKIES", "false"), ("PORTICO_GATEWAY__RECORDS_ON_IDLE_CPU", "false")]);
        let o = Overrides { internal_addr: Some("127.0.0.1:9202".parse().unwrap()), ..Default::default() };
        let (c, _) = Config::load(Some(&file), &e, &o).unwrap();
        assert_eq!(c.public.addr.port(), 9000, "file over defaults");
        assert_eq!(c.console.addr.port(), 9101, "env over file");
        assert_eq!(c.internal.addr.port(), 9202, "flags over everything");
        assert_eq!(c.admin.password, "a long password");
        assert!(!c.console.secure_cookies);
        assert!(!c.gateway_settings().records_on_idle_cpu);
        assert!(c.redacted_toml().contains("password = \"********\""));
        assert!(!c.redacted_toml().contains("a long password"));
    }

    #[test]
    fn invalid_values_name_the_key() {
        let e = Config::load(None, &env(&[("PORTICO_PUBLIC__ADDR", "not an address")]), &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("public.addr"), "{e}");
        let e = Config::load(None, &env(&[("PORTICO_DATABASE__URL", "mysql://x")]), &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("database.url"), "{e}");
        let e = Config::load(None, &env(&[("PORTICO_MASTER_KEY", "short")]), &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("master_key"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[console]\nadress = \"x\"\n").unwrap();
        let e = Config::load(Some(&file), &[], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("adress"), "{e}");
    }

    #[test]
    fn unknown_variables_warn() {
        let (_, w) = Config::load(None, &env(&[("PORTICO_PUBLIK__ADDR", "x"), ("PORTICO_TEST_DATABASE_URL", "y")]), &Overrides::default()).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("PORTICO_PUBLIK__ADDR"));
    }

    #[test]
    fn masks_database_passwords() {
        assert_eq!(mask_url("postgres://u:secret@h/db"), "postgres://u:********@h/db");
    }
}

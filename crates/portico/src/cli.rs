//! The command line: `serve`, `migrate`, `config`, and operator commands that drive the
//! same operations as the management API (through the same `Platform`, acting as the
//! audited `cli` super admin), each with `-o json` for scripts.

use std::{io::BufRead, path::PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use portico_console::{
    apps::{AppIn, Environment, IntegrationMode, RotateIn},
    merchants::{DocumentsIn, InternalUserIn, MemberIn, MerchantState, ReasonIn, SignUpIn},
    operators::OperatorIn,
    Platform, Principal, Role,
};
use portico_core::page::PageQuery;
use serde::Serialize;
use serde_json::Value;

use crate::{
    config::{Config, LogFormat, Overrides, DEFAULTS},
    startup::{master_key, App},
};

#[derive(Debug, Parser)]
#[command(name = "portico", version, about = "Portico: API gateway, OAuth2 server and webhook service in one binary")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// A TOML configuration file layered over the built-in defaults.
    #[arg(long, short = 'c', global = true, env = "PORTICO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded database and the generated master key (setting data_dir).
    #[arg(long, global = true, env = "PORTICO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// sqlite:… or postgres://… instead of the embedded database (setting database.url).
    #[arg(long, global = true, env = "PORTICO_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Output of operator commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role in one process: public, console and internal listeners.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets masked), or the commented defaults.
    Config {
        /// Print the built-in defaults with their comments.
        #[arg(long)]
        defaults: bool,
    },
    /// Merchants and onboarding.
    #[command(subcommand)]
    Merchant(MerchantCmd),
    /// Apps and credentials.
    #[command(subcommand)]
    App(AppCmd),
    /// Platform operator accounts.
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// Sign parameters as a merchant would: prints the string to sign and the signature
    /// (`-o json`: {"canonical", "signature"}), to check your own implementation.
    Sign(SignArgs),
    /// The audit log, newest first.
    Audit {
        /// Only this merchant's entries.
        #[arg(long)]
        merchant: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Public listener address (setting public.addr).
    #[arg(long, env = "PORTICO_PUBLIC__ADDR")]
    pub public_addr: Option<std::net::SocketAddr>,
    /// Console listener address (setting console.addr).
    #[arg(long, env = "PORTICO_CONSOLE__ADDR")]
    pub console_addr: Option<std::net::SocketAddr>,
    /// Internal listener address (setting internal.addr).
    #[arg(long, env = "PORTICO_INTERNAL__ADDR")]
    pub internal_addr: Option<std::net::SocketAddr>,
    /// Log format, human or json (setting log.format).
    #[arg(long, env = "PORTICO_LOG__FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format must be human or json, not {other}")),
        }
    }
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// md5, hmac-sha256, rsa2, top-md5, top-hmac or top-hmac-sha256.
    #[arg(long)]
    pub method: String,
    /// The app secret (every method but rsa2).
    #[arg(long, required_unless_present = "private_key_file")]
    pub secret: Option<String>,
    /// PEM file of the app's RSA private key (rsa2).
    #[arg(long)]
    pub private_key_file: Option<PathBuf>,
    /// The parameters, as name=value (sign itself is ignored).
    #[arg(required = true)]
    pub params: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PageArgs {
    /// Items per page (1-200).
    #[arg(long)]
    pub limit: Option<u32>,
    /// The next_cursor of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MerchantCmd {
    /// List merchants.
    List {
        /// Only merchants in this state (draft, pending_review, active, rejected, suspended).
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one merchant (unmasked).
    Show { id: String },
    /// Sign a merchant up on its behalf: a draft merchant and its owner account.
    Create {
        #[arg(long)]
        email: String,
        /// The owner's password; read from standard input when absent.
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        name: String,
    },
    /// Write the company documents.
    Documents {
        id: String,
        #[arg(long)]
        company_name: String,
        #[arg(long)]
        licence_number: String,
        #[arg(long)]
        contact_name: String,
        #[arg(long)]
        contact_phone: String,
        #[arg(long)]
        description: String,
    },
    /// Send the documents for review.
    Submit { id: String },
    /// Approve a merchant under review.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a merchant under review, with a reason it reads.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Suspend an active merchant; its apps stop working.
    Suspend {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Reactivate a suspended merchant.
    Reactivate {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Bind the merchant to an internal system's user id (or --unbind).
    Bind {
        id: String,
        #[arg(long, required_unless_present = "unbind")]
        internal_user_id: Option<String>,
        #[arg(long)]
        unbind: bool,
    },
    /// List a merchant's members.
    Members {
        id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Add a member (owner or developer) to a merchant.
    AddMember {
        id: String,
        #[arg(long)]
        email: String,
        /// Read from standard input when absent.
        #[arg(long)]
        password: Option<String>,
        #[arg(long, value_parser = ["owner", "developer"])]
        role: String,
        #[arg(long)]
        display_name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCmd {
    /// List a merchant's apps.
    List {
        #[arg(long)]
        merchant: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one app and its app keys.
    Show {
        #[arg(long)]
        merchant: String,
        id: String,
    },
    /// Create an app; prints both secrets once.
    Create {
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["api", "h5", "sdk"], default_value = "api")]
        mode: String,
        #[arg(long)]
        callback_url: Option<String>,
        /// An allowed address or CIDR network; repeat for more.
        #[arg(long = "ip")]
        ip_allowlist: Vec<String>,
        /// A file with the app's RSA public key (PEM).
        #[arg(long)]
        rsa_public_key_file: Option<PathBuf>,
        /// An OAuth2 redirect URI; repeat for more.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
    },
    /// Rotate a secret; prints the new one once.
    Rotate {
        #[arg(long)]
        merchant: String,
        id: String,
        #[arg(long, value_parser = ["sandbox", "production"])]
        environment: String,
        /// How long the old secret keeps working (default: console.rotation_grace_secs).
        #[arg(long)]
        grace_seconds: Option<u64>,
    },
    /// Grant a scope (API group) to an app.
    Grant {
        #[arg(long)]
        merchant: String,
        id: String,
        scope: String,
    },
    /// Withdraw a scope from an app.
    Ungrant {
        #[arg(long)]
        merchant: String,
        id: String,
        scope: String,
    },
    /// Disable an app.
    Disable {
        #[arg(long)]
        merchant: String,
        id: String,
    },
    /// Enable a disabled app.
    Enable {
        #[arg(long)]
        merchant: String,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// List operator accounts.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Create an operator account.
    Create {
        #[arg(long)]
        email: String,
        /// Read from standard input when absent.
        #[arg(long)]
        password: Option<String>,
        #[arg(long, value_parser = ["super_admin", "business_manager", "product_manager"])]
        role: String,
        #[arg(long)]
        display_name: Option<String>,
    },
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut overrides = Overrides { data_dir: cli.global.data_dir.clone(), database_url: cli.global.database_url.clone(), ..Default::default() };
    if let Command::Serve(s) = &cli.command {
        overrides.public_addr = s.public_addr;
        overrides.console_addr = s.console_addr;
        overrides.internal_addr = s.internal_addr;
        overrides.log_format = s.log_format;
    }
    if let Command::Config { defaults: true } = cli.command {
        print!("{DEFAULTS}");
        return Ok(());
    }
    if let Command::Sign(args) = &cli.command {
        // Needs no configuration and no database.
        print(cli.global.output, &sign(args)?);
        return Ok(());
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let (config, warnings) = Config::load(cli.global.config.as_deref(), &env, &overrides)?;
    crate::telemetry::init(&config.log);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let out = cli.global.output;
    match cli.command {
        Command::Serve(_) => {
            let stop = shutdown_signal();
            let app = App::build(config).await?;
            app.run_until_stopped(stop).await
        }
        Command::Migrate => {
            let platform = open_platform(&config).await?;
            let versions = platform.store().applied_migrations().await?;
            print(out, &serde_json::json!({ "applied_migrations": versions }));
            Ok(())
        }
        Command::Config { .. } => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Command::Merchant(cmd) => merchant(&open_platform(&config).await?, cmd, out).await,
        Command::App(cmd) => app(&open_platform(&config).await?, cmd, out).await,
        Command::Operator(cmd) => operator(&open_platform(&config).await?, cmd, out).await,
        Command::Sign(_) => unreachable!("handled before loading the configuration"),
        Command::Audit { merchant, page } => {
            let p = open_platform(&config).await?;
            let result = p.audit_log(&Principal::System, merchant.as_deref(), &page_of(page)?).await?;
            print(out, &result);
            Ok(())
        }
    }
}

async fn open_platform(config: &Config) -> anyhow::Result<Platform> {
    if config.is_embedded() {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    }
    let store = portico_store::Store::open(&config.database_url(), config.database.max_connections)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
    Ok(Platform::new(store, master_key(config)?, config.console_settings()))
}

async fn merchant(p: &Platform, cmd: MerchantCmd, out: Output) -> anyhow::Result<()> {
    let me = Principal::System;
    let result = match cmd {
        MerchantCmd::List { state, page } => {
            let state = state
                .as_deref()
                .map(|s| MerchantState::parse(s).ok_or_else(|| anyhow::anyhow!("--state must be draft, pending_review, active, rejected or suspended")))
                .transpose()?;
            to_value(p.merchants(&me, state, &page_of(page)?).await?)
        }
        MerchantCmd::Show { id } => to_value(p.merchant(&me, &id).await?),
        MerchantCmd::Create { email, password, name } => {
            let password = password_or_stdin(password)?;
            to_value(p.sign_up(SignUpIn { email, password, merchant_name: name }).await?)
        }
        MerchantCmd::Documents { id, company_name, licence_number, contact_name, contact_phone, description } => to_value(
            p.submit_documents(&me, &id, DocumentsIn { company_name, licence_number, contact_name, contact_phone, business_description: description })
                .await?,
        ),
        MerchantCmd::Submit { id } => to_value(p.submit_for_review(&me, &id).await?),
        MerchantCmd::Approve { id, reason } => to_value(p.approve(&me, &id, ReasonIn { reason }).await?),
        MerchantCmd::Reject { id, reason } => to_value(p.reject(&me, &id, ReasonIn { reason: Some(reason) }).await?),
        MerchantCmd::Suspend { id, reason } => to_value(p.suspend(&me, &id, ReasonIn { reason: Some(reason) }).await?),
        MerchantCmd::Reactivate { id, reason } => to_value(p.reactivate(&me, &id, ReasonIn { reason }).await?),
        MerchantCmd::Bind { id, internal_user_id, unbind } => {
            let internal_user_id = if unbind { None } else { internal_user_id };
            to_value(p.bind_internal_user(&me, &id, InternalUserIn { internal_user_id }).await?)
        }
        MerchantCmd::Members { id, page } => to_value(p.members(&me, &id, &page_of(page)?).await?),
        MerchantCmd::AddMember { id, email, password, role, display_name } => {
            let password = password_or_stdin(password)?;
            let role = Role::parse(&role).expect("clap checked the role");
            to_value(p.add_member(&me, &id, MemberIn { email, password, role, display_name }).await?)
        }
    };
    print(out, &result);
    Ok(())
}

async fn app(p: &Platform, cmd: AppCmd, out: Output) -> anyhow::Result<()> {
    let me = Principal::System;
    let result = match cmd {
        AppCmd::List { merchant, page } => to_value(p.apps(&me, &merchant, &page_of(page)?).await?),
        AppCmd::Show { merchant, id } => to_value(p.app(&me, &merchant, &id).await?),
        AppCmd::Create { merchant, name, mode, callback_url, ip_allowlist, rsa_public_key_file, redirect_uris } => {
            let integration_mode = match mode.as_str() {
                "h5" => IntegrationMode::H5,
                "sdk" => IntegrationMode::Sdk,
                _ => IntegrationMode::Api,
            };
            let rsa_public_key = rsa_public_key_file
                .map(|f| std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display())))
                .transpose()?;
            to_value(p.create_app(&me, &merchant, AppIn { name, integration_mode, callback_url, ip_allowlist, rsa_public_key, redirect_uris, client_type: None }).await?)
        }
        AppCmd::Rotate { merchant, id, environment, grace_seconds } => {
            let env = Environment::parse(&environment).expect("clap checked the environment");
            to_value(p.rotate_secret(&me, &merchant, &id, env, RotateIn { grace_seconds }).await?)
        }
        AppCmd::Grant { merchant, id, scope } => to_value(p.grant_scope(&me, &merchant, &id, &scope).await?),
        AppCmd::Ungrant { merchant, id, scope } => to_value(p.revoke_scope(&me, &merchant, &id, &scope).await?),
        AppCmd::Disable { merchant, id } => to_value(p.set_app_enabled(&me, &merchant, &id, false).await?),
        AppCmd::Enable { merchant, id } => to_value(p.set_app_enabled(&me, &merchant, &id, true).await?),
    };
    print(out, &result);
    Ok(())
}

async fn operator(p: &Platform, cmd: OperatorCmd, out: Output) -> anyhow::Result<()> {
    let me = Principal::System;
    let result = match cmd {
        OperatorCmd::List { page } => to_value(p.operators(&me, &page_of(page)?).await?),
        OperatorCmd::Create { email, password, role, display_name } => {
            let password = password_or_stdin(password)?;
            let role = Role::parse(&role).expect("clap checked the role");
            to_value(p.create_operator(&me, OperatorIn { email, password, role, display_name }).await?)
        }
    };
    print(out, &result);
    Ok(())
}

/// `portico sign`: the string to sign and the signature, exactly as the server computes them.
fn sign(args: &SignArgs) -> anyhow::Result<Value> {
    use portico_signing::{params, SignMethod, Signer};
    let method = SignMethod::parse(&args.method).ok_or_else(|| {
        anyhow::anyhow!("--method must be one of {}", SignMethod::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "))
    })?;
    let pairs: Vec<(&str, &str)> = args
        .params
        .iter()
        .map(|p| p.split_once('=').ok_or_else(|| anyhow::anyhow!("parameter {p:?} is not name=value")))
        .collect::<anyhow::Result<_>>()?;
    let rsa_key;
    let signer = match (method, &args.secret, &args.private_key_file) {
        (SignMethod::Rsa2, _, Some(file)) => {
            use rsa::pkcs8::DecodePrivateKey;
            let pem = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            rsa_key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem)
                .or_else(|_| rsa::pkcs1::DecodeRsaPrivateKey::from_pkcs1_pem(&pem))
                .map_err(|_| anyhow::anyhow!("{} is not an RSA private key in PEM", file.display()))?;
            Signer::Rsa(&rsa_key)
        }
        (SignMethod::Rsa2, _, None) => anyhow::bail!("rsa2 needs --private-key-file"),
        (_, Some(secret), _) => Signer::Secret(secret),
        (_, None, _) => anyhow::bail!("{} needs --secret", method.as_str()),
    };
    let canonical = params::string_to_sign(method, &pairs);
    let signature = params::sign_string(method, &canonical, signer)?;
    Ok(serde_json::json!({ "canonical": canonical, "signature": signature }))
}

fn page_of(page: PageArgs) -> anyhow::Result<portico_core::page::PageRequest> {
    Ok(PageQuery { limit: page.limit, cursor: page.cursor }.validate()?)
}

fn password_or_stdin(password: Option<String>) -> anyhow::Result<String> {
    if let Some(p) = password {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("while reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn to_value<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("API types serialize")
}

/// Prints a result: pretty JSON, or a table for lists and `key: value` lines otherwise.
fn print<T: Serialize>(out: Output, value: &T) {
    let value = serde_json::to_value(value).expect("API types serialize");
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON values serialize"));
        return;
    }
    match value.get("items").and_then(Value::as_array) {
        Some(items) => {
            print_table(items);
            if let Some(Value::String(next)) = value.get("next_cursor") {
                println!("\nmore: --cursor {next}");
            }
        }
        None => print_fields(&value, ""),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(","),
        Value::Object(_) => "{…}".into(),
        other => other.to_string(),
    }
}

fn print_fields(value: &Value, indent: &str) {
    let Value::Object(map) = value else {
        println!("{indent}{}", scalar(value));
        return;
    };
    let width = map.keys().map(|k| k.len()).max().unwrap_or(0);
    for (k, v) in map {
        match v {
            Value::Object(_) => {
                println!("{indent}{k}:");
                print_fields(v, &format!("{indent}  "));
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                println!("{indent}{k}:");
                for item in items {
                    print_fields(item, &format!("{indent}  "));
                    println!();
                }
            }
            _ => println!("{indent}{k:width$}  {}", scalar(v)),
        }
    }
}

fn print_table(items: &[Value]) {
    let Some(Value::Object(first)) = items.first() else {
        println!("(none)");
        return;
    };
    let columns: Vec<&String> = first.iter().filter(|(_, v)| !v.is_object() && !v.is_array()).map(|(k, _)| k).take(6).collect();
    let rows: Vec<Vec<String>> = items.iter().map(|item| columns.iter().map(|c| scalar(&item[c.as_str()])).collect()).collect();
    let widths: Vec<usize> =
        columns.iter().enumerate().map(|(i, c)| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(c.len())).collect();
    let line = |cells: Vec<String>| cells.iter().zip(&widths).map(|(c, w)| format!("{c:w$}")).collect::<Vec<_>>().join("  ");
    println!("{}", line(columns.iter().map(|c| c.to_uppercase()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
}

/// Registers the SIGINT/SIGTERM handlers now (so a signal that arrives while the app is
/// starting is not lost to the default action) and resolves on the first signal.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match term.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = int => tracing::info!("received SIGINT"),
                _ = term => tracing::info!("received SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("received Ctrl-C");
        }
    }
}

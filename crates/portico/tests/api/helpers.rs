use std::time::Duration;

use portico::{config::Config, config::Overrides, App};
use portico_console::Platform;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

pub const ADMIN_EMAIL: &str = "root@portico.test";
pub const ADMIN_PASSWORD: &str = "admin password 1";
pub const PASSWORD: &str = "merchant password 1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL too when `PORTICO_TEST_DATABASE_URL` is set.
pub fn engines() -> Vec<Engine> {
    let mut e = vec![Engine::Sqlite];
    if std::env::var("PORTICO_TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty()) {
        e.push(Engine::Postgres);
    }
    e
}

/// Declares a test that runs once per engine against a fresh app, optionally with extra
/// `PORTICO_*` settings: `engine_test! { env [("K", "V")] async fn name(app: &TestApp) { … } }`.
macro_rules! engine_test {
    (async fn $name:ident($app:ident: &TestApp) $body:block) => {
        engine_test! { env [] async fn $name($app: &TestApp) $body }
    };
    (env [$(($k:expr, $v:expr)),* $(,)?] async fn $name:ident($app:ident: &TestApp) $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            async fn inner($app: &crate::helpers::TestApp) $body
            for engine in crate::helpers::engines() {
                let app = crate::helpers::TestApp::spawn_with(engine, &[$(($k, $v)),*]).await;
                inner(&app).await;
                app.stop().await;
            }
        }
    };
}

/// A running Portico on free ports, with helpers that take the expected status.
pub struct TestApp {
    pub engine: Engine,
    owns_database: bool,
    pub console: String,
    pub public: String,
    pub internal: String,
    pub platform: Platform,
    pub client: Client,
    pub database_url: String,
    pub master_key: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    dir: Option<tempfile::TempDir>,
}

/// A fresh PostgreSQL database for one test app.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let admin_url = std::env::var("PORTICO_TEST_DATABASE_URL").expect("set");
    let name = format!("portico_test_{}", portico_core::id::random_token("", 8));
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connect to PORTICO_TEST_DATABASE_URL");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await.expect("create database");
    let mut url = url::Url::parse(&admin_url).expect("a URL");
    url.set_path(&name);
    url.to_string()
}

impl TestApp {
    /// Starts an app with extra `PORTICO_*` settings.
    pub async fn spawn_with(engine: Engine, extra: &[(&str, &str)]) -> TestApp {
        Self::start(engine, extra, None).await
    }

    /// A second instance on the same database and master key, as in cluster mode.
    pub async fn spawn_peer(&self, extra: &[(&str, &str)]) -> TestApp {
        let mut peer = Self::start(self.engine, extra, Some((self.database_url.clone(), self.master_key.clone()))).await;
        peer.owns_database = false;
        peer
    }

    async fn start(engine: Engine, extra: &[(&str, &str)], shared: Option<(String, String)>) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let (database_url, master_key) = match shared {
            Some(s) => s,
            None => (
                match engine {
                    Engine::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("portico.db").display()),
                    Engine::Postgres => fresh_postgres_database().await,
                },
                portico_core::id::random_token("", 32),
            ),
        };
        let mut env: Vec<(String, String)> = [
            ("PORTICO_PUBLIC__ADDR", "127.0.0.1:0"),
            ("PORTICO_CONSOLE__ADDR", "127.0.0.1:0"),
            ("PORTICO_INTERNAL__ADDR", "127.0.0.1:0"),
            ("PORTICO_ADMIN_EMAIL", ADMIN_EMAIL),
            ("PORTICO_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("PORTICO_CONSOLE__SECURE_COOKIES", "false"),
            ("PORTICO_CONSOLE__FAILED_LOGIN_DELAY_MS", "1"),
            ("PORTICO_LOG__LEVEL", "warn"),
            ("PORTICO_MASTER_KEY", master_key.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.push(("PORTICO_DATABASE__URL".into(), database_url.clone()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let overrides = Overrides { data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
        let (config, _) = Config::load(None, &env, &overrides).expect("test configuration");
        let app = App::build(config).await.expect("app builds");
        let addrs = app.addresses();
        let platform = app.platform().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        TestApp {
            console: format!("http://{}", addrs.console),
            public: format!("http://{}", addrs.public),
            internal: format!("http://{}", addrs.internal),
            platform,
            client: Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            database_url,
            master_key,
            engine,
            owns_database: true,
            stop: Some(stop),
            server: Some(server),
            dir: Some(dir),
        }
    }

    /// Stops serving but keeps the database (and the data directory) for another
    /// process to open: what a restart looks like.
    pub async fn detach(mut self) -> Detached {
        self.halt().await;
        Detached { database_url: self.database_url.clone(), master_key: self.master_key.clone(), owns_database: self.owns_database, dir: self.dir.take().expect("the data directory") }
    }

    pub async fn stop(mut self) {
        self.halt().await;
        if self.owns_database {
            drop_test_database(&self.database_url).await;
        }
    }

    async fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("clean shutdown");
        }
    }

    /// Sends a request to the console listener and checks the status; returns the
    /// envelope after checking its shape.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>, expect: StatusCode) -> Value {
        let mut req = self.client.request(method.clone(), format!("{}{path}", self.console));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let trace_header = res.headers().get("x-trace-id").map(|v| v.to_str().unwrap().to_string());
        let text = res.text().await.expect("body");
        assert_eq!(status, expect, "{method} {path} answered {status}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        assert_envelope(&v);
        assert_eq!(v["trace_id"].as_str(), trace_header.as_deref(), "trace id echoed in header and envelope");
        v
    }

    pub async fn get(&self, path: &str, token: &str, expect: StatusCode) -> Value {
        self.call(Method::GET, path, Some(token), None, expect).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value, expect: StatusCode) -> Value {
        self.call(Method::POST, path, token, Some(body), expect).await
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> String {
        let v = self.post("/api/v1/auth/token", None, json!({ "email": email, "password": password }), StatusCode::OK).await;
        v["data"]["access_token"].as_str().expect("access token").to_string()
    }

    pub async fn admin(&self) -> String {
        self.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Signs up a merchant; returns (merchant id, owner token).
    pub async fn sign_up(&self, email: &str) -> (String, String) {
        let v = self
            .post("/api/v1/merchants/sign-up", None, json!({ "email": email, "password": PASSWORD, "merchant_name": "Shop" }), StatusCode::CREATED)
            .await;
        let id = v["data"]["merchant"]["id"].as_str().unwrap().to_string();
        (id, self.sign_in(email, PASSWORD).await)
    }

    /// A merchant taken through onboarding to `active`; returns (merchant id, owner token).
    pub async fn active_merchant(&self, email: &str) -> (String, String) {
        let (id, owner) = self.sign_up(email).await;
        self.call(Method::PUT, &format!("/api/v1/merchants/{id}/documents"), Some(&owner), Some(documents()), StatusCode::OK).await;
        self.post(&format!("/api/v1/merchants/{id}/submit"), Some(&owner), json!({}), StatusCode::OK).await;
        let admin = self.admin().await;
        self.post(&format!("/api/v1/merchants/{id}/approve"), Some(&admin), json!({ "reason": "documents verified" }), StatusCode::OK).await;
        (id, owner)
    }

    /// Creates an app; returns the creation response's `data`.
    pub async fn create_app(&self, merchant: &str, token: &str) -> Value {
        let v = self
            .post(&format!("/api/v1/merchants/{merchant}/apps"), Some(token), json!({ "name": "Checkout", "integration_mode": "api" }), StatusCode::CREATED)
            .await;
        v["data"].clone()
    }
}

/// A database and master key left behind by [`TestApp::detach`].
pub struct Detached {
    pub database_url: String,
    pub master_key: String,
    owns_database: bool,
    pub dir: tempfile::TempDir,
}

impl Detached {
    /// Drops the PostgreSQL database if the app had made it.
    pub async fn remove(self) {
        if self.owns_database {
            drop_test_database(&self.database_url).await;
        }
    }
}

/// Drops a database made by [`fresh_postgres_database`] (nothing to do for SQLite).
async fn drop_test_database(database_url: &str) {
    if let Ok(admin_url) = std::env::var("PORTICO_TEST_DATABASE_URL") {
        if let Some(name) = database_url.strip_prefix("postgres").and_then(|u| u.rsplit('/').next()) {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connect");
            let _ = sqlx::Executor::execute(&mut conn, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
        }
    }
}

pub fn documents() -> Value {
    json!({
        "company_name": "Hangzhou Example Trading Co., Ltd.",
        "licence_number": "91330100MA27XXXX1Q",
        "contact_name": "Li Lei",
        "contact_phone": "+86 138 0013 8000",
        "business_description": "Sells hoodies online."
    })
}

pub fn assert_envelope(v: &Value) {
    let obj = v.as_object().unwrap_or_else(|| panic!("envelope is an object: {v}"));
    for key in ["code", "msg", "data", "trace_id"] {
        assert!(obj.contains_key(key), "envelope has {key}: {v}");
    }
    assert!(v["code"].is_u64(), "numeric code: {v}");
    assert!(v["trace_id"].as_str().is_some_and(|t| t.len() >= 8), "trace id: {v}");
}

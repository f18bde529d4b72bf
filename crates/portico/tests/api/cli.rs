//! The `portico` binary as users run it: `config`, operator commands with `-o json`,
//! `migrate`, and `serve` with a graceful stop on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

fn portico(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_portico"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORTICO_DATA_DIR", dir)
        .env("PORTICO_ADMIN_PASSWORD", "admin password 1")
        .env("PORTICO_LOG__LEVEL", "warn");
    c
}

fn run_json(dir: &std::path::Path, args: &[&str]) -> Value {
    let out = portico(dir).args(args).args(["-o", "json"]).output().unwrap();
    assert!(out.status.success(), "portico {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("JSON from {args:?}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn config_prints_layers_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let out = portico(dir.path()).args(["config"]).env("PORTICO_MASTER_KEY", "ab".repeat(32)).env("PORTICO_PUBLIC__ADDR", "127.0.0.1:18080").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("addr = \"127.0.0.1:18080\""), "{text}");
    assert!(text.contains("master_key = \"********\""), "{text}");
    assert!(!text.contains("abababab"), "{text}");
    assert!(!text.contains("admin password 1"), "{text}");

    let out = portico(dir.path()).args(["config", "--defaults"]).output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("# Portico configuration"));

    let out = portico(dir.path()).args(["config"]).env("PORTICO_CONSOLE__LOCK_AFTER_FAILURES", "lots").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("console.lock_after_failures"), "{err}");
}

#[test]
fn operator_commands_drive_onboarding_and_apps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v = run_json(d, &["migrate"]);
    assert_eq!(v["applied_migrations"][0], 1);
    let v = run_json(d, &["merchant", "create", "--email", "cli@shop.cn", "--password", "cli password 1", "--name", "CLI Shop"]);
    let m = v["merchant"]["id"].as_str().unwrap().to_string();
    run_json(d, &[
        "merchant", "documents", &m, "--company-name", "CLI Shop Ltd", "--licence-number", "91330100MA27XXXX1Q",
        "--contact-name", "Wang", "--contact-phone", "13800138000", "--description", "Tests",
    ]);
    run_json(d, &["merchant", "submit", &m]);
    let v = run_json(d, &["merchant", "list", "--state", "pending_review"]);
    assert_eq!(v["items"][0]["id"], m.as_str());
    let v = run_json(d, &["merchant", "approve", &m, "--reason", "ok"]);
    assert_eq!(v["state"], "active");
    let v = run_json(d, &["app", "create", "--merchant", &m, "--name", "POS", "--ip", "10.0.0.0/8"]);
    let app_id = v["app"]["id"].as_str().unwrap().to_string();
    assert!(v["secrets"][1]["app_secret"].as_str().unwrap().starts_with("sk_live_"));
    let v = run_json(d, &["app", "rotate", "--merchant", &m, &app_id, "--environment", "production", "--grace-seconds", "60"]);
    assert!(v["app_secret"].as_str().unwrap().starts_with("sk_live_"));
    let v = run_json(d, &["app", "grant", "--merchant", &m, &app_id, "orders"]);
    assert_eq!(v["scopes"], serde_json::json!(["orders"]));
    let v = run_json(d, &["app", "list", "--merchant", &m]);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let v = run_json(d, &["audit", "--merchant", &m]);
    assert!(v["items"].as_array().unwrap().iter().any(|e| e["action"] == "merchant.approved" && e["actor_kind"] == "cli"));

    // Table output for people.
    let out = portico(d).args(["merchant", "list"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("ID") && text.contains(&m), "{text}");
    // Errors are clear and fail the command.
    let out = portico(d).args(["app", "create", "--merchant", &m, "--name", "Bad", "--ip", "10.0.0.1/8"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("ip_allowlist[0]"));
}

#[test]
fn serve_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let mut child = portico(dir.path())
        .args(["serve", "--public-addr", &format!("127.0.0.1:{}", ports[0]), "--console-addr", &format!("127.0.0.1:{}", ports[1])])
        .args(["--internal-addr", &format!("127.0.0.1:{}", ports[2])])
        .env("PORTICO_LOG__LEVEL", "info")
        .env("PORTICO_LOG__FORMAT", "json")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut serving = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("JSON log line: {line}"));
        if v["message"] == "portico is serving" {
            serving = true;
            break;
        }
    }
    assert!(serving);
    let health = std::net::TcpStream::connect(("127.0.0.1", ports[1]));
    assert!(health.is_ok());
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "{rest:?}");
}

/// Every parameter-style scheme round-trips: `portico sign` signs, the server's verifier
/// accepts, and the SDK computes the same signature.
#[tokio::test]
async fn portico_sign_round_trips_through_the_verifier() {
    use portico_auth::{replay::NonceStore, signed_request::{AppKeys, RequestVerifier}};
    use portico_signing::SignMethod;
    use rsa::pkcs8::EncodePrivateKey;

    let dir = tempfile::tempdir().unwrap();
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let key_file = dir.path().join("app.pem");
    std::fs::write(&key_file, key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap().as_bytes()).unwrap();
    let public = rsa::RsaPublicKey::from(&key);
    let verifier = RequestVerifier::new(Duration::from_secs(300), NonceStore::memory(Duration::from_secs(600)));
    let now = 1_700_000_000;
    for method in SignMethod::ALL {
        let params = ["app_key=ak_test_1", "method=order.get", "v=1.0", "timestamp=1700000000", &format!("sign_method={}", method.as_str()), "biz_content={\"id\":\"订单1\"}"];
        let mut cmd = portico(dir.path());
        cmd.args(["sign", "-o", "json", "--method", method.as_str()]);
        if method == SignMethod::Rsa2 {
            cmd.args(["--private-key-file", key_file.to_str().unwrap()]);
        } else {
            cmd.args(["--secret", "sk_test_secret"]);
        }
        let out = cmd.args(params).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let signature = v["signature"].as_str().unwrap();
        let mut pairs: Vec<(&str, &str)> = params.iter().map(|p| p.split_once('=').unwrap()).collect();
        pairs.push(("sign", signature));
        let secrets = [portico_signing::AppSecret::new("sk_test_secret".to_string())];
        let keys = |_: &str| Some(AppKeys { secrets: &secrets, rsa_public_key: Some(&public), sandbox: true, usable: true });
        verifier.verify_params(true, &pairs, keys, now).await.unwrap_or_else(|e| panic!("{method:?}: {e:?}"));
        if method != SignMethod::Rsa2 {
            assert_eq!(v["canonical"].as_str().unwrap(), portico_signing::params::string_to_sign(method, &pairs));
            let sdk = portico_sdk::Credentials::new("ak_test_1", "sk_test_secret");
            assert!(sdk.verify_params(method, &pairs, signature), "{method:?}: SDK agrees");
        }
    }
    let out = portico(dir.path()).args(["sign", "--method", "sha1", "--secret", "x", "a=1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hmac-sha256"));
}

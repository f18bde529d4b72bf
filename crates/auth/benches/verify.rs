//! How long the gateway spends verifying a signed request (no I/O: credentials come from
//! a closure, nonces from the in-memory cache). Run: `cargo bench -p portico-auth`.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use criterion::{criterion_group, criterion_main, Criterion};
use portico_auth::{
    replay::NonceStore,
    signed_request::{AppKeys, RequestVerifier},
};
use portico_signing::{header, params, AppSecret, SignMethod, Signer};

const NOW: i64 = 1_700_000_000;
const SECRET: &str = "sk_live_0123456789abcdef0123456789abcdef0123456789abcdef";

static SECRETS: std::sync::LazyLock<[AppSecret; 1]> = std::sync::LazyLock::new(|| [AppSecret::new(SECRET.to_string())]);

fn keys(_: &str) -> Option<AppKeys<'static>> {
    Some(AppKeys { secrets: &SECRETS[..], rsa_public_key: None, sandbox: false, usable: true })
}

/// A typical Taobao-style call: eight common parameters and a small JSON `biz_content`.
fn typical(method: SignMethod, nonce: Option<&str>) -> Vec<(String, String)> {
    let mut p = vec![
        ("app_key", "ak_live_00112233445566778899"),
        ("method", "order.trade.get"),
        ("v", "2.0"),
        ("timestamp", "1700000000"),
        ("sign_method", method.as_str()),
        ("format", "json"),
        ("session", "pt_ut_5f2b8c0d1e"),
        ("biz_content", r#"{"order_id":"2012120112304512","fields":"status,amount,buyer"}"#),
    ];
    if let Some(n) = nonce {
        p.push(("nonce", n));
    }
    let sig = params::sign(method, &p, Signer::Secret(SECRET)).unwrap();
    let mut out: Vec<(String, String)> = p.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    out.push(("sign".into(), sig));
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let verifier = RequestVerifier::new(Duration::from_secs(300), NonceStore::memory(Duration::from_secs(600)));

    for method in [SignMethod::HmacSha256, SignMethod::Md5, SignMethod::TopHmacSha256] {
        let p = typical(method, None);
        c.bench_function(&format!("verify params {} (GET, no nonce)", method.as_str()), |b| {
            b.iter(|| {
                let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                rt.block_on(verifier.verify_params(true, &refs, keys, NOW)).unwrap()
            })
        });
    }

    // With a fresh nonce each time, as on every POST: includes the replay cache.
    let counter = AtomicU64::new(0);
    c.bench_function("verify params hmac-sha256 (POST, with nonce)", |b| {
        b.iter_batched(
            || typical(SignMethod::HmacSha256, Some(&format!("n{}", counter.fetch_add(1, Ordering::Relaxed)))),
            |p| {
                let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                rt.block_on(verifier.verify_params(false, &refs, keys, NOW)).unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });

    let body = br#"{"order_id":"2012120112304512","amount":12800,"currency":"CNY","items":[{"sku":"hoodie-l","qty":1}]}"#;
    c.bench_function("verify header PORTICO-HMAC-SHA256 (with nonce)", |b| {
        b.iter_batched(
            || {
                let nonce = format!("h{}", counter.fetch_add(1, Ordering::Relaxed));
                header::sign(header::Scheme::HmacSha256, "ak_live_00112233445566778899", "POST", "/api/order/create", "1700000000", &nonce, body, Signer::Secret(SECRET)).unwrap()
            },
            |h| rt.block_on(verifier.verify_header(&h, "POST", "/api/order/create", body, keys, NOW)).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);

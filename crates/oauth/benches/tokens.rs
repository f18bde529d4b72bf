//! Token issuance (`client_credentials`, one database write each) and validation of a
//! cached access token, at the library level (no HTTP). `bench/oauth.sh` measures the
//! same over HTTP. Run: `cargo bench -p portico-oauth`.

use std::time::Duration;

use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use portico_console::{
    apps::{AppIn, IntegrationMode},
    merchants::{DocumentsIn, ReasonIn, SignUpIn},
    ConsoleSettings, Platform, Principal,
};
use portico_oauth::{OAuth, OAuthSettings};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (oauth, basic) = rt.block_on(async {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
        let store = portico_store::Store::open(&url, 4).await.unwrap();
        let (key, _) = portico_auth::MasterKey::generate();
        let p = Platform::new(store, key, ConsoleSettings::default());
        let me = Principal::System;
        let m = p
            .sign_up(SignUpIn { email: "bench@shop.cn".into(), password: "bench password 1".into(), merchant_name: "Bench".into() })
            .await
            .unwrap()
            .merchant
            .id;
        let docs = DocumentsIn {
            company_name: "Bench Ltd".into(),
            licence_number: "91330100MA27XXXX1Q".into(),
            contact_name: "Bench".into(),
            contact_phone: "13800138000".into(),
            business_description: "bench".into(),
        };
        p.submit_documents(&me, &m, docs).await.unwrap();
        p.submit_for_review(&me, &m).await.unwrap();
        p.approve(&me, &m, ReasonIn::default()).await.unwrap();
        let app = AppIn {
            name: "Bench".into(),
            integration_mode: IntegrationMode::Api,
            callback_url: None,
            ip_allowlist: vec![],
            rsa_public_key: None,
            redirect_uris: vec![],
            client_type: None,
        };
        let created = p.create_app(&me, &m, app).await.unwrap();
        let s = &created.secrets[1];
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", s.app_key, s.app_secret)));
        (OAuth::new(p, OAuthSettings::default()), basic)
    });

    c.bench_function("issue client_credentials token (SQLite, one write)", |b| {
        b.iter(|| rt.block_on(oauth.token_request(Some(&basic), b"grant_type=client_credentials", "127.0.0.1")).unwrap())
    });

    let token = rt.block_on(oauth.token_request(Some(&basic), b"grant_type=client_credentials", "127.0.0.1")).unwrap().access_token;
    rt.block_on(oauth.validate(&token)).unwrap().unwrap();
    c.bench_function("validate a cached access token", |b| b.iter(|| rt.block_on(oauth.validate(&token)).unwrap().unwrap()));
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);

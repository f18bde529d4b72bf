//! In cluster mode the nonce cache lives in Redis, so a request replayed to another
//! instance is refused too. Runs when `PORTICO_TEST_REDIS_URL` is set (CI sets it).

use std::time::Duration;

use portico_auth::replay::NonceStore;

#[tokio::test]
async fn a_nonce_used_on_one_instance_is_refused_on_another() {
    let Ok(url) = std::env::var("PORTICO_TEST_REDIS_URL") else {
        eprintln!("PORTICO_TEST_REDIS_URL is not set; the Redis nonce store is tested in CI");
        return;
    };
    // Two stores, two connections: two instances of the gateway.
    let a = NonceStore::redis(&url).await.unwrap();
    let b = NonceStore::redis(&url).await.unwrap();
    let nonce = portico_core::id::random_token("n", 8);
    assert!(a.first_use("ak_test_1", &nonce, Duration::from_secs(60)).await.unwrap());
    assert!(!b.first_use("ak_test_1", &nonce, Duration::from_secs(60)).await.unwrap(), "replayed on the other instance");
    assert!(!a.first_use("ak_test_1", &nonce, Duration::from_secs(60)).await.unwrap());
    assert!(b.first_use("ak_test_2", &nonce, Duration::from_secs(60)).await.unwrap(), "nonces are per app");
    // They expire with the window.
    let short = portico_core::id::random_token("s", 8);
    assert!(a.first_use("ak_test_1", &short, Duration::from_millis(200)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.first_use("ak_test_1", &short, Duration::from_secs(60)).await.unwrap());
}

#[tokio::test]
async fn an_unreachable_redis_is_an_unavailable_error() {
    let err = NonceStore::redis("redis://127.0.0.1:1/").await.err().expect("nothing listens on port 1");
    assert!(matches!(err, portico_core::Error::Unavailable(_)), "{err:?}");
}

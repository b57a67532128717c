//! The producer's admission limits.

use std::time::{Duration, Instant};

use celeriac_producer::admission::{AdmissionLimit, AdmissionMode};
use celeriac_producer::{Error, Producer, SendOptions};
use celeriac_schema::store::StoreSettings;
use celeriac_tests::{broker, namespace, redis_store};

use crate::support::Work;

#[tokio::test]
async fn reject_fails_with_rate_limited_and_wait_waits() {
    let ns = namespace("limits-admit");
    let store = std::sync::Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let producer = Producer::builder(&broker().await.url)
        .namespace(&*ns)
        .store(store)
        .admission_limit(AdmissionLimit::task("test.work", "1/m".parse().unwrap()))
        .admission_limit(
            AdmissionLimit::tenant("acme", "5/s".parse().unwrap()).mode(AdmissionMode::Wait),
        )
        .connect()
        .await
        .unwrap();
    producer
        .send::<Work>(&1, &SendOptions::new())
        .await
        .expect("the first send is admitted");
    match producer.send::<Work>(&1, &SendOptions::new()).await {
        Err(Error::RateLimited { key, retry_after }) => {
            assert_eq!(key, "admit:task:test.work");
            assert!(retry_after > Duration::from_secs(50), "{retry_after:?}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Another task name with a tenant limit in Wait mode: 6 sends at 5/s
    // (a burst of 1) take a second at least.
    struct Other;
    impl celeriac_schema::Task for Other {
        const NAME: &'static str = "test.other";
        type Input = u64;
        type Output = u64;
    }
    let started = Instant::now();
    for _ in 0..6 {
        producer
            .send::<Other>(&1, &SendOptions::new().tenant("acme"))
            .await
            .expect("waits, then sends");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited: {:?}",
        started.elapsed()
    );
    // A send's own mode wins over the limit's.
    match producer
        .send::<Other>(
            &1,
            &SendOptions::new()
                .tenant("acme")
                .admission(AdmissionMode::Reject),
        )
        .await
    {
        Err(Error::RateLimited { key, .. }) => assert_eq!(key, "admit:tenant:acme"),
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn without_a_store_the_bucket_is_the_producers_own() {
    let ns = namespace("limits-admit-local");
    let producer = Producer::builder(&broker().await.url)
        .namespace(&*ns)
        .admission_limit(AdmissionLimit::task("test.work", "1/h".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    producer
        .send::<Work>(&1, &SendOptions::new())
        .await
        .unwrap();
    let err = producer
        .send::<Work>(&1, &SendOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err}");
    assert!(err.is_transient(), "a later send may pass");
}

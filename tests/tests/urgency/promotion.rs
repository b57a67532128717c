//! Routing into class queues and promotion into the urgent queue by the
//! broker, before the tolerance runs out.

use std::time::{Duration, Instant};

use celeriac_producer::{Error, SendOptions};
use celeriac_schema::tolerance::MAX_TOLERANCE;
use celeriac_tests::{broker, drain, eventually, queue_len};

use crate::support::{setup, Mark, WAIT};

#[tokio::test]
async fn a_deferrable_task_nobody_takes_is_promoted_before_its_deadline() {
    let (ns, producer) = setup("tol-promote").await;
    let (_conn, channel) = broker().await.channel().await;
    let topo = ns.topology();
    let tolerance = Duration::from_millis(2_500);
    let sent = Instant::now();
    let id = producer
        .send::<Mark>(
            &"late".to_owned(),
            &SendOptions::new().delay_tolerance(tolerance),
        )
        .await
        .unwrap();
    // The smallest class (1 s) holds it first; nothing sits in the urgent
    // queue yet.
    let class = topo.tolerance_queue("default", 0);
    let held = queue_len(&channel, &class).await;
    let urgent_before = queue_len(&channel, &topo.work_queue("default")).await;
    assert_eq!(
        (held, urgent_before),
        (1, 0),
        "the class queue holds the task"
    );
    let promoted = eventually(WAIT, || async {
        queue_len(&channel, &topo.work_queue("default")).await == 1
    })
    .await;
    let arrived = sent.elapsed();
    assert!(promoted, "the task never reached the urgent queue");
    assert!(
        arrived < tolerance,
        "promoted after {arrived:?}, past its tolerance of {tolerance:?}"
    );
    assert!(
        arrived >= Duration::from_millis(900),
        "promoted too early: {arrived:?}"
    );
    assert_eq!(queue_len(&channel, &class).await, 0);
    let msgs = drain(&channel, &topo.work_queue("default")).await;
    let env = celeriac_schema::decode(&msgs[0].delivery.data).unwrap();
    assert_eq!((env.id, env.tolerance_ms), (id.id(), Some(2_500)));
}

#[tokio::test]
async fn a_delayed_deferrable_task_enters_its_class_after_the_eta() {
    let (ns, producer) = setup("tol-eta").await;
    let (_conn, channel) = broker().await.channel().await;
    let topo = ns.topology();
    let sent = Instant::now();
    producer
        .send::<Mark>(
            &"delayed".to_owned(),
            &SendOptions::new()
                .countdown(Duration::from_millis(300))
                .delay_tolerance(Duration::from_millis(2_500)),
        )
        .await
        .unwrap();
    let urgent = topo.work_queue("default");
    let promoted = eventually(WAIT, || async { queue_len(&channel, &urgent).await == 1 }).await;
    let arrived = sent.elapsed();
    assert!(promoted, "the delayed task never reached the urgent queue");
    // ETA 300 ms, then the 1 s class: due + tolerance is 2.8 s.
    assert!(
        arrived >= Duration::from_millis(1_200),
        "too early: {arrived:?}"
    );
    assert!(
        arrived < Duration::from_millis(2_800),
        "too late: {arrived:?}"
    );
}

#[tokio::test]
async fn a_short_tolerance_goes_straight_to_the_urgent_queue() {
    let (ns, producer) = setup("tol-short").await;
    let (_conn, channel) = broker().await.channel().await;
    producer
        .send::<Mark>(
            &"short".to_owned(),
            &SendOptions::new().delay_tolerance(Duration::from_millis(1_500)),
        )
        .await
        .unwrap();
    assert_eq!(
        queue_len(&channel, &ns.topology().work_queue("default")).await,
        1
    );
}

#[tokio::test]
async fn zero_and_too_long_tolerances_are_refused_and_nothing_is_sent() {
    let (ns, producer) = setup("tol-bad").await;
    let (_conn, channel) = broker().await.channel().await;
    for bad in [Duration::ZERO, MAX_TOLERANCE + Duration::from_secs(1)] {
        let err = producer
            .send::<Mark>(&"bad".to_owned(), &SendOptions::new().delay_tolerance(bad))
            .await
            .unwrap_err();
        match &err {
            Error::Schema(e) => assert_eq!(e.kind(), "InvalidTolerance", "{err}"),
            other => panic!("expected an invalid tolerance, got {other}"),
        }
        assert!(err.to_string().contains("tolerance"), "{err}");
    }
    assert_eq!(
        queue_len(&channel, &ns.topology().work_queue("default")).await,
        0
    );
}

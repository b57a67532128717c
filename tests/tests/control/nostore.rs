//! Revocations without a store: a broadcast that each worker holds until
//! its TTL lapses, for delayed and running tasks across three workers.

use std::time::Duration;

use celeriac_producer::control::RevokeOptions;
use celeriac_producer::SendOptions;
use celeriac_schema::now_ms;

use crate::support::{until, Cluster, Sleep, WAIT};

/// The `revoked` and `terminated` counts of every reply.
fn counts(done: &celeriac_producer::control::Revoked) -> Vec<(u64, u64)> {
    done.replies
        .replies
        .iter()
        .map(|reply| {
            assert!(reply.ok, "{reply:?}");
            let result = serde_json::to_value(reply.result.as_ref().unwrap()).unwrap();
            (
                result["revoked"].as_u64().unwrap(),
                result["terminated"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_delayed_task_revoked_by_broadcast_is_acked_without_running() {
    let mut cluster = Cluster::without_store("ctl-ns-delayed").await;
    cluster.three_workers(["n1", "n2", "n3"]).await;
    let (delayed, control) = cluster.two_delayed_sleeps(Duration::from_secs(3)).await;
    let ttl = Duration::from_secs(600);
    let before = now_ms();
    let done = cluster
        .producer
        .revoke(&[delayed.id().to_string()], &RevokeOptions::new().ttl(ttl))
        .await
        .unwrap();
    assert!(!done.stored, "no store: broadcast only");
    assert_eq!(counts(&done), [(1, 0); 3], "every worker holds it");

    // Each worker holds the revocation with the expiry the TTL gives.
    let ttl_ms = ttl.as_millis() as u64;
    for (worker, held) in cluster.held_revocations(["n1", "n2", "n3"]).await {
        let held = held.as_array().unwrap();
        assert_eq!(held.len(), 1, "{worker}: {held:?}");
        assert_eq!(held[0]["id"], delayed.id().to_string());
        let expires_at = held[0]["expires_at"].as_u64().unwrap();
        assert!(
            (before + ttl_ms..=now_ms() + ttl_ms).contains(&expires_at),
            "{worker}: expires at {expires_at}, sent at {before}"
        );
    }

    let runs = cluster.runs.clone();
    until("the other delayed task ran", || {
        runs.has_started(control.id())
    })
    .await;
    until("the revoked task came due and was acked", || {
        cluster.revoked_total() == 1
    })
    .await;
    assert!(
        !runs.has_started(delayed.id()),
        "the revoked task never ran"
    );
    let metrics: String = cluster.workers.iter().map(|w| w.metrics()).collect();
    assert!(
        metrics.contains("celeriac_tasks_revoked_total{queue=\"default\",task=\"test.sleep\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_broadcast_revocation_lapses_after_its_ttl() {
    let mut cluster = Cluster::without_store("ctl-ns-ttl").await;
    cluster.three_workers(["n1", "n2", "n3"]).await;
    let delayed = cluster
        .producer
        .send::<Sleep>(&10, &SendOptions::new().countdown(Duration::from_secs(3)))
        .await
        .unwrap();
    let done = cluster
        .producer
        .revoke(
            &[delayed.id().to_string()],
            &RevokeOptions::new().ttl(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    assert_eq!(counts(&done), [(1, 0); 3]);
    let runs = cluster.runs.clone();
    until("the task ran once its revocation lapsed", || {
        runs.has_started(delayed.id())
    })
    .await;
    assert_eq!(cluster.revoked_total(), 0);
    for (worker, held) in cluster.held_revocations(["n1", "n2", "n3"]).await {
        assert_eq!(held, serde_json::json!([]), "{worker} dropped it");
    }
}

#[tokio::test]
async fn terminate_by_broadcast_stops_a_running_handler() {
    let mut cluster = Cluster::without_store("ctl-ns-term").await;
    cluster.three_workers(["n1", "n2", "n3"]).await;
    let (handle, done, started) = cluster.terminate_a_running_sleep().await;
    let runs = cluster.runs.clone();
    assert!(!done.stored);
    let mut counts = counts(&done);
    counts.sort();
    assert_eq!(
        counts,
        [(1, 0), (1, 0), (1, 1)],
        "the worker running it stopped it"
    );
    until("the run is counted as revoked", || {
        cluster.revoked_total() == 1
    })
    .await;
    assert!(started.elapsed() < WAIT / 2, "{:?}", started.elapsed());
    assert!(
        runs.cancelled.lock().unwrap().contains(&handle.id()),
        "the handler saw its cancellation"
    );
    assert_eq!(runs.running.load(std::sync::atomic::Ordering::SeqCst), 0);
    until("no worker holds the delivery", || {
        cluster.workers.iter().all(|w| w.stats().in_flight == 0)
    })
    .await;
}

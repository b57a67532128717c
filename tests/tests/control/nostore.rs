//! Revocations without a store: a broadcast that each worker holds until
//! its TTL lapses, for delayed and running tasks across three workers.

use std::time::Duration;

use celeriac_producer::control::{ControlOptions, RevokeOptions};
use celeriac_producer::SendOptions;
use celeriac_schema::control::{Command, Inspect, KillSignal};
use celeriac_schema::now_ms;

use crate::support::{until, Cluster, Sleep, WAIT};

async fn three_workers(cluster: &mut Cluster) {
    for id in ["n1", "n2", "n3"] {
        cluster.start_worker(id, |b| b.concurrency(2)).await;
    }
}

fn revoked_total(cluster: &Cluster) -> u64 {
    cluster.workers.iter().map(|w| w.stats().revoked).sum()
}

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
    three_workers(&mut cluster).await;
    let countdown = SendOptions::new().countdown(Duration::from_secs(3));
    let delayed = cluster
        .producer
        .send::<Sleep>(&10, &countdown)
        .await
        .unwrap();
    let control = cluster
        .producer
        .send::<Sleep>(&10, &countdown)
        .await
        .unwrap();
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
    let replies = cluster
        .producer
        .control(
            Command::Inspect {
                what: Inspect::Revoked,
            },
            &ControlOptions::new().destination(["n1", "n2", "n3"]),
        )
        .await
        .unwrap();
    assert!(replies.missing.is_empty(), "{replies:?}");
    let ttl_ms = ttl.as_millis() as u64;
    for reply in &replies.replies {
        let held = serde_json::to_value(reply.result.as_ref().unwrap()).unwrap();
        let held = held.as_array().unwrap();
        assert_eq!(held.len(), 1, "{}: {held:?}", reply.worker);
        assert_eq!(held[0]["id"], delayed.id().to_string());
        let expires_at = held[0]["expires_at"].as_u64().unwrap();
        assert!(
            (before + ttl_ms..=now_ms() + ttl_ms).contains(&expires_at),
            "{}: expires at {expires_at}, sent at {before}",
            reply.worker
        );
    }

    let runs = cluster.runs.clone();
    until("the other delayed task ran", || {
        runs.has_started(control.id())
    })
    .await;
    until("the revoked task came due and was acked", || {
        revoked_total(&cluster) == 1
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
    three_workers(&mut cluster).await;
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
    assert_eq!(revoked_total(&cluster), 0);
    let replies = cluster
        .producer
        .control(
            Command::Inspect {
                what: Inspect::Revoked,
            },
            &ControlOptions::new().destination(["n1", "n2", "n3"]),
        )
        .await
        .unwrap();
    for reply in &replies.replies {
        let held = serde_json::to_value(reply.result.as_ref().unwrap()).unwrap();
        assert_eq!(held, serde_json::json!([]), "{} dropped it", reply.worker);
    }
}

#[tokio::test]
async fn terminate_by_broadcast_stops_a_running_handler() {
    let mut cluster = Cluster::without_store("ctl-ns-term").await;
    three_workers(&mut cluster).await;
    let handle = cluster
        .producer
        .send::<Sleep>(&60_000, &SendOptions::new())
        .await
        .unwrap();
    let runs = cluster.runs.clone();
    until("the task runs", || runs.has_started(handle.id())).await;
    let started = std::time::Instant::now();
    let done = cluster
        .producer
        .revoke(
            &[handle.id().to_string()],
            &RevokeOptions::new().terminate(KillSignal::Term),
        )
        .await
        .unwrap();
    assert!(!done.stored);
    let mut counts = counts(&done);
    counts.sort();
    assert_eq!(
        counts,
        [(1, 0), (1, 0), (1, 1)],
        "the worker running it stopped it"
    );
    until("the run is counted as revoked", || {
        revoked_total(&cluster) == 1
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

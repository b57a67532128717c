//! Resource pools across workers: the capacity is never exceeded, other
//! tasks are not held up, an unknown pool is a dead letter, and a killed
//! worker's units come back when its lease runs out.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::store::{PoolGrant, Store, StoreSettings};
use celeriac_schema::{headers, TaskState};
use celeriac_tests::test_tasks::{Record, RecordInput};
use celeriac_tests::{
    broker, drain, header_int, header_str, namespace, queue_len, read_record, record_file, redis,
    redis_store, WorkerProcess,
};

use crate::support::{Cluster, Work, WAIT};

#[tokio::test]
async fn a_pool_bounds_the_whole_cluster_and_leaves_other_tasks_alone() {
    let mut cluster = Cluster::new("limits-pool").await;
    for id in ["pool-a", "pool-b"] {
        cluster
            .start_worker(id, |b| b.concurrency(4).pool("gpu", 2))
            .await;
    }
    let mut pooled = Vec::new();
    for _ in 0..8 {
        pooled.push(
            cluster
                .producer
                .send::<Work>(&300, &SendOptions::new().pool("gpu", 1))
                .await
                .unwrap(),
        );
    }
    let mut plain = Vec::new();
    for _ in 0..6 {
        plain.push(
            cluster
                .producer
                .send::<Work>(&20, &SendOptions::new())
                .await
                .unwrap(),
        );
    }
    for handle in plain.iter().chain(&pooled) {
        handle.wait(WAIT).await.unwrap();
    }
    let runs = cluster.runs.all();
    assert_eq!(runs.len(), 14, "every task ran");
    assert_eq!(
        cluster.runs.pooled_peak.load(Ordering::SeqCst),
        2,
        "never more than the capacity at once"
    );
    // From the recorded times as well: at most 2 pooled runs overlap.
    let pooled_runs: Vec<_> = runs.iter().filter(|r| r.pooled).collect();
    for run in &pooled_runs {
        let overlapping = pooled_runs
            .iter()
            .filter(|o| o.start <= run.start && o.end > run.start)
            .count();
        assert!(overlapping <= 2, "{overlapping} holders at once");
    }
    let last_plain = runs.iter().filter(|r| !r.pooled).map(|r| r.end).max();
    let last_pooled = pooled_runs.iter().map(|r| r.end).max();
    assert!(
        last_plain < last_pooled,
        "tasks without a pool finished while the pooled ones waited"
    );
    let policy = cluster.store.policy().unwrap();
    let status = policy.pools().await.unwrap();
    assert_eq!(
        (status[0].capacity, status[0].in_use),
        (2, 0),
        "all released"
    );
}

#[tokio::test]
async fn a_pool_without_capacity_dead_letters_the_task() {
    let mut cluster = Cluster::new("limits-unknown").await;
    cluster
        .start_worker("unknown-a", |b| b.concurrency(2))
        .await;
    let handle = cluster
        .producer
        .send::<Work>(&1, &SendOptions::new().pool("tpu", 1))
        .await
        .unwrap();
    let err = handle.wait(WAIT).await.unwrap_err();
    let record = cluster.store.get(handle.id()).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Failed, "{err}");
    let error = record.error.unwrap();
    assert_eq!(error.error_type, "UnknownPool");
    assert!(error.message.contains("tpu"), "{}", error.message);
    assert!(cluster.runs.all().is_empty(), "it never ran");
    // The dead letter says so too (SPEC.md sections 5.2 and 6.1).
    let (_conn, channel) = broker().await.channel().await;
    let dlq = cluster.ns.topology().dead_letter_queue("default");
    let arrived =
        celeriac_tests::eventually(WAIT, || async { queue_len(&channel, &dlq).await >= 1 }).await;
    assert!(arrived, "no dead letter reached {dlq}");
    let letters = drain(&channel, &dlq).await;
    assert_eq!(letters.len(), 1, "one dead letter in {dlq}");
    let letter = &letters[0];
    assert_eq!(header_str(letter, headers::REASON), "rejected");
    assert_eq!(header_str(letter, headers::ERROR_TYPE), "UnknownPool");
    assert_eq!(header_int(letter, headers::ATTEMPTS), 0, "it never ran");
    assert_eq!(
        letter
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
        Some(handle.id().to_string().as_str()),
        "matched to what was sent by its message id"
    );
}

#[tokio::test]
async fn a_killed_workers_unit_comes_back_by_expiry_and_the_task_runs_again() {
    let ns = namespace("limits-crash");
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let settings = StoreSettings {
        lease_ttl: Duration::from_secs(2),
        ..StoreSettings::default()
    };
    let store = Arc::new(redis_store(&ns, settings).await);
    let policy = store.policy().unwrap();
    let record = record_file("limits-crash");
    let args = [
        "--redis-url",
        redis_url.as_str(),
        "--pool",
        "gpu=1",
        "--run-lease-ttl",
        "2s",
    ];
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker"));
    let mut first = WorkerProcess::start(bin, &broker.url, &ns, &record, &args);
    let producer = celeriac_producer::Producer::builder(&broker.url)
        .namespace(&*ns)
        .store(store.clone())
        .connect()
        .await
        .unwrap();
    let handle = producer
        .send::<Record>(
            &RecordInput { ms: 3000 },
            &SendOptions::new().pool("gpu", 1),
        )
        .await
        .unwrap();
    let held = celeriac_tests::eventually(WAIT, || async {
        policy
            .pools()
            .await
            .is_ok_and(|p| p.first().is_some_and(|p| p.in_use == 1))
    })
    .await;
    assert!(held, "the first worker holds the unit");
    first.signal("KILL");
    assert!(first.wait_timeout(WAIT).is_some(), "the worker died");
    // Its unit is still held: nobody else gets it until the lease ends.
    let needs = BTreeMap::from([("gpu".to_owned(), 1)]);
    assert!(matches!(
        policy
            .acquire_pools("probe", &needs, Duration::from_millis(1))
            .await
            .unwrap(),
        PoolGrant::Full { .. }
    ));
    let _second = WorkerProcess::start(bin, &broker.url, &ns, &record, &args);
    handle.wait(WAIT).await.unwrap();
    let lines = read_record(&record);
    assert_eq!(lines.len(), 1, "the run completed once: {lines:?}");
    assert!(lines[0].starts_with(&handle.id().to_string()));
    let status = policy.pools().await.unwrap();
    assert_eq!(status[0].in_use, 0, "released after the rerun");
}

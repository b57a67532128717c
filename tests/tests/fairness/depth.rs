//! A fair queue's depth metric counts the tasks waiting in its shards.

use std::sync::Arc;
use std::time::Duration;

use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_producer::SendOptions;
use celeriac_tests::{eventually, InProcessWorker};
use tokio::sync::Semaphore;

use crate::support::{fair_namespace, fair_producer, Work};

/// The value of `celeriac_queue_messages{queue="default",kind="work"}`.
fn work_depth(metrics: &str) -> Option<i64> {
    metrics
        .lines()
        .find(|l| l.starts_with("celeriac_queue_messages{") && l.contains("kind=\"work\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_depth_of_a_fair_queue_counts_its_shards() {
    let ns = fair_namespace("fair-depth", 4);
    let producer = fair_producer(&ns, 4).await;
    // Tasks hold their slot until the test lets them go.
    let gate = Arc::new(Semaphore::new(0));
    let mut registry = Registry::new();
    let held = gate.clone();
    registry.register::<Work, _, _>(move |_, _ctx: TaskContext| {
        let held = held.clone();
        async move {
            let _pass = held.acquire().await;
            Ok::<_, TaskError>(())
        }
    });
    let worker = InProcessWorker::start(&ns, registry, |w| {
        w.fair_queue("default", 4)
            .concurrency(1)
            .metrics_addr(([127, 0, 0, 1], 0).into())
            .queue_sample_interval(Duration::from_millis(100))
    })
    .await;
    let options = SendOptions::new().tenant("acme");
    for _ in 0..6 {
        producer.send::<Work>(&1, &options).await.unwrap();
    }
    // One runs and holds the shard's whole prefetch (the concurrency, 1);
    // five wait in acme's shard, none in the plain queue.
    let counted = eventually(Duration::from_secs(10), || async {
        work_depth(&worker.metrics()) == Some(5)
    })
    .await;
    assert!(counted, "depth {:?}", work_depth(&worker.metrics()));
    gate.add_permits(6);
    let drained = eventually(Duration::from_secs(10), || async {
        worker.stats().succeeded == 6 && work_depth(&worker.metrics()) == Some(0)
    })
    .await;
    assert!(
        drained,
        "depth {:?} after the drain",
        work_depth(&worker.metrics())
    );
    worker.stop().await;
}

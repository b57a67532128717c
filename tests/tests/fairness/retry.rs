//! A retried task of a fair queue waits out its backoff and comes back to
//! its tenant's shard, not to the plain queue.

use std::time::Duration;

use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_producer::SendOptions;
use celeriac_schema::fair::{shard_name, shard_of};
use celeriac_schema::{Backoff, RetryPolicy, Task};
use celeriac_tests::{broker, eventually, queue_len, InProcessWorker};
use tokio::sync::mpsc;

use crate::support::{fair_namespace, fair_producer, tenants_in_different_shards};

const SHARDS: u16 = 4;

/// `test.fair.fail-once`: fails its first attempt.
struct FailOnce;

impl Task for FailOnce {
    const NAME: &'static str = "test.fair.fail-once";
    type Input = ();
    type Output = ();
}

/// A registry whose `FailOnce` reports (attempt, tenant) of every run.
fn registry(runs: mpsc::UnboundedSender<(u32, Option<String>)>) -> Registry {
    let mut registry = Registry::new();
    registry.register::<FailOnce, _, _>(move |(), ctx: TaskContext| {
        let attempt = ctx.attempt();
        let _ = runs.send((attempt, ctx.envelope().tenant.clone()));
        async move {
            match attempt {
                0 => Err(TaskError::new("Flaky", "fails its first attempt")),
                _ => Ok(()),
            }
        }
    });
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_task_returns_to_its_tenants_shard() {
    let ns = fair_namespace("fair-retry", SHARDS);
    let topology = ns.topology().clone();
    let (_, tenant) = tenants_in_different_shards(SHARDS);
    let producer = fair_producer(&ns, u64::from(SHARDS)).await;
    let (runs_tx, mut runs) = mpsc::unbounded_channel();
    let fair = |w: celeriac_consumer::WorkerBuilder| w.fair_queue("default", u64::from(SHARDS));
    let worker = InProcessWorker::start(&ns, registry(runs_tx.clone()), fair).await;

    let policy = RetryPolicy {
        max_retries: 2,
        backoff: Backoff {
            initial_ms: 500,
            multiplier: 1.0,
            max_ms: 500,
            jitter: 0.0,
        },
    };
    let options = SendOptions::new().tenant(&tenant).retry(policy);
    producer.send::<FailOnce>(&(), &options).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(15), runs.recv()).await;
    assert_eq!(first.unwrap(), Some((0, Some(tenant.clone()))));
    // Stopped after the failed run settles: the retry, published with it,
    // waits out its backoff and lands in a queue nobody consumes.
    let stats = worker.stop().await;
    assert_eq!((stats.failed, stats.retried), (1, 1));

    let (_conn, channel) = broker().await.channel().await;
    let own = topology.work_queue(&shard_name("default", shard_of(&tenant, SHARDS)));
    assert!(
        eventually(Duration::from_secs(10), || async {
            queue_len(&channel, &own).await == 1
        })
        .await,
        "the retry never reached {own}"
    );
    assert_eq!(
        queue_len(&channel, &topology.work_queue("default")).await,
        0
    );
    for shard in (0..SHARDS).filter(|s| *s != shard_of(&tenant, SHARDS)) {
        let other = topology.work_queue(&shard_name("default", shard));
        assert_eq!(queue_len(&channel, &other).await, 0, "{other}");
    }

    // A worker started again runs the retry, tenant and all.
    let worker = InProcessWorker::start(&ns, registry(runs_tx), fair).await;
    let second = tokio::time::timeout(Duration::from_secs(15), runs.recv()).await;
    assert_eq!(second.unwrap(), Some((1, Some(tenant.clone()))));
    assert!(
        eventually(Duration::from_secs(10), || async {
            worker.stats().succeeded == 1
        })
        .await,
        "the retry did not succeed"
    );
    worker.stop().await;
    assert_eq!(queue_len(&channel, &own).await, 0);
}

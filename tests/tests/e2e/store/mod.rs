//! The state store end to end: typed results, task states, enqueue and
//! execution idempotency, run leases, and a worker whose store goes down.

mod keys;
mod outages;
mod records;
mod results;
mod rules;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_producer::{Error, Producer, SendOptions};
use celeriac_schema::builtin::{Echo, Fail, FailInput, Ping, Sleep, SleepInput};
use celeriac_schema::store::{
    Begin, Claim, MemoryStore, NodeProgress, Ready, Store, StoreSettings, TaskRecord, Update,
    WorkflowState, CLAIM_STALE_AFTER,
};
use celeriac_schema::workflow::{Node, Workflow};
use celeriac_schema::{Backoff, RetryPolicy, Task, TaskId, TaskState};
use celeriac_tests::{
    broker, celeriac_cli, eventually, namespace, queue_len, redis, redis_store,
    HOW_TO_PROVIDE_REDIS,
};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::support::{builtins, InProcessWorker};

/// A plain connection to the tests' Redis, to look at or tamper with what
/// the store keeps.
async fn raw_redis() -> celeriac_tests::redis_client::aio::MultiplexedConnection {
    celeriac_tests::redis_client_for(&redis().await.url)
        .unwrap_or_else(|e| panic!("{e}; {HOW_TO_PROVIDE_REDIS}"))
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}; {HOW_TO_PROVIDE_REDIS}"))
}

async fn producer_with(namespace: &str, store: Arc<dyn Store>) -> Producer {
    Producer::builder(&broker().await.url)
        .namespace(namespace)
        .store(store)
        .connect()
        .await
        .unwrap()
}

fn quick_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        backoff: Backoff {
            initial_ms: 100,
            multiplier: 1.0,
            max_ms: 100,
            jitter: 0.0,
        },
    }
}

fn short_leases() -> StoreSettings {
    StoreSettings {
        lease_ttl: Duration::from_secs(1),
        ..StoreSettings::default()
    }
}

/// A task that returns its idempotency key and counts its runs.
struct KeyEcho;
impl Task for KeyEcho {
    const NAME: &'static str = "t.key-echo";
    type Input = u64;
    type Output = String;
}

/// A task whose output is not stored.
struct Quiet;
impl Task for Quiet {
    const NAME: &'static str = "t.quiet";
    type Input = ();
    type Output = u32;
    const STORE_RESULT: bool = false;
}

fn counting_registry(
    runs: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) -> Registry {
    let mut registry = builtins();
    registry.register::<KeyEcho, _, _>(move |ms, ctx: TaskContext| {
        let (runs, running, peak) = (runs.clone(), running.clone(), peak.clone());
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, TaskError>(ctx.idempotency_key())
        }
    });
    registry.register::<Quiet, _, _>(|(), _ctx: TaskContext| async { Ok::<_, TaskError>(7) });
    registry
}

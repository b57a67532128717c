//! Shared helpers of the end-to-end tests.

use std::path::Path;
use std::time::Duration;

use celeriac_consumer::{Registry, StatsSnapshot, Worker, WorkerBuilder, WorkerHandle};
use celeriac_producer::Producer;
use celeriac_schema::topology::DELAY_LEVELS;
use celeriac_schema::Topology;
use celeriac_tests::{broker, eventually, WorkerProcess};
use lapin::options::QueueDeleteOptions;
use lapin::Channel;

/// The worker binary under test.
pub fn worker_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker"))
}

/// A producer on `namespace`.
pub async fn producer(namespace: &str) -> Producer {
    let broker = broker().await;
    Producer::builder(&broker.url)
        .namespace(namespace)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("producer: {e}"))
}

/// Starts a worker process on `namespace`.
pub async fn worker(namespace: &str, record: &Path, args: &[&str]) -> WorkerProcess {
    let broker = broker().await;
    WorkerProcess::start(worker_bin(), &broker.url, namespace, record, args)
}

pub use celeriac_tests::test_tasks::{Crash, Record, RecordInput};

/// A worker running inside the test process, so its counters can be read.
pub(crate) struct InProcessWorker {
    handle: WorkerHandle,
    run: tokio::task::JoinHandle<celeriac_consumer::Result<StatsSnapshot>>,
}

impl InProcessWorker {
    /// Builds a worker on `namespace` (tuned by `configure`), runs it and
    /// waits until it consumes.
    pub(crate) async fn start(
        namespace: &str,
        registry: Registry,
        configure: impl FnOnce(WorkerBuilder) -> WorkerBuilder,
    ) -> Self {
        let builder = Worker::builder(&broker().await.url, registry)
            .namespace(namespace)
            .grace(Duration::from_secs(5));
        let worker = configure(builder).build().unwrap();
        let handle = worker.handle();
        let run = tokio::spawn(worker.run());
        let ready = eventually(Duration::from_secs(15), || async { handle.is_ready() }).await;
        assert!(ready, "the in-process worker never became ready");
        InProcessWorker { handle, run }
    }

    pub(crate) fn stats(&self) -> StatsSnapshot {
        self.handle.stats()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.handle.is_ready()
    }

    /// Shuts the worker down and returns its final counters.
    pub(crate) async fn stop(self) -> StatsSnapshot {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(15), self.run)
            .await
            .expect("the worker stops within its grace period")
            .expect("the worker task does not panic")
            .expect("the worker stops cleanly")
    }
}

/// A registry with the built-in tasks.
pub(crate) fn builtins() -> Registry {
    let mut registry = Registry::new();
    celeriac_consumer::builtin::register(&mut registry);
    registry
}

/// Deletes the namespace's queues so the broker does not keep them; returns
/// how many messages they still held.
pub(crate) async fn delete_queues(channel: &Channel, topology: &Topology) -> u32 {
    let mut queues = vec![
        topology.work_queue("default"),
        topology.dead_letter_queue("default"),
    ];
    queues.extend((0..DELAY_LEVELS).map(|level| topology.delay_queue(level)));
    let mut held = 0;
    for queue in queues {
        held += channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("delete {queue}: {e}"));
    }
    held
}

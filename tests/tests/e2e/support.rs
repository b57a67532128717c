//! Shared helpers of the end-to-end tests.

use std::path::Path;

use celeriac_consumer::Registry;
use celeriac_producer::Producer;
use celeriac_schema::topology::DELAY_LEVELS;
use celeriac_schema::Topology;
use celeriac_tests::{broker, WorkerProcess};
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

pub(crate) use celeriac_tests::InProcessWorker;

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

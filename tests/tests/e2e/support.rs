//! Shared helpers of the end-to-end tests.

use std::path::Path;

use celeriac_producer::Producer;
use celeriac_tests::{broker, WorkerProcess};

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

/// Input of the worker's `test.record` task.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordInput {
    /// How long the task sleeps before recording its run.
    pub ms: u64,
}

/// `test.record`: sleeps `ms`, then appends `{task_id} {attempt} {pid}` to
/// the worker's record file.
pub struct Record;

impl celeriac_schema::Task for Record {
    const NAME: &'static str = "test.record";
    type Input = RecordInput;
    type Output = ();
}

/// `test.crash`: aborts the worker process.
#[allow(dead_code)]
pub struct Crash;

impl celeriac_schema::Task for Crash {
    const NAME: &'static str = "test.crash";
    type Input = ();
    type Output = ();
}

//! Fault injection: a worker killed mid-task, its connection closed by the
//! broker, SIGTERM with and without enough grace, and a poison message that
//! crashes every worker that takes it. Every task is counted: none may be
//! lost, and a task runs twice only where at-least-once delivery allows it.

mod crashes;
mod poison;
mod shutdown;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_producer::{Producer, SendOptions};
use celeriac_schema::TaskId;
use celeriac_tests::lapin::types::AMQPValue;
use celeriac_tests::lapin::Channel;
use celeriac_tests::{broker, eventually, namespace, read_record, record_file, WorkerProcess};

use crate::support::{producer, worker, Crash, Record, RecordInput};

/// One run recorded by `test.record`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    task_id: String,
    pid: u32,
}

fn runs(record: &Path) -> Vec<Run> {
    read_record(record)
        .iter()
        .map(|line| {
            let mut words = line.split(' ');
            let task_id = words.next().unwrap_or_default().to_owned();
            let pid = words
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| {
                    panic!("malformed record line {line:?}");
                });
            Run { task_id, pid }
        })
        .collect()
}

/// How many times each task ran.
fn run_counts(runs: &[Run]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for run in runs {
        *counts.entry(run.task_id.as_str()).or_insert(0) += 1;
    }
    counts
}

fn id_set(ids: &[TaskId]) -> HashSet<String> {
    ids.iter().map(ToString::to_string).collect()
}

/// Sends `n` `test.record` tasks that sleep `ms` each.
async fn send_records(producer: &Producer, n: usize, ms: u64) -> Vec<TaskId> {
    producer
        .send_batch::<Record>((0..n).map(|_| RecordInput { ms }), &SendOptions::new())
        .await
        .unwrap_or_else(|e| panic!("send {n} record tasks: {e}"))
}

/// Ready messages and consumers of a queue that must exist; unlike
/// `queue_len`, an error fails the test instead of reading as 0.
async fn queue_stats(channel: &Channel, queue: &str) -> (u32, u32) {
    celeriac_tests::queue_stats(channel, queue)
        .await
        .unwrap_or_else(|e| panic!("passive declare of {queue}: {e}"))
}

async fn ready(channel: &Channel, queue: &str) -> u32 {
    queue_stats(channel, queue).await.0
}

/// Waits until `queue` has at least `n` consumers.
async fn wait_for_consumers(channel: &Channel, queue: &str, n: u32) {
    let ok = eventually(Duration::from_secs(20), || async {
        queue_stats(channel, queue).await.1 >= n
    })
    .await;
    assert!(ok, "{queue} never got {n} consumer(s)");
}

/// Whether the worker process is still running.
fn alive(worker: &mut WorkerProcess) -> bool {
    worker.wait_timeout(Duration::ZERO).is_none()
}

/// Sends SIGTERM and waits for a clean exit; returns how long it took.
fn terminate(worker: &mut WorkerProcess, within: Duration) -> Duration {
    let start = Instant::now();
    worker.signal("TERM");
    let status = worker
        .wait_timeout(within)
        .unwrap_or_else(|| panic!("the worker did not exit within {within:?} of SIGTERM"));
    assert!(
        status.success(),
        "the worker exited with {status} after SIGTERM"
    );
    start.elapsed()
}

/// Broker pids of the connections a worker named `celeriac-worker {id}`.
async fn worker_connections(worker_id: &str) -> Vec<String> {
    let out = broker()
        .await
        .rabbitmqctl(&[
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .await;
    let name = format!("{{\"connection_name\",\"celeriac-worker {worker_id}\"}}");
    out.lines()
        .filter(|line| line.contains(&name))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Waits until the worker has exactly one connection and it is not `old`.
async fn wait_for_reconnection(worker_id: &str, old: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let [one] = worker_connections(worker_id).await.as_slice() {
            if one != old {
                return Some(one.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Longest a test here may take: a wedged broker fails it instead of
/// hanging the run.
const TEST_LIMIT: Duration = Duration::from_secs(80);

async fn bounded(test: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, test).await.is_err() {
        panic!(
            "the test did not finish within {TEST_LIMIT:?}; if AMQP connections hang, the broker may be \
             out of file handles (`rabbitmqctl eval 'file_handle_cache:info().'`)"
        );
    }
}

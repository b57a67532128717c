//! `rabbitmqctl close_all_connections` in the middle of a run: nothing is
//! lost, the worker reconnects and resumes consuming by itself, and the
//! producer's next sends go through on fresh connections.
//!
//! It closes every connection on the broker, so it lives in a test binary
//! of its own: cargo runs test binaries one after another, never beside the
//! end-to-end suite.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use celeriac_producer::{Producer, SendOptions};
use celeriac_tests::test_tasks::{Record, RecordInput};
use celeriac_tests::{broker, eventually, namespace, read_record, record_file, WorkerProcess};

const TOTAL: usize = 3000;
const BATCH: usize = 100;

/// Sends a batch, retrying transient errors (a batch cut by the fault may
/// have been partly delivered: duplicates are allowed, losses are not).
async fn send(producer: &Producer, ids: &mut HashSet<String>) {
    for attempt in 0..50 {
        match producer
            .send_batch::<Record>(
                (0..BATCH).map(|_| RecordInput { ms: 2 }),
                &SendOptions::new(),
            )
            .await
        {
            Ok(sent) => {
                ids.extend(sent.iter().map(ToString::to_string));
                return;
            }
            Err(e) if e.is_transient() => {
                eprintln!("send attempt {attempt}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("send failed for good: {e}"),
        }
    }
    panic!("no send went through after the fault");
}

fn ran(record: &Path) -> HashSet<String> {
    read_record(record)
        .iter()
        .filter_map(|l| l.split(' ').next().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_every_connection_loses_nothing() {
    let ns = namespace("closeall");
    let broker = broker().await;
    let producer = Producer::builder(&broker.url)
        .namespace(&ns)
        .connect()
        .await
        .unwrap();
    let record = record_file("closeall");
    let mut worker = WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &broker.url,
        &ns,
        &record,
        &["--concurrency", "8"],
    );

    let mut ids = HashSet::new();
    while ids.len() < TOTAL / 2 {
        send(&producer, &mut ids).await;
    }
    let busy = eventually(Duration::from_secs(30), || async {
        ran(&record).len() >= 200
    })
    .await;
    assert!(busy, "the worker ran no tasks before the fault");

    broker
        .rabbitmqctl(&["close_all_connections", "fault injected by a test"])
        .await;

    while ids.len() < TOTAL {
        send(&producer, &mut ids).await;
    }
    let all_ran = eventually(Duration::from_secs(90), || async {
        ids.is_subset(&ran(&record))
    })
    .await;
    let missing = ids.difference(&ran(&record)).count();
    assert!(all_ran, "{missing} of {} tasks never ran", ids.len());
    assert!(
        worker.wait_timeout(Duration::ZERO).is_none(),
        "the worker process died instead of reconnecting"
    );
    let runs = read_record(&record).len();
    println!(
        "{} tasks, {runs} runs: {} ran again after the fault",
        ids.len(),
        runs - ran(&record).len()
    );

    worker.signal("TERM");
    let status = worker.wait_timeout(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker did not stop cleanly after recovering: {status:?}"
    );
}

//! Failures end where the design says they do: retries wait inside their
//! backoff window; exhausted, unknown, malformed, panicking and rejected
//! tasks land in the dead-letter queue with the failure in headers and the
//! body untouched, while the worker keeps consuming; expired tasks are
//! dropped and counted; publishing errors are reported, never hung on.

mod publishing;
mod rejected;
mod retries;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_producer::publish::{self, Route};
use celeriac_producer::{Error as ProducerError, Producer, SendOptions};
use celeriac_schema::builtin::{Fail, FailInput, Panic, Ping};
use celeriac_schema::{headers, now_ms, Backoff, Envelope, RetryPolicy, Task, TaskId};
use celeriac_tests::{
    broker, drain, eventually, header_int, header_str, queue_len, read_record, WorkerProcess,
};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};

use crate::support::{
    builtins, delete_queues, producer, worker, InProcessWorker, Record, RecordInput,
};

/// How long a dead letter may take to appear.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(20);

/// `test.flaky`: fails every time, recording when each attempt started.
struct Flaky;

impl Task for Flaky {
    const NAME: &'static str = "test.flaky";
    type Input = ();
    type Output = ();
}

/// `test.perishable`: counts its runs; used to show expired tasks never run.
struct Perishable;

impl Task for Perishable {
    const NAME: &'static str = "test.perishable";
    type Input = ();
    type Output = ();
}

/// Waits until `queue` holds exactly `expected` messages, then takes them.
async fn take_dead_letters(channel: &Channel, queue: &str, expected: u32) -> Vec<BasicGetMessage> {
    let arrived = eventually(DEAD_LETTER_TIMEOUT, || async {
        queue_len(channel, queue).await >= expected
    })
    .await;
    let held = queue_len(channel, queue).await;
    assert!(
        arrived,
        "{queue} holds {held} messages, expected {expected}"
    );
    let messages = drain(channel, queue).await;
    assert_eq!(
        messages.len(),
        expected as usize,
        "unexpected messages in {queue}"
    );
    messages
}

/// Checks the headers every worker-made dead letter carries.
fn assert_dead_letter(
    msg: &BasicGetMessage,
    reason: &str,
    error_type: &str,
    attempts: i64,
    worker_id: &str,
    since_ms: u64,
) {
    assert_eq!(
        header_str(msg, headers::REASON),
        reason,
        "dead-letter reason"
    );
    assert_eq!(
        header_str(msg, headers::ERROR_TYPE),
        error_type,
        "error type"
    );
    assert_eq!(header_int(msg, headers::ATTEMPTS), attempts, "attempts");
    assert_eq!(header_str(msg, headers::WORKER), worker_id, "worker");
    assert_eq!(header_str(msg, headers::QUEUE), "default", "logical queue");
    let failed_at =
        u64::try_from(header_int(msg, headers::FAILED_AT)).expect("failed-at is positive");
    let now = now_ms();
    assert!(
        (since_ms..=now).contains(&failed_at),
        "failed-at {failed_at} is not between the test start {since_ms} and now {now}"
    );
}

/// Sends a `test.record` task to a worker process and waits for its run: the
/// process is alive and still consuming.
async fn assert_keeps_consuming(
    producer: &Producer,
    process: &mut WorkerProcess,
    record: &std::path::Path,
) {
    assert!(
        process.wait_timeout(Duration::ZERO).is_none(),
        "the worker process exited"
    );
    let id = producer
        .send::<Record>(&RecordInput { ms: 0 }, &SendOptions::new())
        .await
        .unwrap()
        .id()
        .to_string();
    let ran = eventually(Duration::from_secs(20), || async {
        read_record(record).iter().any(|line| line.starts_with(&id))
    })
    .await;
    assert!(
        ran,
        "the worker stopped consuming: a task sent afterwards never ran"
    );
    // Lines read `{task_id} {attempt} {pid}`: the same process ran it.
    let line = read_record(record)
        .into_iter()
        .find(|line| line.starts_with(&id))
        .unwrap();
    assert_eq!(
        line.rsplit(' ').next(),
        Some(process.pid().to_string().as_str()),
        "the task ran in another process: {line}"
    );
    assert!(
        process.wait_timeout(Duration::ZERO).is_none(),
        "the worker process exited"
    );
}

/// Stops a worker process gracefully, so its last acks reach the broker.
fn stop_process(mut process: WorkerProcess) {
    process.signal("TERM");
    let status = process.wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker process did not exit cleanly on SIGTERM: {status:?}"
    );
}

/// The end of every worker-process test: the worker still runs new tasks,
/// stops cleanly, and no message is left in the namespace.
async fn finish(
    producer: &Producer,
    mut process: WorkerProcess,
    record: &std::path::Path,
    channel: &Channel,
    topology: &celeriac_schema::Topology,
) {
    assert_keeps_consuming(producer, &mut process, record).await;
    stop_process(process);
    assert_eq!(
        delete_queues(channel, topology).await,
        0,
        "a message was left behind"
    );
}

//! Failures end where the design says they do: retries wait inside their
//! backoff window; exhausted, unknown, malformed, panicking and rejected
//! tasks land in the dead-letter queue with the failure in headers and the
//! body untouched, while the worker keeps consuming; expired tasks are
//! dropped and counted; publishing errors are reported, never hung on.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_inside_their_backoff_window() {
    let ns = celeriac_tests::namespace("retry-window");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let attempts: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let mut registry = Registry::new();
    let seen = attempts.clone();
    registry.register::<Flaky, _, _>(move |(), ctx: TaskContext| {
        seen.lock().unwrap().push((ctx.attempt(), Instant::now()));
        async { Err(TaskError::new("Flaky", "fails on purpose")) }
    });
    let worker = InProcessWorker::start(&ns, registry, |b| b).await;

    let backoff = Backoff {
        initial_ms: 1000,
        multiplier: 2.0,
        max_ms: 60_000,
        jitter: 0.5,
    };
    let policy = RetryPolicy {
        max_retries: 3,
        backoff,
    };
    producer
        .send::<Flaky>(&(), &SendOptions::new().retry(policy))
        .await
        .unwrap();

    let (_conn, channel) = broker().await.channel().await;
    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 1).await;
    assert_eq!(header_str(&dead[0], headers::REASON), "retries-exhausted");

    let attempts = attempts.lock().unwrap().clone();
    let numbers: Vec<u32> = attempts.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [0, 1, 2, 3], "every attempt runs once, in order");
    // The broker adds latency on top of the chosen wait: the wait is rounded
    // up to the 100 ms delay unit and hops through the delay cascade.
    let latency = Duration::from_millis(600);
    for (n, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1].1 - pair[0].1;
        let (low, high) = backoff.window(n as u32);
        assert!(
            gap >= low && gap <= high + latency,
            "attempt {} ran {gap:?} after attempt {n}, outside [{low:?}, {high:?} + {latency:?}]",
            n + 1
        );
    }

    let stats = worker.stop().await;
    assert_eq!(
        (stats.failed, stats.retried, stats.dead_lettered),
        (4, 3, 1),
        "four failed runs, three retries, one dead letter"
    );
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_are_dead_lettered_with_failure_headers() {
    let ns = celeriac_tests::namespace("exhausted");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let worker_id = format!("{ns}-worker");
    let id_for_builder = worker_id.clone();
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.worker_id(id_for_builder)).await;
    let since = now_ms();

    let policy = RetryPolicy {
        max_retries: 2,
        backoff: Backoff::fixed(Duration::from_millis(200)),
    };
    let input = FailInput {
        message: "card declined by the bank".into(),
        fatal: false,
    };
    let id = producer
        .send::<Fail>(&input, &SendOptions::new().retry(policy))
        .await
        .unwrap()
        .id();

    let (_conn, channel) = broker().await.channel().await;
    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 1).await;
    let msg = &dead[0];
    assert_dead_letter(msg, "retries-exhausted", "TaskFailed", 3, &worker_id, since);
    let message = header_str(msg, headers::ERROR_MESSAGE);
    assert!(
        message.contains("card declined by the bank"),
        "error message {message:?} lacks the task's message"
    );
    assert_eq!(header_str(msg, headers::TASK), Fail::NAME);
    assert_eq!(
        header_int(msg, headers::ATTEMPT),
        2,
        "the last attempt's number"
    );
    let envelope =
        celeriac_schema::decode(&msg.delivery.data).expect("the dead letter's body decodes");
    assert_eq!(envelope.id, id, "the dead letter is the task that was sent");
    assert_eq!(envelope.attempt, 2);
    assert_eq!(
        msg.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string()),
        Some(id.to_string())
    );

    // The worker keeps going.
    producer
        .send::<Ping>(&(), &SendOptions::new())
        .await
        .unwrap();
    let pinged = eventually(Duration::from_secs(10), || async {
        worker.stats().succeeded == 1
    })
    .await;
    assert!(
        pinged,
        "a ping sent after the dead letter was not processed"
    );

    let stats = worker.stop().await;
    assert_eq!(
        (
            stats.failed,
            stats.retried,
            stats.dead_lettered,
            stats.succeeded
        ),
        (3, 2, 1, 1)
    );
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

#[tokio::test]
async fn unknown_task_names_are_dead_lettered() {
    let ns = celeriac_tests::namespace("unknown-task");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let record = celeriac_tests::record_file("unknown-task");
    let worker_id = format!("{ns}-worker");
    let process = worker(&ns, &record, &["--worker-id", &worker_id]).await;
    let since = now_ms();

    let task = producer
        .prepare_value(
            "test.nobody-home",
            rmpv::Value::from("hello"),
            &SendOptions::new(),
        )
        .unwrap();
    let id = producer.send_prepared(&task).await.unwrap();

    let (_conn, channel) = broker().await.channel().await;
    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 1).await;
    let msg = &dead[0];
    assert_dead_letter(msg, "unknown-task", "UnknownTask", 0, &worker_id, since);
    let message = header_str(msg, headers::ERROR_MESSAGE);
    assert!(
        message.contains("test.nobody-home"),
        "error message {message:?} does not name the task"
    );
    let envelope =
        celeriac_schema::decode(&msg.delivery.data).expect("the dead letter's body decodes");
    assert_eq!(envelope.id, id);
    assert_eq!(
        envelope.input,
        rmpv::Value::from("hello"),
        "the input is kept"
    );

    finish(&producer, process, &record, &channel, &topology).await;
}

#[tokio::test]
async fn malformed_bodies_are_dead_lettered_byte_for_byte() {
    let ns = celeriac_tests::namespace("malformed");
    // Connecting a producer declares the topology.
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let record = celeriac_tests::record_file("malformed");
    let worker_id = format!("{ns}-worker");
    let process = worker(&ns, &record, &["--worker-id", &worker_id]).await;
    let since = now_ms();

    let garbage: Vec<u8> = b"\xc1 this is not MessagePack \x00\xff\xfe".to_vec();
    let mut no_task = Vec::new();
    let map = rmpv::Value::Map(vec![
        ("v".into(), 1.into()),
        ("id".into(), TaskId::new().to_string().into()),
        ("input".into(), rmpv::Value::Nil),
        ("created_at".into(), now_ms().into()),
    ]);
    rmpv::encode::write_value(&mut no_task, &map).unwrap();
    let local = celeriac_schema::decode(&no_task).unwrap_err();
    assert_eq!(
        local.field(),
        Some("task"),
        "the test body lacks exactly `task`"
    );

    let (_conn, channel) = broker().await.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for body in [&garbage, &no_task] {
        let confirm = channel
            .basic_publish(
                topology.work_exchange().as_str().into(),
                "default".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            matches!(confirm, Confirmation::Ack(None)),
            "the raw publish was not routed: {confirm:?}"
        );
    }

    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 2).await;
    let find = |body: &[u8]| {
        dead.iter()
            .find(|m| m.delivery.data == body)
            .expect("a dead letter with the original body, byte for byte")
    };
    let garbage_letter = find(&garbage);
    assert_dead_letter(
        garbage_letter,
        "malformed",
        "Malformed",
        0,
        &worker_id,
        since,
    );
    let message = header_str(garbage_letter, headers::ERROR_MESSAGE);
    assert!(
        message.contains("not valid MessagePack"),
        "error message {message:?} does not say why"
    );
    let no_task_letter = find(&no_task);
    assert_dead_letter(no_task_letter, "malformed", "Field", 0, &worker_id, since);
    let message = header_str(no_task_letter, headers::ERROR_MESSAGE);
    assert!(
        message.contains("`task`"),
        "error message {message:?} does not name the missing field"
    );

    finish(&producer, process, &record, &channel, &topology).await;
}

#[tokio::test]
async fn panicking_handlers_are_retried_then_dead_lettered() {
    let ns = celeriac_tests::namespace("panic");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let record = celeriac_tests::record_file("panic");
    let worker_id = format!("{ns}-worker");
    let process = worker(&ns, &record, &["--worker-id", &worker_id]).await;
    let since = now_ms();

    let policy = RetryPolicy {
        max_retries: 1,
        backoff: Backoff::fixed(Duration::from_millis(100)),
    };
    let id = producer
        .send::<Panic>(
            &"boom: the handler blew up".to_owned(),
            &SendOptions::new().retry(policy),
        )
        .await
        .unwrap()
        .id();

    let (_conn, channel) = broker().await.channel().await;
    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 1).await;
    let msg = &dead[0];
    assert_dead_letter(msg, "retries-exhausted", "Panic", 2, &worker_id, since);
    let message = header_str(msg, headers::ERROR_MESSAGE);
    assert!(
        message.contains("boom: the handler blew up"),
        "error message {message:?} lacks the panic message"
    );
    let envelope = celeriac_schema::decode(&msg.delivery.data).unwrap();
    assert_eq!((envelope.id, envelope.attempt), (id, 1));

    finish(&producer, process, &record, &channel, &topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_are_dead_lettered_at_once() {
    let ns = celeriac_tests::namespace("fatal");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let worker_id = format!("{ns}-worker");
    let id_for_builder = worker_id.clone();
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.worker_id(id_for_builder)).await;
    let since = now_ms();

    let input = FailInput {
        message: "no such account".into(),
        fatal: true,
    };
    let id = producer
        .send::<Fail>(&input, &SendOptions::new().max_retries(3))
        .await
        .unwrap()
        .id();

    let (_conn, channel) = broker().await.channel().await;
    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 1).await;
    let msg = &dead[0];
    assert_dead_letter(msg, "rejected", "TaskFailed", 1, &worker_id, since);
    assert_eq!(header_str(msg, headers::ERROR_MESSAGE), "no such account");
    let envelope = celeriac_schema::decode(&msg.delivery.data).unwrap();
    assert_eq!((envelope.id, envelope.attempt), (id, 0));

    producer
        .send::<Ping>(&(), &SendOptions::new())
        .await
        .unwrap();
    let pinged = eventually(Duration::from_secs(10), || async {
        worker.stats().succeeded == 1
    })
    .await;
    assert!(
        pinged,
        "a ping sent after the dead letter was not processed"
    );
    let stats = worker.stop().await;
    assert_eq!(
        (stats.failed, stats.retried, stats.dead_lettered),
        (1, 0, 1),
        "a fatal error is never retried"
    );
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tasks_are_dropped_and_counted() {
    let ns = celeriac_tests::namespace("expired");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let runs = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    let counter = runs.clone();
    registry.register::<Perishable, _, _>(move |(), _ctx: TaskContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    let worker = InProcessWorker::start(&ns, registry, |b| b).await;

    // Expires while it waits for its countdown.
    producer
        .send::<Perishable>(
            &(),
            &SendOptions::new()
                .expires_in(Duration::from_millis(300))
                .countdown(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    // Expired before it was even sent.
    let mut stale = producer
        .prepare::<Perishable>(&(), &SendOptions::new())
        .unwrap();
    stale.envelope.expires = Some(now_ms() - 1_000);
    producer.send_prepared(&stale).await.unwrap();
    // Fresh: runs.
    producer
        .send::<Perishable>(&(), &SendOptions::new().expires_in(Duration::from_secs(60)))
        .await
        .unwrap();

    let settled = eventually(Duration::from_secs(15), || async {
        let stats = worker.stats();
        stats.expired == 2 && stats.succeeded == 1
    })
    .await;
    let stats = worker.stop().await;
    assert!(settled, "expected 2 expired and 1 succeeded, got {stats:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "an expired task ran");
    assert_eq!(
        (
            stats.received,
            stats.expired,
            stats.succeeded,
            stats.dead_lettered,
            stats.retried
        ),
        (3, 2, 1, 0, 0)
    );
    let (_conn, channel) = broker().await.channel().await;
    assert_eq!(
        queue_len(&channel, &topology.work_queue("default")).await,
        0
    );
    assert_eq!(
        queue_len(&channel, &topology.dead_letter_queue("default")).await,
        0,
        "expired tasks are dropped, not dead-lettered"
    );
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

#[tokio::test]
async fn unroutable_publishes_are_errors() {
    let ns = celeriac_tests::namespace("unroutable");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let (_conn, channel) = broker().await.channel().await;

    // A routing key no queue is bound to, published the way workers do.
    let (_publisher_conn, publisher) = broker().await.channel().await;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let envelope = Envelope::new(Ping::NAME, rmpv::Value::Nil);
    let body = celeriac_schema::encode(&envelope).unwrap();
    let route = Route {
        exchange: topology.work_exchange(),
        routing_key: "nowhere".into(),
    };
    let props =
        publish::envelope_properties(&envelope, publish::envelope_headers(&envelope, "nowhere"));
    let err =
        publish::publish_confirmed(&publisher, &route, &body, props, &envelope.id.to_string())
            .await
            .unwrap_err();
    assert!(
        matches!(&err, ProducerError::Unroutable { routing_key, .. } if routing_key == "nowhere"),
        "expected Unroutable, got {err}"
    );
    assert!(
        !err.is_transient(),
        "an unroutable task will not route on a retry"
    );

    // The producer's own queue, once its binding is gone.
    channel
        .queue_unbind(
            topology.work_queue("default").as_str().into(),
            topology.work_exchange().as_str().into(),
            "default".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let err = producer
        .send::<Ping>(&(), &SendOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProducerError::Unroutable { exchange, routing_key, .. }
            if *exchange == topology.work_exchange() && routing_key == "default"),
        "expected Unroutable, got {err}"
    );
    assert_eq!(
        queue_len(&channel, &topology.work_queue("default")).await,
        0,
        "nothing reached the unbound queue"
    );
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

/// Connects a producer to `url`, where no broker answers; returns the error
/// and how long it took.
async fn connect_error(url: &str, connect_timeout: Duration) -> (ProducerError, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        Producer::builder(url)
            .namespace(celeriac_tests::namespace("unreachable"))
            .connect_timeout(connect_timeout)
            .connect(),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to {url} hung past the connect timeout"));
    let elapsed = started.elapsed();
    match result {
        Ok(_) => panic!("connected to {url}, where no broker is"),
        Err(err) => (err, elapsed),
    }
}

#[tokio::test]
async fn an_unreachable_broker_fails_within_the_connect_timeout() {
    let connect_timeout = Duration::from_secs(2);

    // Nothing listens: refused at once.
    let (err, elapsed) = connect_error("amqp://guest:guest@127.0.0.1:1/%2f", connect_timeout).await;
    assert!(
        matches!(err, ProducerError::Unreachable { .. }),
        "expected Unreachable, got {err}"
    );
    assert!(err.is_transient(), "the broker may come back");
    assert!(
        elapsed < connect_timeout + Duration::from_secs(1),
        "gave up after {elapsed:?}, past the {connect_timeout:?} connect timeout"
    );
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:1"),
        "the error names the broker: {text}"
    );
    assert!(
        !text.contains("guest:guest"),
        "the error leaks the password: {text}"
    );

    // Something takes the TCP connection (the kernel completes handshakes
    // for a listener that never accepts) but never speaks AMQP.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let (err, elapsed) = connect_error(&url, connect_timeout).await;
    assert!(
        matches!(err, ProducerError::Unreachable { .. }),
        "expected Unreachable, got {err}"
    );
    assert!(
        elapsed >= connect_timeout - Duration::from_millis(100)
            && elapsed < connect_timeout + Duration::from_millis(1500),
        "gave up after {elapsed:?} with a {connect_timeout:?} connect timeout"
    );
    drop(silent);
}

//! Dead letters as SPEC.md sections 5.2, 6.1 and 11.5 say: each error type
//! of the closed list is provoked and found in `celeriac-error-type` with
//! its reason; every dead letter keeps the producer's `message_id` and
//! carries no broker `x-` header, even after retries through the delay
//! levels. (`SignatureError` is provoked by the signing and Python interop
//! tests; `TaskFailed`, `Panic` after retries and `UnknownTask` by the
//! failure tests too.)

use std::collections::HashMap;
use std::time::Duration;

use celeriac_producer::{Producer, SendOptions};
use celeriac_schema::builtin::{Fail, FailInput};
use celeriac_schema::exec::{Exec, ExecInput, ExecSpec};
use celeriac_schema::{headers, now_ms, Backoff, RetryPolicy, TaskId, Topology};
use celeriac_tests::{broker, drain, eventually, header_int, header_str, queue_len};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};

use crate::support::{delete_queues, producer, worker};

/// Publishes `body` as it is to the work queue `default`, with a fresh
/// `message_id`, which it returns.
async fn publish_raw(channel: &Channel, topology: &Topology, body: &[u8]) -> String {
    let id = TaskId::new().to_string();
    let confirm = channel
        .basic_publish(
            topology.work_exchange().as_str().into(),
            "default".into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.as_str().into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        matches!(confirm, Confirmation::Ack(None)),
        "the raw publish was not routed: {confirm:?}"
    );
    id
}

/// An envelope map with `v` = `version`, without `task` when `with_task`
/// is false.
fn envelope_map(version: u32, with_task: bool) -> Vec<u8> {
    let mut fields = vec![
        ("v".into(), version.into()),
        ("id".into(), TaskId::new().to_string().into()),
        ("input".into(), rmpv::Value::Nil),
        ("created_at".into(), now_ms().into()),
    ];
    if with_task {
        fields.push(("task".into(), "celeriac.ping".into()));
    }
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &rmpv::Value::Map(fields)).unwrap();
    bytes
}

/// `depth` arrays, one inside the other.
fn nested(depth: usize) -> Vec<u8> {
    let mut bytes = vec![0x91; depth - 1];
    bytes.push(0x90);
    bytes
}

/// The names of a dead letter's headers that belong to the broker, but
/// for `x-delivery-count`, which a quorum queue adds to each delivery it
/// makes (SPEC.md section 5.2): the one the test's `basic.get` reads.
fn broker_headers(msg: &BasicGetMessage) -> Vec<String> {
    msg.delivery
        .properties
        .headers()
        .as_ref()
        .map(|t| {
            t.inner()
                .keys()
                .filter(|k| k.as_str().starts_with("x-") && k.as_str() != "x-delivery-count")
                .map(|k| k.to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn message_id(msg: &BasicGetMessage) -> String {
    msg.delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default()
}

/// Waits for `expected` dead letters in `default`'s DLQ and takes them, by
/// `message_id`.
async fn dead_letters(
    channel: &Channel,
    topology: &Topology,
    expected: usize,
) -> HashMap<String, BasicGetMessage> {
    let dlq = topology.dead_letter_queue("default");
    let arrived = eventually(Duration::from_secs(30), || async {
        queue_len(channel, &dlq).await as usize >= expected
    })
    .await;
    assert!(
        arrived,
        "{dlq} holds {} dead letters, expected {expected}",
        queue_len(channel, &dlq).await
    );
    let taken = drain(channel, &dlq).await;
    assert_eq!(taken.len(), expected, "unexpected dead letters");
    taken.into_iter().map(|m| (message_id(&m), m)).collect()
}

async fn send_value(
    producer: &Producer,
    task: &str,
    input: rmpv::Value,
    options: &SendOptions,
) -> String {
    let prepared = producer.prepare_value(task, input, options).unwrap();
    producer.send_prepared(&prepared).await.unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_error_type_is_on_its_dead_letter() {
    let ns = celeriac_tests::namespace("error-types");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let record = celeriac_tests::record_file("error-types");
    let mut process = worker(&ns, &record, &[]).await;
    let (_conn, channel) = broker().await.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    // (message id, reason, error type)
    let mut expected: Vec<(String, &str, &str)> = Vec::new();
    let too_large = vec![0xc0; (1 << 20) + 1];
    for (body, kind) in [
        (too_large, "TooLarge"),
        (nested(40), "TooDeep"),
        (vec![0xc1], "Malformed"),
        (envelope_map(2, true), "UnsupportedVersion"),
        (envelope_map(1, false), "Field"),
    ] {
        let id = publish_raw(&channel, &topology, &body).await;
        expected.push((id, "malformed", kind));
    }
    let once = SendOptions::new().max_retries(0);
    let unknown = send_value(&producer, "test.nobody-home", rmpv::Value::Nil, &once).await;
    expected.push((unknown, "unknown-task", "UnknownTask"));
    let bad_input = send_value(&producer, "celeriac.sleep", "ten".into(), &once).await;
    expected.push((bad_input, "rejected", "InputError"));
    let slow = send_value(
        &producer,
        "celeriac.sleep",
        rmpv::Value::Map(vec![("ms".into(), 10_000.into())]),
        &SendOptions::new()
            .max_retries(0)
            .hard_time_limit(Duration::from_millis(200)),
    )
    .await;
    expected.push((slow, "retries-exhausted", "TimeLimitExceeded"));
    let panic = send_value(&producer, "celeriac.panic", "boom".into(), &once).await;
    expected.push((panic, "retries-exhausted", "Panic"));
    let fatal = producer
        .send::<Fail>(
            &FailInput {
                message: "no".into(),
                fatal: true,
            },
            &SendOptions::new(),
        )
        .await
        .unwrap()
        .id()
        .to_string();
    expected.push((fatal, "rejected", "TaskFailed"));
    let forbidden = producer
        .send::<Exec>(
            &ExecInput::new(ExecSpec::new("rm").args(["-rf", "/"]), rmpv::Value::Nil),
            &SendOptions::new(),
        )
        .await
        .unwrap()
        .id()
        .to_string();
    expected.push((forbidden, "forbidden", "Forbidden"));

    let letters = dead_letters(&channel, &topology, expected.len()).await;
    for (id, reason, error_type) in &expected {
        let msg = letters
            .get(id)
            .unwrap_or_else(|| panic!("no dead letter with message_id {id} ({error_type})"));
        assert_eq!(header_str(msg, headers::REASON), *reason, "{error_type}");
        assert_eq!(header_str(msg, headers::ERROR_TYPE), *error_type);
        assert!(
            broker_headers(msg).is_empty(),
            "{error_type}: broker headers {:?}",
            broker_headers(msg)
        );
        let ran = !matches!(*reason, "malformed" | "unknown-task");
        assert_eq!(
            header_int(msg, headers::ATTEMPTS),
            i64::from(ran),
            "{error_type}"
        );
    }
    // Each type of the closed list that a worker sets on its own, once.
    let mut types: Vec<&str> = expected.iter().map(|(_, _, t)| *t).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), expected.len());

    process.signal("TERM");
    assert!(process
        .wait_timeout(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_after_delays_and_retries_carries_no_broker_header() {
    let ns = celeriac_tests::namespace("dl-headers");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let record = celeriac_tests::record_file("dl-headers");
    let mut process = worker(&ns, &record, &[]).await;
    let (_conn, channel) = broker().await.channel().await;

    // A countdown, then two retries: three passes through the delay levels,
    // each leaving `x-death` on the message it delivers.
    let policy = RetryPolicy {
        max_retries: 2,
        backoff: Backoff::fixed(Duration::from_millis(300)),
    };
    let id = producer
        .send::<Fail>(
            &FailInput {
                message: "still broken".into(),
                fatal: false,
            },
            &SendOptions::new()
                .retry(policy)
                .countdown(Duration::from_millis(500)),
        )
        .await
        .unwrap()
        .id()
        .to_string();

    let letters = dead_letters(&channel, &topology, 1).await;
    let msg = letters
        .get(&id)
        .expect("the dead letter keeps the producer's message_id");
    assert_eq!(header_str(msg, headers::REASON), "retries-exhausted");
    assert_eq!(header_str(msg, headers::ERROR_TYPE), "TaskFailed");
    assert_eq!(header_int(msg, headers::ATTEMPTS), 3);
    assert_eq!(
        broker_headers(msg),
        Vec::<String>::new(),
        "no x-death, x-first-death-* or x-last-death-* left from the delay queues"
    );
    process.signal("TERM");
    assert!(process
        .wait_timeout(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    assert_eq!(delete_queues(&channel, &topology).await, 0);
}

//! A task that runs longer than the broker's consumer timeout completes
//! exactly once: its worker swaps the delivery for a lease before the broker
//! gives up on the channel.
//!
//! The test lowers RabbitMQ's consumer timeout broker-wide, so it lives in a
//! test binary of its own: cargo runs test binaries one after another, never
//! beside the end-to-end binary's tests.
//!
//! RabbitMQ 3.10 reads `consumer_timeout` when a channel opens, but checks it
//! only on the channel's tick (`channel_tick_interval`, 60 s by default,
//! read again each time the tick is re-armed). With the default tick a 4 s
//! timeout fires anywhere between 4 and 64 s, which a 12 s task would never
//! notice; so the tick is lowered to 1 s for the test's duration, and a raw
//! consumer that never acks shows that the broker really closes its channel.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use celeriac_producer::{Producer, SendOptions};
use celeriac_tests::lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
};
use celeriac_tests::lapin::types::{AMQPValue, FieldTable};
use celeriac_tests::lapin::{BasicProperties, Connection};
use celeriac_tests::test_tasks::{Record, RecordInput};
use celeriac_tests::{
    broker, eventually, namespace, read_record, record_file, Broker, WorkerProcess,
};
use futures_util::StreamExt;

/// The lowered consumer timeout.
const CONSUMER_TIMEOUT: Duration = Duration::from_secs(4);
/// The worker's lease TTL.
const LEASE_TTL: Duration = Duration::from_secs(6);
/// How long the task runs: three consumer timeouts.
const TASK_MS: u64 = 12_000;
/// RabbitMQ's defaults, put back whatever happens.
const DEFAULT_CONSUMER_TIMEOUT_MS: u64 = 1_800_000;
const DEFAULT_CHANNEL_TICK_MS: u64 = 60_000;
/// The channel tick while the test runs.
const TEST_CHANNEL_TICK_MS: u64 = 1_000;

async fn set_env(broker: &Broker, key: &str, value: u64) {
    broker
        .rabbitmqctl(&[
            "eval",
            &format!("application:set_env(rabbit, {key}, {value})."),
        ])
        .await;
}

/// Lowers the broker's consumer timeout and channel tick; puts both back on
/// drop, also when the test panics.
struct LoweredTimeout {
    broker: &'static Broker,
}

impl LoweredTimeout {
    async fn set(broker: &'static Broker) -> Self {
        let guard = LoweredTimeout { broker };
        set_env(broker, "channel_tick_interval", TEST_CHANNEL_TICK_MS).await;
        set_env(
            broker,
            "consumer_timeout",
            CONSUMER_TIMEOUT.as_millis() as u64,
        )
        .await;
        guard
    }

    /// Puts the default consumer timeout back for channels opened from now
    /// on; those already open keep the lowered one.
    async fn restore_timeout(&self) {
        set_env(self.broker, "consumer_timeout", DEFAULT_CONSUMER_TIMEOUT_MS).await;
    }
}

impl Drop for LoweredTimeout {
    fn drop(&mut self) {
        let broker = self.broker;
        // Runs on a thread of its own: the test's runtime may be gone or
        // unwinding.
        let restored = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                set_env(broker, "consumer_timeout", DEFAULT_CONSUMER_TIMEOUT_MS).await;
                set_env(broker, "channel_tick_interval", DEFAULT_CHANNEL_TICK_MS).await;
            });
        })
        .join();
        if restored.is_err() {
            eprintln!(
                "could not restore the broker's consumer_timeout ({DEFAULT_CONSUMER_TIMEOUT_MS}) \
                 and channel_tick_interval ({DEFAULT_CHANNEL_TICK_MS})"
            );
        }
    }
}

/// Whether a queue exists (a failed passive declare closes its channel, so
/// each check gets a fresh one).
async fn queue_exists(connection: &Connection, queue: &str) -> bool {
    let channel = connection.create_channel().await.unwrap();
    let exists = celeriac_tests::queue_stats(&channel, queue).await.is_ok();
    if exists {
        let _ = channel.close(200, "done".into()).await;
    }
    exists
}

/// Consumer count of a queue that must exist.
async fn consumers(connection: &Connection, queue: &str) -> u32 {
    let channel = connection.create_channel().await.unwrap();
    let (_, consumers) = celeriac_tests::queue_stats(&channel, queue)
        .await
        .unwrap_or_else(|e| panic!("passive declare of {queue}: {e}"));
    let _ = channel.close(200, "done".into()).await;
    consumers
}

fn runs_of(record: &Path, task_id: &str) -> usize {
    read_record(record)
        .iter()
        .filter(|line| line.split(' ').next() == Some(task_id))
        .count()
}

/// Messages (ready and unacked) of every queue of the namespace.
async fn namespace_queues(broker: &Broker, ns: &str) -> Vec<(String, u64)> {
    broker
        .rabbitmqctl(&[
            "list_queues",
            "--quiet",
            "--no-table-headers",
            "name",
            "messages",
        ])
        .await
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let messages = words.next()?.parse().ok()?;
            name.starts_with(&format!("{ns}."))
                .then(|| (name.to_owned(), messages))
        })
        .collect()
}

/// Opens a consumer that never acks, on a channel opened while the timeout
/// is low, and returns how long after its delivery the broker closed the
/// channel with its consumer-timeout error (`None`: not within a minute).
async fn spawn_unacking_consumer(
    broker: &'static Broker,
    queue: String,
) -> tokio::task::JoinHandle<Option<Duration>> {
    let (connection, channel) = broker.channel().await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"never acked",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "unacking-probe".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        let _connection = connection;
        let _delivery = consumer.next().await?.ok()?;
        let delivered = Instant::now();
        match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
            Ok(Some(Err(e))) if e.to_string().contains("PRECONDITION_FAILED") => {
                Some(delivered.elapsed())
            }
            Ok(other) => panic!(
                "the unacked consumer ended otherwise than by the consumer timeout: {:?}",
                other.map(|o| o.map(|_| ()))
            ),
            Err(_) => None,
        }
    })
}

/// Longest the test may take: a wedged broker fails it instead of hanging
/// the run.
const TEST_LIMIT: Duration = Duration::from_secs(80);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_longer_than_the_consumer_timeout_runs_exactly_once() {
    if tokio::time::timeout(TEST_LIMIT, long_task_scenario())
        .await
        .is_err()
    {
        panic!(
            "the test did not finish within {TEST_LIMIT:?}; if AMQP connections hang, the broker may \
             be out of file handles (`rabbitmqctl eval 'file_handle_cache:info().'`)"
        );
    }
}

async fn long_task_scenario() {
    let broker = broker().await;
    let ns = namespace("ctimeout");
    let probe_queue = format!("{ns}.unacked-probe");
    let ns = ns.with_raw_queue(&probe_queue);
    let record = record_file("ctimeout");
    let producer = Producer::builder(&broker.url)
        .namespace(&ns)
        .connect()
        .await
        .unwrap();
    let topology = producer.topology().clone();
    let work = topology.work_queue("default");
    let (looker, _) = broker.channel().await;

    let lowered = LoweredTimeout::set(broker).await;
    let probe = spawn_unacking_consumer(broker, probe_queue.clone()).await;
    let consumer_timeout = format!("{}s", CONSUMER_TIMEOUT.as_secs());
    let lease_ttl = format!("{}s", LEASE_TTL.as_secs());
    let mut worker = WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &broker.url,
        &ns,
        &record,
        &[
            "--consumer-timeout",
            &consumer_timeout,
            "--lease-ttl",
            &lease_ttl,
        ],
    );
    let consuming = eventually(Duration::from_secs(20), || async {
        consumers(&looker, &work).await >= 1
    })
    .await;
    assert!(consuming, "the worker never started consuming");
    // The worker's channels are open with the low timeout: others opened
    // from now on get the default again.
    lowered.restore_timeout().await;

    let sent = Instant::now();
    let task_id = producer
        .send::<Record>(&RecordInput { ms: TASK_MS }, &SendOptions::new())
        .await
        .unwrap()
        .id()
        .to_string();
    let lease = format!("{ns}.lease.{task_id}");
    let leased = eventually(CONSUMER_TIMEOUT, || queue_exists(&looker, &lease)).await;
    assert!(leased, "no lease was taken within the consumer timeout");

    let ran = eventually(
        Duration::from_millis(TASK_MS) + Duration::from_secs(10),
        || async { runs_of(&record, &task_id) >= 1 },
    )
    .await;
    assert!(ran, "the long task did not complete");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(TASK_MS),
        "the task finished after {took:?}"
    );
    // Past a whole lease TTL and more, a parked copy that came back would
    // have run again by now.
    let quiet = LEASE_TTL + Duration::from_secs(3);
    let ran_again = eventually(quiet, || async { runs_of(&record, &task_id) > 1 }).await;
    assert!(
        !ran_again,
        "the long task ran {} times",
        runs_of(&record, &task_id)
    );
    assert_eq!(
        runs_of(&record, &task_id),
        1,
        "the long task ran exactly once"
    );
    assert!(
        worker.wait_timeout(Duration::ZERO).is_none(),
        "the worker died"
    );

    assert!(
        !queue_exists(&looker, &lease).await,
        "the lease queue outlived the run"
    );
    let queues = namespace_queues(broker, &ns).await;
    let leftovers: Vec<&(String, u64)> = queues
        .iter()
        .filter(|(name, messages)| {
            name.contains(".lease.") || (*messages > 0 && *name != probe_queue)
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "queues left with messages or leases: {leftovers:?}"
    );

    let closed_after = probe.await.unwrap();
    let closed_after = closed_after.unwrap_or_else(|| {
        panic!("the broker did not close an unacking consumer's channel within 60 s of a {CONSUMER_TIMEOUT:?} timeout")
    });
    println!(
        "consumer timeout {CONSUMER_TIMEOUT:?}: the broker closed an unacking channel {closed_after:?} after its \
         delivery; a {TASK_MS} ms task under a lease completed once after {took:?}"
    );
}

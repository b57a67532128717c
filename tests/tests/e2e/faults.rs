//! Fault injection: a worker killed mid-task, its connection closed by the
//! broker, SIGTERM with and without enough grace, and a poison message that
//! crashes every worker that takes it. Every task is counted: none may be
//! lost, and a task runs twice only where at-least-once delivery allows it.

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

#[tokio::test]
async fn sigkill_mid_task_loses_nothing() {
    bounded(sigkill_mid_task_loses_nothing_scenario()).await;
}

async fn sigkill_mid_task_loses_nothing_scenario() {
    let ns = namespace("kill");
    let producer = producer(&ns).await;
    let record = record_file("kill");
    let (_conn, channel) = broker().await.channel().await;
    let work = producer.topology().work_queue("default");

    let mut a = worker(&ns, &record, &["--concurrency", "4", "--prefetch", "8"]).await;
    wait_for_consumers(&channel, &work, 1).await;
    let ids = send_records(&producer, 20, 3000).await;
    // A takes its prefetch of eight and starts four of them.
    let taken = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await <= 12
    })
    .await;
    assert!(taken, "worker A never took its prefetch");
    a.signal("KILL");
    let status = a
        .wait_timeout(Duration::from_secs(10))
        .expect("worker A exits after SIGKILL");
    assert!(!status.success(), "a SIGKILLed worker cannot exit cleanly");
    assert!(
        runs(&record).is_empty(),
        "worker A finished a 3 s task before it was killed; the kill came too late to test anything"
    );
    // The broker hands A's unacked deliveries back.
    let back = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 20
    })
    .await;
    assert!(back, "A's deliveries did not return to the queue");

    let mut b = worker(&ns, &record, &["--concurrency", "20"]).await;
    let done = eventually(Duration::from_secs(30), || async {
        runs(&record).len() >= ids.len()
    })
    .await;
    assert!(
        done,
        "only {} of {} tasks ran after the kill",
        runs(&record).len(),
        ids.len()
    );
    // Once B stops, every ack has reached the broker: nothing may be left
    // to run again.
    terminate(&mut b, Duration::from_secs(10));
    assert_eq!(ready(&channel, &work).await, 0, "tasks left in the queue");

    let runs = runs(&record);
    let counts = run_counts(&runs);
    let ran: HashSet<String> = counts.keys().map(|id| (*id).to_owned()).collect();
    assert_eq!(ran, id_set(&ids), "every sent task ran, and only those");
    let twice = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(twice, 0, "{twice} tasks ran more than once");
    assert!(
        runs.iter().all(|r| r.pid == b.pid()),
        "every run belongs to worker B"
    );
    println!(
        "sigkill: {} tasks, each ran exactly once, all on worker B",
        ids.len()
    );
}

/// How long each task of the connection-fault test runs: long enough that
/// the worker is busy at every fault, short enough that a few thousand
/// pass through.
const CLOSE_TASK_MS: u64 = 20;
/// Tasks per batch while the connection faults are injected.
const CLOSE_BATCH: usize = 50;
/// Ready tasks the sender keeps in the queue until the faults are in.
const CLOSE_BACKLOG: u32 = 100;
/// Tasks sent at least, in total, around the connection faults.
const CLOSE_TOTAL: usize = 2000;
/// Upper bound on tasks sent, whatever the faults' timing.
const CLOSE_MAX: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_lose_nothing_and_the_worker_recovers() {
    bounded(closed_connections_lose_nothing_and_the_worker_recovers_scenario()).await;
}

async fn closed_connections_lose_nothing_and_the_worker_recovers_scenario() {
    let ns = namespace("close");
    let producer = producer(&ns).await;
    let record = record_file("close");
    let (_conn, channel) = broker().await.channel().await;
    let work = producer.topology().work_queue("default");
    // Only this worker's connection is closed: tests running beside this
    // one keep theirs.
    let worker_id = format!("{ns}-worker");
    let mut w = worker(
        &ns,
        &record,
        &["--concurrency", "8", "--worker-id", &worker_id],
    )
    .await;
    wait_for_consumers(&channel, &work, 1).await;

    // Keep a backlog in the queue until both faults are in, so that each one
    // lands while the worker is busy with tasks in flight.
    let faults_done = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let producer = producer.clone();
        let faults_done = faults_done.clone();
        let work = work.clone();
        async move {
            let (_conn, channel) = broker().await.channel().await;
            let mut ids = Vec::new();
            while ids.len() < CLOSE_MAX {
                let faults_in = faults_done.load(Ordering::Relaxed);
                if faults_in && ids.len() >= CLOSE_TOTAL {
                    break;
                }
                if faults_in || ready(&channel, &work).await < CLOSE_BACKLOG {
                    ids.extend(send_records(&producer, CLOSE_BATCH, CLOSE_TASK_MS).await);
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            ids
        }
    });

    let mut connection = {
        let found = worker_connections(&worker_id).await;
        assert_eq!(found.len(), 1, "the worker has one connection");
        found[0].clone()
    };
    for round in 1..=2 {
        // The worker consumes on this connection before it is cut.
        let before = runs(&record).len();
        let busy = eventually(Duration::from_secs(20), || async {
            runs(&record).len() >= before + 50
        })
        .await;
        assert!(
            busy,
            "round {round}: the worker ran no tasks on its connection"
        );
        let backlog = ready(&channel, &work).await;
        broker()
            .await
            .rabbitmqctl(&["close_connection", &connection, "fault injected by a test"])
            .await;
        println!("close_connection round {round}: closed with {backlog} tasks ready and the prefetch in flight");
        connection = wait_for_reconnection(&worker_id, &connection)
            .await
            .unwrap_or_else(|| panic!("round {round}: the worker did not reconnect"));
        assert!(alive(&mut w), "round {round}: the worker process died");
    }
    faults_done.store(true, Ordering::Relaxed);
    let ids = sender.await.unwrap();
    assert!(
        ids.len() < CLOSE_MAX,
        "the faults took so long that the sender stopped first"
    );

    let sent = id_set(&ids);
    let all_ran = eventually(Duration::from_secs(60), || async {
        let runs = runs(&record);
        let ran: HashSet<&str> = runs.iter().map(|r| r.task_id.as_str()).collect();
        sent.iter().all(|id| ran.contains(id.as_str()))
    })
    .await;
    let ran_ids: HashSet<String> = runs(&record).into_iter().map(|r| r.task_id).collect();
    assert!(
        all_ran,
        "{} of {} tasks never ran",
        sent.difference(&ran_ids).count(),
        sent.len()
    );

    // After the faults the worker still consumes what comes next.
    let later = send_records(&producer, 100, CLOSE_TASK_MS).await;
    let later_ids = id_set(&later);
    let later_ran = eventually(Duration::from_secs(30), || async {
        let runs = runs(&record);
        let ran: HashSet<&str> = runs.iter().map(|r| r.task_id.as_str()).collect();
        later_ids.iter().all(|id| ran.contains(id.as_str()))
    })
    .await;
    assert!(
        later_ran,
        "the worker stopped consuming after it reconnected"
    );
    terminate(&mut w, Duration::from_secs(20));
    assert_eq!(ready(&channel, &work).await, 0, "tasks left in the queue");

    let runs = runs(&record);
    let counts = run_counts(&runs);
    let unknown = counts
        .keys()
        .filter(|id| !sent.contains(**id) && !later_ids.contains(**id))
        .count();
    assert_eq!(unknown, 0, "runs of tasks that were never sent");
    let total = ids.len() + later.len();
    let duplicates = runs.len() - counts.len();
    println!(
        "close_connection: {total} tasks, {} runs, {duplicates} duplicate runs over {} tasks (at-least-once)",
        runs.len(),
        counts.values().filter(|&&n| n > 1).count()
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_tasks_finish() {
    bounded(sigterm_lets_in_flight_tasks_finish_scenario()).await;
}

async fn sigterm_lets_in_flight_tasks_finish_scenario() {
    let ns = namespace("term");
    let producer = producer(&ns).await;
    let record = record_file("term");
    let (_conn, channel) = broker().await.channel().await;
    let work = producer.topology().work_queue("default");

    let mut w = worker(
        &ns,
        &record,
        &["--concurrency", "4", "--prefetch", "8", "--grace", "20s"],
    )
    .await;
    wait_for_consumers(&channel, &work, 1).await;
    let running = send_records(&producer, 4, 2000).await;
    let started = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 0
    })
    .await;
    assert!(started, "the worker did not take the first four tasks");
    let queued = send_records(&producer, 10, 2000).await;
    // Four of them wait in the prefetch buffer, six in the queue.
    let prefetched = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 6
    })
    .await;
    assert!(prefetched, "the worker did not fill its prefetch");
    assert!(
        runs(&record).is_empty(),
        "a 2 s task finished before SIGTERM; the signal came too late to test anything"
    );
    let took = terminate(&mut w, Duration::from_secs(25));
    assert!(
        took < Duration::from_secs(20),
        "exit took {took:?}, past the 20 s grace"
    );

    let done = runs(&record);
    let finished: HashSet<String> = done.iter().map(|r| r.task_id.clone()).collect();
    assert_eq!(
        finished,
        id_set(&running),
        "exactly the in-flight tasks finished"
    );
    assert_eq!(done.len(), running.len(), "no in-flight task ran twice");
    let returned = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 10
    })
    .await;
    assert!(returned, "the queued tasks are not all back in the queue");

    let _second_worker = worker(&ns, &record, &["--concurrency", "10"]).await;
    let all = eventually(Duration::from_secs(30), || async {
        runs(&record).len() >= running.len() + queued.len()
    })
    .await;
    assert!(all, "the second worker did not run the queued tasks");
    let runs = runs(&record);
    let counts = run_counts(&runs);
    let mut sent = id_set(&running);
    sent.extend(id_set(&queued));
    let ran: HashSet<String> = counts.keys().map(|id| (*id).to_owned()).collect();
    assert_eq!(
        ran, sent,
        "every task ran once SIGTERM had handed back the rest"
    );
    assert_eq!(runs.len(), sent.len(), "no task ran twice");
    println!("sigterm: worker exited 0 after {took:?}; 4 in flight finished, 10 handed back");
}

#[tokio::test]
async fn grace_expiry_hands_unfinished_tasks_back() {
    bounded(grace_expiry_hands_unfinished_tasks_back_scenario()).await;
}

async fn grace_expiry_hands_unfinished_tasks_back_scenario() {
    let ns = namespace("grace");
    let producer = producer(&ns).await;
    let record = record_file("grace");
    let (_conn, channel) = broker().await.channel().await;
    let work = producer.topology().work_queue("default");

    let mut w = worker(&ns, &record, &["--concurrency", "4", "--grace", "1s"]).await;
    wait_for_consumers(&channel, &work, 1).await;
    let ids = send_records(&producer, 4, 10_000).await;
    let started = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 0
    })
    .await;
    assert!(started, "the worker did not take the tasks");
    let took = terminate(&mut w, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?} with a 1 s grace"
    );
    assert!(
        runs(&record).is_empty(),
        "a 10 s task finished within a 1 s grace"
    );
    let returned = eventually(Duration::from_secs(10), || async {
        ready(&channel, &work).await == 4
    })
    .await;
    assert!(returned, "the abandoned tasks are not back in the queue");

    let second = worker(&ns, &record, &["--concurrency", "4"]).await;
    let done = eventually(Duration::from_secs(30), || async {
        runs(&record).len() >= ids.len()
    })
    .await;
    assert!(done, "the second worker did not run the abandoned tasks");
    let runs = runs(&record);
    let ran: HashSet<String> = runs.iter().map(|r| r.task_id.clone()).collect();
    assert_eq!(ran, id_set(&ids), "every abandoned task ran");
    assert_eq!(runs.len(), ids.len(), "no task ran twice");
    assert!(
        runs.iter().all(|r| r.pid == second.pid()),
        "only the second worker ran them"
    );
    println!("grace expiry: worker exited 0 after {took:?}; 4 tasks handed back and run once");
}

/// Delivery limit of the poison test's namespace.
const POISON_DELIVERY_LIMIT: &str = "2";

#[tokio::test]
async fn poison_message_ends_in_the_dead_letter_queue() {
    bounded(poison_message_ends_in_the_dead_letter_queue_scenario()).await;
}

async fn poison_message_ends_in_the_dead_letter_queue_scenario() {
    let ns = namespace("poison");
    let producer = Producer::builder(&broker().await.url)
        .namespace(&ns)
        .delivery_limit(POISON_DELIVERY_LIMIT.parse().unwrap())
        .connect()
        .await
        .unwrap();
    let record = record_file("poison");
    let (_conn, channel) = broker().await.channel().await;
    let work = producer.topology().work_queue("default");
    let dlq = producer.topology().dead_letter_queue("default");
    let args = [
        "--delivery-limit",
        POISON_DELIVERY_LIMIT,
        "--concurrency",
        "1",
        "--prefetch",
        "1",
    ];

    let poison = producer
        .send::<Crash>(&(), &SendOptions::new())
        .await
        .unwrap()
        .id();
    // Each worker that takes the message dies with it; the broker counts the
    // deliveries and dead-letters the message past the limit.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut crashes = 0;
    let _survivor = loop {
        let mut w = worker(&ns, &record, &args).await;
        let crashed = loop {
            if let Some(status) = w.wait_timeout(Duration::ZERO) {
                assert!(
                    !status.success(),
                    "the worker exited cleanly instead of crashing"
                );
                break true;
            }
            if ready(&channel, &dlq).await > 0 {
                break false;
            }
            assert!(
                Instant::now() < deadline,
                "after {crashes} crashes the poison message is still not dead-lettered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !crashed {
            break w;
        }
        crashes += 1;
    };
    let dead = celeriac_tests::drain(&channel, &dlq).await;
    assert_eq!(dead.len(), 1, "exactly the poison message is dead-lettered");
    let message_id = dead[0]
        .delivery
        .properties
        .message_id()
        .as_ref()
        .map(ToString::to_string);
    assert_eq!(
        message_id,
        Some(poison.to_string()),
        "the dead letter is the poison message"
    );
    let reason = dead[0]
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death").cloned())
        .and_then(|death| match death {
            AMQPValue::FieldArray(entries) => entries.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|entry| match entry {
            AMQPValue::FieldTable(t) => t.inner().get("reason").cloned(),
            _ => None,
        });
    assert_eq!(
        reason,
        Some(AMQPValue::LongString("delivery_limit".into())),
        "the broker dead-lettered it for its delivery limit"
    );
    assert_eq!(
        ready(&channel, &work).await,
        0,
        "the poison message left the work queue"
    );

    // The surviving worker still runs ordinary tasks.
    let normal = producer
        .send::<Record>(&RecordInput { ms: 0 }, &SendOptions::new())
        .await
        .unwrap()
        .id();
    let ran = eventually(Duration::from_secs(15), || async {
        runs(&record)
            .iter()
            .any(|r| r.task_id == normal.to_string())
    })
    .await;
    assert!(ran, "a normal task did not run after the poison message");
    println!("poison: dead-lettered after {crashes} worker crashes (delivery limit {POISON_DELIVERY_LIMIT})");
}

/// A dead-letter queue has nowhere to send a message past its delivery
/// limit, and reading it returns messages with `basic.nack`: its limit is
/// set, explicitly, to in effect none, so that no number of reads (nor
/// RabbitMQ 4's default limit of 20) drops a dead letter.
#[tokio::test]
async fn dead_letters_survive_any_number_of_returns() {
    use celeriac_tests::lapin::options::{
        BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    };
    use celeriac_tests::lapin::BasicProperties;

    let ns = namespace("dlq-returns");
    let producer = Producer::builder(&broker().await.url)
        .namespace(&ns)
        .connect()
        .await
        .unwrap();
    producer.ensure_queue("default").await.unwrap();
    let dlq = producer.topology().dead_letter_queue("default");

    let listed = broker()
        .await
        .rabbitmqctl(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "arguments",
        ])
        .await;
    let line = listed
        .lines()
        .find(|line| line.split_whitespace().next() == Some(dlq.as_str()))
        .unwrap_or_else(|| panic!("{dlq} is not declared:\n{listed}"));
    assert!(
        line.contains("x-delivery-limit") && line.contains("2147483647"),
        "{line}"
    );

    let (_conn, channel) = broker().await.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            dlq.as_str().into(),
            BasicPublishOptions::default(),
            b"a dead letter",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    for read in 0..30 {
        // A returned message comes back to the queue asynchronously.
        let deadline = Instant::now() + Duration::from_secs(5);
        let message = loop {
            let got = channel
                .basic_get(dlq.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap();
            match got {
                Some(message) => break Some(message),
                None if Instant::now() > deadline => break None,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert!(
            message.is_some(),
            "the dead letter is gone after {read} returns"
        );
        let message = message.unwrap();
        assert_eq!(message.delivery.data, b"a dead letter");
        channel
            .basic_nack(
                message.delivery.delivery_tag,
                BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                },
            )
            .await
            .unwrap();
    }
}

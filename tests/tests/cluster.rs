//! Scale-out under faults: 20 000 keyed tasks through a three-node RabbitMQ
//! cluster and Redis with Sentinel while the node leading the work queue,
//! then the Redis primary, are killed with SIGKILL. Proves no task lost, no
//! keyed task run twice, and that producer and workers recovered by
//! themselves (no reconnect by the test).
//!
//! Run it with `tests/cluster/run test`: the script starts the cluster,
//! exports the variables read here, runs this binary (`cargo test -p
//! celeriac-tests --test cluster`; `cargo test` alone leaves it out) and
//! stops the cluster.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celeriac_consumer::{Registry, TaskContext, Worker, WorkerHandle};
use celeriac_producer::{PreparedTask, Producer, RedisStore, SendOptions};
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_schema::topology::LeaderLocator;
use celeriac_schema::Task;
use celeriac_tests::{eventually, lapin};

/// Tasks sent.
const TASKS: usize = 20_000;
/// Tasks per send call.
const BATCH: usize = 400;
/// The logical queue the tasks go to.
const QUEUE: &str = "work";
/// More logical queues, so that the leaders have something to spread.
const OTHER_QUEUES: [&str; 3] = ["spread-a", "spread-b", "spread-c"];
/// Tasks sent before the broker node is killed, and before Redis is.
const KILL_BROKER_AT: usize = 5_000;
const KILL_REDIS_AT: usize = 12_000;

struct ClusterEffect;
impl Task for ClusterEffect {
    const NAME: &'static str = "cluster.effect";
    type Input = u64;
    type Output = ();
    const STORE_RESULT: bool = false;
}

/// Returns twice its input: a task whose result a producer waits for.
struct ClusterDouble;
impl Task for ClusterDouble {
    const NAME: &'static str = "cluster.double";
    type Input = u64;
    type Output = u64;
}

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: this test needs its own RabbitMQ cluster and Redis with \
             Sentinel; run `tests/cluster/run test`, which starts them, sets the variables \
             and stops them afterwards"
        ),
    }
}

/// Runs the cluster script with `args`; its standard output.
async fn ctl(args: &[&str]) -> String {
    let script = var("CELERIAC_CLUSTER_CTL");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&script).args(&args).output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run the cluster script: {e}"));
    assert!(
        out.status.success(),
        "the cluster script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every queue of the cluster and the node leading it.
async fn leaders() -> HashMap<String, String> {
    ctl(&["leaders"])
        .await
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(q, n)| (q.to_owned(), n.to_owned()))
        .collect()
}

/// What the handler did: how often each key ran, and when each run was.
#[derive(Default)]
struct Effects {
    runs: Mutex<HashMap<String, u32>>,
    at: Mutex<Vec<Instant>>,
}

impl Effects {
    fn distinct(&self) -> usize {
        self.runs.lock().unwrap().len()
    }

    /// The longest time without any run within `window` after `from`.
    fn longest_gap(&self, from: Instant, window: Duration) -> Duration {
        let mut at: Vec<Instant> = self
            .at
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= from + window)
            .collect();
        at.sort();
        let mut gap = Duration::ZERO;
        let mut last = from;
        for t in at {
            gap = gap.max(t - last);
            last = t;
        }
        gap
    }
}

async fn store(url: &str, ns: &str) -> Arc<dyn Store> {
    Arc::new(
        RedisStore::connect(url, ns, StoreSettings::default())
            .await
            .unwrap_or_else(|e| panic!("the store through Sentinel: {e}")),
    )
}

async fn start_worker(amqp: &str, redis: &str, ns: &str, effects: &Arc<Effects>) -> WorkerHandle {
    let mut registry = Registry::new();
    let seen = effects.clone();
    registry.register::<ClusterEffect, _, _>(move |_n, ctx: TaskContext| {
        let key = ctx.idempotency_key();
        *seen.runs.lock().unwrap().entry(key).or_insert(0) += 1;
        seen.at.lock().unwrap().push(Instant::now());
        async move { Ok(()) }
    });
    registry.register::<ClusterDouble, _, _>(|n, _| async move { Ok(n * 2) });
    let mut queues = vec![QUEUE];
    queues.extend(OTHER_QUEUES);
    let urls = celeriac_producer::addresses::split(amqp);
    let worker = Worker::builder(urls[0], registry)
        .addresses(urls)
        .namespace(ns)
        .queues(queues)
        .leader_locator(LeaderLocator::Balanced)
        .concurrency(32)
        .store(store(redis, ns).await)
        .grace(Duration::from_secs(10))
        .build()
        .unwrap();
    let handle = worker.handle();
    tokio::spawn(worker.run());
    let ready = eventually(Duration::from_secs(30), || async { handle.is_ready() }).await;
    assert!(ready, "a worker never became ready on the cluster");
    handle
}

/// `sorted` as runs of consecutive numbers: `3-5, 9`.
fn ranges(sorted: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

/// When each batch was confirmed and when a send failed, for the
/// producer's recovery times.
#[derive(Default)]
struct Sends {
    confirmed: Mutex<Vec<Instant>>,
    failed: Mutex<Vec<Instant>>,
}

/// The longest time without a confirmed batch within `window` after
/// `kill`.
fn producer_pause(sends: &Sends, kill: Instant, window: Duration) -> Duration {
    let mut last = kill;
    let mut gap = Duration::ZERO;
    for t in sends.confirmed.lock().unwrap().iter() {
        if *t > kill && *t <= kill + window {
            gap = gap.max(*t - last);
            last = *t;
        }
    }
    gap
}

/// Time from `kill` to the first batch confirmed after it and after the
/// last send that failed within `window` of it.
fn producer_recovery(sends: &Sends, kill: Instant, window: Duration) -> Option<Duration> {
    let last_failure = sends
        .failed
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|t| *t > kill && *t < kill + window)
        .max()
        .unwrap_or(kill);
    sends
        .confirmed
        .lock()
        .unwrap()
        .iter()
        .find(|t| **t > last_failure)
        .map(|t| *t - kill)
}

/// Sends every task in batches; a failed send is sent again with the same
/// keys (the same producer: it reconnects by itself). Returns the number
/// of send calls that failed.
async fn send_all(producer: Producer, sent: Arc<AtomicUsize>, sends: Arc<Sends>) -> usize {
    let mut failures = 0;
    for start in (0..TASKS).step_by(BATCH) {
        let tasks: Vec<PreparedTask> = (start..(start + BATCH).min(TASKS))
            .map(|i| {
                let options = SendOptions::new()
                    .queue(QUEUE)
                    .idempotency_key(format!("k-{i}"));
                producer
                    .prepare::<ClusterEffect>(&(i as u64), &options)
                    .unwrap()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match producer.send_all(&tasks).await {
                Ok(_) => break,
                Err(e) => {
                    failures += 1;
                    sends.failed.lock().unwrap().push(Instant::now());
                    eprintln!("send of tasks {start}.. failed ({e}); sending it again");
                    assert!(
                        Instant::now() < deadline,
                        "no send went through for 90 s: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        sends.confirmed.lock().unwrap().push(Instant::now());
        sent.store(start + tasks.len(), Ordering::Relaxed);
    }
    failures
}

async fn wait_sent(sent: &AtomicUsize, n: usize) {
    let reached = eventually(Duration::from_secs(120), || async {
        sent.load(Ordering::Relaxed) >= n
    })
    .await;
    assert!(reached, "{n} tasks were not sent within 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_survive_a_broker_node_and_a_redis_primary_killed() {
    // The workers run in this process: their warnings (store calls that
    // failed, deliveries held or deferred) go to the report.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let amqp = var("CELERIAC_CLUSTER_AMQP");
    let redis = var("CELERIAC_CLUSTER_REDIS");
    let id = uuid::Uuid::now_v7().simple().to_string();
    let ns = format!("t-cluster-{}", &id[id.len() - 10..]);
    let effects = Arc::new(Effects::default());

    // The comma-separated list as `AMQP_ADDR` takes it.
    let producer = Producer::builder(&amqp)
        .namespace(&ns)
        .default_queue(QUEUE)
        .leader_locator(LeaderLocator::Balanced)
        .confirm_timeout(Duration::from_secs(10))
        .store(store(&redis, &ns).await)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("a producer connects to the cluster: {e}"));
    for queue in OTHER_QUEUES {
        producer.ensure_queue(queue).await.unwrap();
    }
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(start_worker(&amqp, &redis, &ns, &effects).await);
    }

    // Quorum queues declared with the balanced locator lead on several
    // nodes.
    let topology = producer.topology().clone();
    let placed = leaders().await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for queue in std::iter::once(QUEUE).chain(OTHER_QUEUES) {
        for name in [
            topology.work_queue(queue),
            topology.dead_letter_queue(queue),
        ] {
            let node = placed.get(&name).cloned().unwrap_or_default();
            *per_node.entry(node).or_insert(0) += 1;
        }
    }
    eprintln!("leaders of the namespace's queues per node: {per_node:?}");
    assert!(
        per_node.len() >= 2 && !per_node.contains_key(""),
        "leaders are not spread: {per_node:?}"
    );

    let started = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let sends = Arc::new(Sends::default());
    let sender = tokio::spawn(send_all(producer.clone(), sent.clone(), sends.clone()));

    // The node leading the work queue dies.
    wait_sent(&sent, KILL_BROKER_AT).await;
    let work_queue = topology.work_queue(QUEUE);
    let leader = leaders()
        .await
        .get(&work_queue)
        .cloned()
        .unwrap_or_default();
    assert!(!leader.is_empty(), "no leader found for {work_queue}");
    let reconnects_before: u64 = workers.iter().map(|w| w.stats().reconnects).sum();
    let broker_kill = Instant::now();
    ctl(&["kill-rabbit", &leader]).await;
    eprintln!(
        "killed RabbitMQ node {leader} (leader of {work_queue}) at {:?}, {} tasks sent",
        broker_kill - started,
        sent.load(Ordering::Relaxed)
    );
    // A worker on the killed node reconnects by itself; one on another node
    // keeps consuming (the queue's new leader serves it). Either way every
    // worker is ready again, and the tasks all run (checked below).
    let workers_back = eventually(Duration::from_secs(60), || async {
        workers.iter().all(WorkerHandle::is_ready)
    })
    .await;
    let worker_reconnects =
        workers.iter().map(|w| w.stats().reconnects).sum::<u64>() - reconnects_before;
    eprintln!("workers ready after the node kill; reconnects: {worker_reconnects}");
    let workers_recovered = broker_kill.elapsed();
    let new_leader = leaders()
        .await
        .get(&work_queue)
        .cloned()
        .unwrap_or_default();
    eprintln!("new leader of {work_queue}: node {new_leader}");

    // Then the Redis primary.
    wait_sent(&sent, KILL_REDIS_AT).await;
    let redis_kill = Instant::now();
    let port = ctl(&["kill-redis-primary"]).await;
    eprintln!(
        "killed the Redis primary (port {}) at {:?}, {} tasks sent",
        port.trim(),
        redis_kill - started,
        sent.load(Ordering::Relaxed)
    );

    let failed_sends = tokio::time::timeout(Duration::from_secs(150), sender)
        .await
        .expect("every task is sent within 150 s")
        .expect("the sender does not panic");
    let all_sent = started.elapsed();
    let channel = {
        let urls = celeriac_producer::addresses::split(&amqp);
        let mut found = None;
        for url in urls {
            if let Ok(c) =
                lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
            {
                found = Some((c.create_channel().await.unwrap(), c));
                break;
            }
        }
        found.expect("a node of the cluster answers")
    };
    let done = eventually(Duration::from_secs(120), || async {
        effects.distinct() >= TASKS
            && celeriac_tests::queue_len(&channel.0, &work_queue).await == 0
            && workers.iter().all(|w| w.stats().in_flight == 0)
    })
    .await;
    let finished = started.elapsed();
    // Result waiting follows the new primary too: the result comes through
    // its pub/sub well before the waiters' 30 s safety re-read.
    let waited = Instant::now();
    let doubled = producer
        .send::<ClusterDouble>(&21, &SendOptions::new().queue(QUEUE))
        .await
        .unwrap()
        .wait(Duration::from_secs(10))
        .await;
    let result_after = waited.elapsed();
    for worker in &workers {
        worker.shutdown();
    }

    let runs = effects.runs.lock().unwrap().clone();
    let lost: Vec<usize> = (0..TASKS)
        .filter(|i| !runs.contains_key(&format!("k-{i}")))
        .collect();
    let duplicated: Vec<(&String, &u32)> = runs.iter().filter(|(_, n)| **n > 1).collect();
    let stats: Vec<_> = workers.iter().map(WorkerHandle::stats).collect();
    let suppressed: u64 = stats.iter().map(|s| s.duplicates_suppressed).sum();
    let reconnects: u64 = stats.iter().map(|s| s.reconnects).sum();
    eprintln!("== cluster failover report");
    eprintln!("tasks sent: {TASKS} in {all_sent:?}; send calls that failed and were sent again: {failed_sends}");
    eprintln!(
        "tasks run: {} distinct keys, {} lost, {} run more than once; deliveries suppressed as duplicates: {suppressed}",
        runs.len(),
        lost.len(),
        duplicated.len()
    );
    if !lost.is_empty() {
        eprintln!("lost task indices: {}", ranges(&lost));
        eprintln!(
            "ready in {work_queue}: {}",
            celeriac_tests::queue_len(&channel.0, &work_queue).await
        );
        for (i, s) in stats.iter().enumerate() {
            eprintln!(
                "worker {i}: received {}, succeeded {}, in flight {}, deferred {}, requeued {}, dead-lettered {}, revoked {}, store errors {}",
                s.received, s.succeeded, s.in_flight, s.deferred, s.requeued, s.dead_lettered, s.revoked, s.store_errors
            );
        }
    }
    eprintln!("all done after {finished:?}; worker reconnects: {reconnects}; a result waited for after the failover came in {result_after:?}");
    let between = redis_kill - broker_kill;
    let after = Duration::from_secs(30);
    eprintln!(
        "broker node kill: producer confirmed again after {:?} (longest pause between confirmed batches {:?}), workers consuming again after {workers_recovered:?}, longest pause in task runs {:?}",
        producer_recovery(&sends, broker_kill, between),
        producer_pause(&sends, broker_kill, between),
        effects.longest_gap(broker_kill, between)
    );
    eprintln!(
        "Redis primary kill: producer confirmed again after {:?} (longest pause between confirmed batches {:?}), longest pause in task runs {:?}",
        producer_recovery(&sends, redis_kill, after),
        producer_pause(&sends, redis_kill, after),
        effects.longest_gap(redis_kill, after)
    );

    assert!(
        workers_back,
        "the workers were not ready again within 60 s after the broker node died"
    );
    assert!(
        done,
        "not every task ran within 120 s after the last send: {} lost",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} tasks lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        duplicated.is_empty(),
        "{} keyed tasks ran more than once: {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)]
    );
    assert_eq!(
        doubled.ok(),
        Some(42),
        "no result waited for on the new Redis primary"
    );
    assert!(
        producer_recovery(&sends, redis_kill, after).is_some(),
        "the producer confirmed nothing after the Redis primary died"
    );
}

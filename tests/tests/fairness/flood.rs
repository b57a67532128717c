//! One tenant floods a fair queue; another tenant's few tasks still finish
//! within the bound of SPEC.md section 21, long before the flood drains,
//! and no task is lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_producer::{PreparedTask, Producer, SendOptions};
use celeriac_schema::TaskId;
use celeriac_tests::{eventually, InProcessWorker};

use crate::support::{fair_namespace, fair_producer, tenants_in_different_shards, Work};

const SHARDS: u16 = 8;
const CONCURRENCY: usize = 4;
/// Tasks of the flooding tenant.
const FLOOD: usize = 6000;
/// Tasks of the other tenant.
const FEW: usize = 100;
/// What one task takes.
const TASK: Duration = Duration::from_millis(5);
/// Broker round trips on a loaded machine, on top of the bound.
const LATENCY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Log {
    a_started: Vec<Instant>,
    a_done: usize,
    b_started: Vec<Instant>,
    b_done: Vec<Instant>,
    ran: HashSet<TaskId>,
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn prepare(producer: &Producer, tenant: &str, count: usize) -> Vec<PreparedTask> {
    let options = SendOptions::new().tenant(tenant);
    let ms = TASK.as_millis() as u64;
    (0..count)
        .map(|_| producer.prepare::<Work>(&ms, &options).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_delays_another_by_at_most_the_stated_bound() {
    let ns = fair_namespace("fair-flood", SHARDS);
    let (a, b) = tenants_in_different_shards(SHARDS);
    let producer = fair_producer(&ns, u64::from(SHARDS)).await;
    let log: Arc<Mutex<Log>> = Arc::default();
    let mut registry = Registry::new();
    let seen = log.clone();
    let b_name = b.clone();
    registry.register::<Work, _, _>(move |ms, ctx: TaskContext| {
        let is_b = ctx.envelope().tenant.as_deref() == Some(b_name.as_str());
        {
            let mut log = lock(&seen);
            let now = Instant::now();
            if is_b {
                log.b_started.push(now);
            } else {
                log.a_started.push(now);
            }
        }
        let seen = seen.clone();
        let id = ctx.task_id();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let mut log = lock(&seen);
            if is_b {
                log.b_done.push(Instant::now());
            } else {
                log.a_done += 1;
            }
            log.ran.insert(id);
            Ok::<_, TaskError>(())
        }
    });
    let worker = InProcessWorker::start(&ns, registry, |w| {
        w.fair_queue("default", u64::from(SHARDS))
            .concurrency(CONCURRENCY)
    })
    .await;

    let mut sent: HashSet<TaskId> = HashSet::new();
    sent.extend(
        producer
            .send_all(&prepare(&producer, &a, FLOOD))
            .await
            .unwrap(),
    );

    // The flood's throughput, measured once it runs steadily.
    assert!(
        eventually(Duration::from_secs(30), || async {
            lock(&log).a_done >= 200
        })
        .await,
        "the flood does not run"
    );
    let (t0, n0) = (Instant::now(), lock(&log).a_done);
    assert!(
        eventually(Duration::from_secs(30), || async {
            lock(&log).a_done >= n0 + 300
        })
        .await,
        "the flood stalls"
    );
    let (t1, n1) = (Instant::now(), lock(&log).a_done);
    let throughput = (n1 - n0) as f64 / (t1 - t0).as_secs_f64();

    let send_start = Instant::now();
    let a_backlog_at_send = FLOOD - lock(&log).a_done;
    sent.extend(
        producer
            .send_all(&prepare(&producer, &b, FEW))
            .await
            .unwrap(),
    );
    let publish = send_start.elapsed();
    assert!(
        eventually(Duration::from_secs(30), || async {
            lock(&log).b_done.len() == FEW
        })
        .await,
        "tenant {b}'s tasks did not all finish"
    );

    let (b_time, a_starts_between, a_done_then) = {
        let log = lock(&log);
        let first = log.b_started.iter().min().copied().unwrap();
        let last = log.b_started.iter().max().copied().unwrap();
        let between = log
            .a_started
            .iter()
            .filter(|t| **t > first && **t < last)
            .count();
        let done = log.b_done.iter().max().copied().unwrap();
        (done - send_start, between, log.a_done)
    };
    // SPEC.md section 21: lanes L = shards + the plain queue; between two
    // slots of a waiting lane, at most L - 1 other lanes get one.
    let lanes = usize::from(SHARDS) + 1;
    let grant_bound = (lanes - 1) * FEW;
    let time_bound = publish
        + Duration::from_secs_f64((lanes * FEW + CONCURRENCY) as f64 / throughput)
        + TASK
        + LATENCY;
    let flood_left = FLOOD - a_done_then;
    eprintln!(
        "throughput {throughput:.0}/s; {b}: {FEW} tasks in {b_time:?} (bound {time_bound:?}, \
         publish {publish:?}); {a} started {a_starts_between} tasks meanwhile (bound \
         {grant_bound}); {a} backlog {a_backlog_at_send} at the send, {flood_left} after"
    );
    assert!(
        a_starts_between <= grant_bound,
        "{a} started {a_starts_between} tasks while {b} waited, over the bound of {grant_bound}"
    );
    assert!(
        b_time <= time_bound,
        "{b}'s tasks took {b_time:?}, over the bound of {time_bound:?}"
    );
    // Long before the flood drains: most of it is still waiting.
    assert!(
        flood_left * 2 >= a_backlog_at_send,
        "{a}'s backlog went from {a_backlog_at_send} to {flood_left} before {b} finished"
    );
    let drain = Duration::from_secs_f64(flood_left as f64 / throughput);
    assert!(
        b_time < drain,
        "{b} took {b_time:?}, the flood's rest takes {drain:?}"
    );

    // Nothing lost: every task sent runs.
    assert!(
        eventually(Duration::from_secs(60), || async {
            lock(&log).ran.len() == sent.len()
        })
        .await,
        "only {} of {} tasks ran",
        lock(&log).ran.len(),
        sent.len()
    );
    assert_eq!(
        lock(&log).ran,
        sent,
        "the tasks that ran are the tasks sent"
    );
    let stats = worker.stop().await;
    assert_eq!(stats.dead_lettered, 0);
}

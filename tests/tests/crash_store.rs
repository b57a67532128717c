//! Crash test with the real broker and Redis: 20,000 tasks, 1,000 of them
//! published twice, while worker processes are SIGKILLed and restarted
//! again and again. At the end every task has succeeded with its result,
//! none is lost, and no run started after its key had succeeded; every
//! re-run is explained by a killed worker.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_producer::{Producer, SendOptions};
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_schema::{TaskId, TaskState};
use celeriac_tests::test_tasks::{Effect, EffectInput};
use celeriac_tests::{
    broker, namespace, read_record, record_file, redis, redis_store, WorkerProcess,
};
use futures_util::StreamExt;

const TASKS: u64 = 20_000;
const DUPLICATES: usize = 1_000;
const WORKERS: usize = 3;
/// A delivery limit high enough that repeated kills never dead-letter a
/// task (each kill hands its in-flight and prefetched deliveries back).
const DELIVERY_LIMIT: &str = "50";

fn worker(ns: &str, url: &str, redis_url: &str, record: &Path) -> WorkerProcess {
    WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        url,
        ns,
        record,
        &[
            "--redis-url",
            redis_url,
            "--run-lease-ttl",
            "2s",
            "--delivery-limit",
            DELIVERY_LIMIT,
            "--concurrency",
            "32",
            "--prefetch",
            "64",
            "--grace",
            "2s",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_repeated_kills_and_duplicates_without_running_twice() {
    let ns = namespace("crash-store");
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let producer = Producer::builder(&broker.url)
        .namespace(&*ns)
        .delivery_limit(DELIVERY_LIMIT.parse().unwrap())
        .store(store.clone())
        .connect()
        .await
        .unwrap();
    let record = record_file("crash-store");
    let started = Instant::now();

    let mut workers: Vec<WorkerProcess> = (0..WORKERS)
        .map(|_| worker(&ns, &broker.url, &redis_url, &record))
        .collect();
    let mut tasks = Vec::with_capacity(TASKS as usize + DUPLICATES);
    for n in 0..TASKS {
        tasks.push(
            producer
                .prepare::<Effect>(&EffectInput { n, ms: 20 }, &SendOptions::new())
                .unwrap(),
        );
    }
    // The first 1,000 envelopes again, byte for byte the same task.
    let duplicates: Vec<_> = tasks[..DUPLICATES].to_vec();
    let expected: HashMap<TaskId, u64> = tasks
        .iter()
        .enumerate()
        .map(|(n, t)| (t.envelope.id, n as u64 * 2))
        .collect();

    let mut killed: HashSet<u32> = HashSet::new();
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for chunk in tasks.chunks(2_000) {
                producer.send_all(chunk).await.unwrap();
            }
            producer.send_all(&duplicates).await.unwrap();
        })
    };

    // Kill one worker every 700 ms, round robin, and start a new one,
    // until every task has finished at least once.
    let mut turn = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let ends: HashSet<String> = read_record(&record)
            .iter()
            .filter_map(|l| l.strip_prefix("end "))
            .filter_map(|l| l.split(' ').next().map(str::to_owned))
            .collect();
        if ends.len() as u64 >= TASKS && sender.is_finished() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {TASKS} tasks finished within the deadline",
            ends.len()
        );
        if killed.len() < 30 {
            let victim = &mut workers[turn % WORKERS];
            killed.insert(victim.pid());
            victim.signal("KILL");
            victim.wait_timeout(Duration::from_secs(5));
            workers[turn % WORKERS] = worker(&ns, &broker.url, &redis_url, &record);
            turn += 1;
        }
    }
    sender.await.unwrap();
    // Let the duplicates still in the queue be seen and suppressed.
    let (_conn, channel) = broker.channel().await;
    let work_queue = ns.topology().work_queue("default");
    let drained = celeriac_tests::eventually(Duration::from_secs(60), || async {
        celeriac_tests::queue_len(&channel, &work_queue).await == 0
    })
    .await;
    assert!(drained, "the work queue never drained");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for worker in &workers {
        worker.signal("TERM");
    }
    for worker in &mut workers {
        assert!(worker.wait_timeout(Duration::from_secs(15)).is_some());
    }

    // Every task succeeded, with its result, in the store.
    let records: Vec<_> = futures_util::stream::iter(expected.keys().copied())
        .map(|id| {
            let store = store.clone();
            async move { (id, store.get(id).await.unwrap()) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut finished_at: HashMap<TaskId, u64> = HashMap::new();
    let mut not_succeeded = Vec::new();
    for (id, record) in records {
        let Some(record) = record else {
            not_succeeded.push((id, None));
            continue;
        };
        if record.state != TaskState::Succeeded {
            not_succeeded.push((id, Some(record.state)));
            continue;
        }
        assert_eq!(
            record.decode_result::<u64>().unwrap(),
            Some(expected[&id]),
            "task {id} has a wrong or unreadable result"
        );
        finished_at.insert(id, record.finished_at.unwrap());
    }
    assert!(
        not_succeeded.is_empty(),
        "{} tasks did not succeed, e.g. {:?}",
        not_succeeded.len(),
        &not_succeeded[..not_succeeded.len().min(5)]
    );

    // Every run, from the effect log: `{phase} {task id} {pid} {unix µs}`.
    let lines = read_record(&record);
    let mut starts: HashMap<TaskId, Vec<(u32, u64)>> = HashMap::new();
    let mut ends: HashMap<TaskId, Vec<u32>> = HashMap::new();
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        let [phase, id, pid, at] = parts[..] else {
            panic!("malformed record line {line:?}");
        };
        let id: TaskId = id.parse().unwrap();
        let pid: u32 = pid.parse().unwrap();
        match phase {
            "start" => starts
                .entry(id)
                .or_default()
                .push((pid, at.parse().unwrap())),
            "end" => ends.entry(id).or_default().push(pid),
            other => panic!("unknown phase {other:?}"),
        }
    }
    assert_eq!(starts.len() as u64, TASKS, "every task ran");
    let mut reruns = 0;
    let mut reruns_after_effect = 0;
    for (id, runs) in &starts {
        // No run started after the key had succeeded (µs vs ms).
        let done_ms = finished_at[id];
        for (pid, at_us) in runs {
            assert!(
                at_us / 1000 <= done_ms,
                "task {id} started in {pid} at {at_us} µs, after it succeeded at {done_ms} ms"
            );
        }
        // Every run but the last was cut short by a kill, or finished its
        // effect in a worker killed before it stored the outcome.
        let mut runs = runs.clone();
        runs.sort_by_key(|(_, at)| *at);
        for (pid, _) in &runs[..runs.len() - 1] {
            assert!(
                killed.contains(pid),
                "task {id} ran again after a run in {pid}, a worker that was never killed"
            );
            reruns += 1;
            if ends.get(id).is_some_and(|e| e.contains(pid)) {
                reruns_after_effect += 1;
            }
        }
    }
    let report = serde_json::json!({
        "tasks": TASKS,
        "published_twice": DUPLICATES,
        "workers_killed": killed.len(),
        "reruns_from_killed_workers": reruns,
        "reruns_whose_killed_run_had_finished_its_effect": reruns_after_effect,
        "runs_started": lines.iter().filter(|l| l.starts_with("start ")).count(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    eprintln!("crash test: {report}");
    assert!(killed.len() >= 5, "the run was too short to kill workers");
}

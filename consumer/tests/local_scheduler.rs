//! The in-process scheduler: readiness, retries, failure propagation,
//! timeouts, cancellation and resource pools.
//!
//! Concurrency is proven with barriers and channels, never with sleeps: a
//! test that the scheduler fails hangs on a barrier until a generous bound
//! and then fails with a message.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use celeriac_consumer::local::{CANCELLED, DEPENDENCY_FAILED};
use celeriac_consumer::{
    LocalError, LocalScheduler, LocalTask, TaskError, TaskOptions, TaskResult, TaskStatus, PANIC,
    TIME_LIMIT,
};
use celeriac_schema::dag::DagError;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Barrier};

/// How long a test waits for something that should happen at once.
const BOUND: Duration = Duration::from_secs(20);

fn ok(value: Value) -> LocalTask {
    LocalTask::blocking(move |_| Ok::<_, TaskError>(value.clone()))
}

fn failing(kind: &'static str) -> LocalTask {
    LocalTask::blocking(move |ctx| {
        Err::<(), _>(TaskError::new(
            kind,
            format!("{} failed on attempt {}", ctx.id(), ctx.attempt()),
        ))
    })
}

/// A task that returns 1 plus the sum of its inputs.
fn sum_plus_one() -> LocalTask {
    LocalTask::new(|ctx| async move {
        let sum: i64 = ctx.inputs().map(|(_, v)| v.as_i64().unwrap_or(0)).sum();
        Ok::<_, TaskError>(sum + 1)
    })
}

async fn run(scheduler: LocalScheduler) -> HashMap<String, TaskResult> {
    tokio::time::timeout(BOUND, scheduler.run())
        .await
        .expect("the run finished in time")
        .expect("the workflow is valid")
}

fn assert_outcome(
    results: &HashMap<String, TaskResult>,
    id: &str,
    status: TaskStatus,
    attempts: u32,
) {
    let r = &results[id];
    assert_eq!((r.status, r.attempts), (status, attempts), "{id}: {r:?}");
}

/// Counts how many holders are inside at once, and the most ever.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// A barrier for blocking threads that gives up after [`BOUND`].
struct BlockingBarrier {
    parties: usize,
    arrived: Mutex<usize>,
    all_in: Condvar,
}

impl BlockingBarrier {
    fn new(parties: usize) -> Self {
        BlockingBarrier {
            parties,
            arrived: Mutex::new(0),
            all_in: Condvar::new(),
        }
    }

    fn wait(&self) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_in.notify_all();
        let (arrived, timeout) = self
            .all_in
            .wait_timeout_while(arrived, BOUND, |n| *n < self.parties)
            .unwrap();
        drop(arrived);
        !timeout.timed_out()
    }
}

#[tokio::test]
async fn empty_dag_yields_an_empty_map() {
    let results = run(LocalScheduler::new()).await;
    assert!(results.is_empty());
}

#[tokio::test]
async fn single_task() {
    let mut s = LocalScheduler::new();
    s.add_task("only", ok(json!({"x": 1})), &[], 0).unwrap();
    let results = run(s).await;
    assert_eq!(results.len(), 1);
    assert_outcome(&results, "only", TaskStatus::Success, 1);
    assert_eq!(results["only"].result, Some(json!({"x": 1})));
    assert_eq!(results["only"].error, None);
}

#[tokio::test]
async fn default_pool_is_four_workers() {
    assert_eq!(LocalScheduler::new().max_workers(), 4);
    assert_eq!(LocalScheduler::default().max_workers(), 4);
}

#[tokio::test]
async fn duplicate_id_is_refused() {
    let mut s = LocalScheduler::new();
    s.add_task("a", ok(json!(1)), &[], 0).unwrap();
    let err = s.add_task("a", ok(json!(2)), &[], 0).unwrap_err();
    assert_eq!(err, LocalError::DuplicateTask { id: "a".into() });
    assert!(err.to_string().contains("`a`"), "{err}");
    let err = s
        .add_task_with("a", ok(json!(3)), TaskOptions::new())
        .unwrap_err();
    assert_eq!(err, LocalError::DuplicateTask { id: "a".into() });
    assert_eq!(s.len(), 1);
}

/// A task that counts its runs, for checking that nothing ran.
fn counted(counter: &Arc<AtomicUsize>) -> LocalTask {
    let counter = counter.clone();
    LocalTask::blocking(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, TaskError>(())
    })
}

#[tokio::test]
async fn cycle_is_refused_by_name_before_anything_runs() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut s = LocalScheduler::new();
    s.add_task("e", counted(&ran), &[], 0).unwrap();
    s.add_task("a", counted(&ran), &["c"], 0).unwrap();
    s.add_task("b", counted(&ran), &["a"], 0).unwrap();
    s.add_task("c", counted(&ran), &["b"], 0).unwrap();
    let err = s.run().await.unwrap_err();
    assert_eq!(
        err,
        LocalError::Graph(DagError::Cycle {
            path: vec!["a".into(), "b".into(), "c".into()]
        })
    );
    assert!(err.to_string().contains("a -> b -> c -> a"), "{err}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn missing_dependency_is_refused_by_name_before_anything_runs() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut s = LocalScheduler::new();
    s.add_task("a", counted(&ran), &[], 0).unwrap();
    s.add_task("b", counted(&ran), &["a", "ghost"], 0).unwrap();
    let err = s.run().await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`b`") && msg.contains("`ghost`"), "{msg}");
    assert_eq!(
        err,
        LocalError::Graph(DagError::UnknownDependency {
            node: "b".into(),
            dependency: "ghost".into()
        })
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn results_flow_to_dependents_by_name() {
    let mut s = LocalScheduler::new();
    s.add_task("a", ok(json!(1)), &[], 0).unwrap();
    s.add_task("b", ok(json!("bee")), &[], 0).unwrap();
    s.add_task(
        "join",
        LocalTask::new(|ctx| async move {
            assert_eq!(ctx.inputs().len(), 2);
            assert_eq!(ctx.input("missing"), None);
            Ok::<_, TaskError>(json!({
                "a": ctx.input("a").cloned(),
                "order": ctx.inputs().map(|(id, _)| id.to_owned()).collect::<Vec<_>>(),
                "all": ctx.inputs_object(),
            }))
        }),
        &["b", "a"],
        0,
    )
    .unwrap();
    let results = run(s).await;
    assert_eq!(
        results["join"].result,
        Some(json!({"a": 1, "order": ["b", "a"], "all": {"a": 1, "b": "bee"}}))
    );
}

#[tokio::test]
async fn diamond_sums_through_its_edges() {
    let mut s = LocalScheduler::new();
    s.add_task("d", sum_plus_one(), &["b", "c"], 0).unwrap();
    s.add_task("b", sum_plus_one(), &["a"], 0).unwrap();
    s.add_task("c", sum_plus_one(), &["a"], 0).unwrap();
    s.add_task("a", sum_plus_one(), &[], 0).unwrap();
    s.add_task("e", sum_plus_one(), &[], 0).unwrap();
    let results = run(s).await;
    let values: HashMap<&str, Option<i64>> = results
        .iter()
        .map(|(id, r)| (id.as_str(), r.result.as_ref().and_then(Value::as_i64)))
        .collect();
    assert_eq!(
        values,
        HashMap::from([
            ("a", Some(1)),
            ("b", Some(2)),
            ("c", Some(2)),
            ("d", Some(5)),
            ("e", Some(1))
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ready_async_task_starts_at_once_up_to_the_pool() {
    for workers in [1, 2, 4, 7] {
        let barrier = Arc::new(Barrier::new(workers));
        let mut s = LocalScheduler::with_max_workers(workers);
        for i in 0..workers {
            let barrier = barrier.clone();
            let task = LocalTask::new(move |_| {
                let barrier = barrier.clone();
                async move {
                    tokio::time::timeout(BOUND, barrier.wait())
                        .await
                        .map_err(|_| TaskError::new("Starved", "not every party arrived"))?;
                    Ok::<_, TaskError>(())
                }
            });
            s.add_task(format!("t{i}"), task, &[], 0).unwrap();
        }
        let results = run(s).await;
        assert!(
            results.values().all(TaskResult::is_success),
            "{workers}: {results:?}"
        );
    }
}

#[tokio::test]
async fn every_ready_blocking_task_starts_at_once_up_to_the_pool() {
    let workers = 4;
    let barrier = Arc::new(BlockingBarrier::new(workers));
    let mut s = LocalScheduler::new();
    for i in 0..workers {
        let barrier = barrier.clone();
        let task = LocalTask::blocking(move |_| {
            if barrier.wait() {
                Ok(())
            } else {
                Err(TaskError::new("Starved", "not every party arrived"))
            }
        });
        s.add_task(format!("t{i}"), task, &[], 0).unwrap();
    }
    let results = run(s).await;
    assert!(results.values().all(TaskResult::is_success), "{results:?}");
}

#[tokio::test]
async fn never_more_running_than_max_workers() {
    for workers in [1, 3] {
        let gauge = Arc::new(Gauge::default());
        let mut s = LocalScheduler::with_max_workers(workers);
        for i in 0..30 {
            let gauge = gauge.clone();
            let task = LocalTask::new(move |_| {
                let gauge = gauge.clone();
                async move {
                    gauge.enter();
                    for _ in 0..5 {
                        tokio::task::yield_now().await;
                    }
                    gauge.leave();
                    Ok::<_, TaskError>(())
                }
            });
            s.add_task(format!("t{i}"), task, &[], 0).unwrap();
        }
        let results = run(s).await;
        assert_eq!(results.len(), 30);
        assert!(gauge.max() <= workers, "{} > {workers}", gauge.max());
        assert!(gauge.max() >= 1);
    }
}

/// `slow` holds its worker until `c` has run; `c` depends only on `a`. With
/// levels, `c` would wait for `slow` (same level) and `slow` would give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_starts_when_its_own_dependencies_finish() {
    let (c_done, c_seen) = oneshot::channel::<()>();
    let c_done = Arc::new(Mutex::new(Some(c_done)));
    let c_seen = Arc::new(tokio::sync::Mutex::new(Some(c_seen)));
    let order = Arc::new(Mutex::new(Vec::new()));

    let mut s = LocalScheduler::with_max_workers(2);
    let log = |id: &'static str, order: &Arc<Mutex<Vec<&'static str>>>| {
        order.lock().unwrap().push(id);
    };
    s.add_task("a", ok(json!(null)), &[], 0).unwrap();
    {
        let order = order.clone();
        s.add_task(
            "slow",
            LocalTask::new(move |_| {
                let c_seen = c_seen.clone();
                let order = order.clone();
                async move {
                    let rx = c_seen.lock().await.take();
                    let Some(rx) = rx else {
                        return Err(TaskError::fatal("Twice", "slow ran twice"));
                    };
                    tokio::time::timeout(BOUND, rx)
                        .await
                        .map_err(|_| TaskError::fatal("Level", "c did not start while slow ran"))?
                        .map_err(|_| TaskError::fatal("Dropped", "c dropped its signal"))?;
                    log("slow", &order);
                    Ok(())
                }
            }),
            &[],
            0,
        )
        .unwrap();
    }
    {
        let order = order.clone();
        s.add_task(
            "c",
            LocalTask::blocking(move |_| {
                log("c", &order);
                if let Some(tx) = c_done.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                Ok::<_, TaskError>(())
            }),
            &["a"],
            0,
        )
        .unwrap();
    }
    s.add_task("after_slow", ok(json!(null)), &["slow"], 0)
        .unwrap();
    let results = run(s).await;
    for id in ["a", "slow", "c", "after_slow"] {
        assert_outcome(&results, id, TaskStatus::Success, 1);
    }
    assert_eq!(*order.lock().unwrap(), ["c", "slow"]);
}

#[tokio::test]
async fn retries_are_counted() {
    let mut s = LocalScheduler::new();
    s.add_task("first_time", ok(json!(1)), &[], 5).unwrap();
    // Fails on attempts 1 and 2, succeeds on 3.
    let flaky = LocalTask::blocking(|ctx| {
        if ctx.attempt() <= 2 {
            Err(TaskError::new(
                "Flaky",
                format!("attempt {}", ctx.attempt()),
            ))
        } else {
            Ok(ctx.attempt())
        }
    });
    s.add_task("flaky", flaky.clone(), &[], 2).unwrap();
    s.add_task("too_flaky", flaky, &[], 1).unwrap();
    s.add_task("broken", failing("Broken"), &[], 2).unwrap();
    s.add_task("no_retries", failing("Broken"), &[], 0).unwrap();
    s.add_task(
        "fatal",
        LocalTask::blocking(|_| Err::<(), _>(TaskError::fatal("Invalid", "cannot be fixed"))),
        &[],
        5,
    )
    .unwrap();
    let results = run(s).await;
    assert_outcome(&results, "first_time", TaskStatus::Success, 1);
    assert_outcome(&results, "flaky", TaskStatus::Success, 3);
    assert_eq!(results["flaky"].result, Some(json!(3)));
    assert_outcome(&results, "too_flaky", TaskStatus::Failed, 2);
    assert_eq!(
        results["too_flaky"].error.as_ref().unwrap().message(),
        "attempt 2"
    );
    assert_outcome(&results, "broken", TaskStatus::Failed, 3);
    let error = results["broken"].error.as_ref().unwrap();
    assert_eq!(error.kind(), "Broken");
    assert_eq!(error.message(), "broken failed on attempt 3");
    assert_eq!(results["broken"].result, None);
    assert_outcome(&results, "no_retries", TaskStatus::Failed, 1);
    assert_outcome(&results, "fatal", TaskStatus::Failed, 1);
}

#[tokio::test]
async fn a_failure_skips_everything_downstream_and_nothing_else() {
    let mut s = LocalScheduler::new();
    s.add_task("a", failing("Broken"), &[], 1).unwrap();
    s.add_task("b", ok(json!(1)), &["a"], 0).unwrap();
    s.add_task("c", ok(json!(1)), &["b"], 3).unwrap();
    s.add_task("e", ok(json!(1)), &[], 0).unwrap();
    s.add_task("d", ok(json!(1)), &["c", "e"], 0).unwrap();
    s.add_task("f", ok(json!(1)), &["e"], 0).unwrap();
    s.add_task("g", ok(json!(1)), &["f"], 0).unwrap();
    let results = run(s).await;
    assert_outcome(&results, "a", TaskStatus::Failed, 2);
    for id in ["b", "c", "d"] {
        assert_outcome(&results, id, TaskStatus::Skipped, 0);
        let error = results[id].error.as_ref().unwrap();
        assert_eq!(error.kind(), DEPENDENCY_FAILED);
        assert!(error.message().contains("`a`"), "{error}");
        assert_eq!(results[id].result, None);
    }
    for id in ["e", "f", "g"] {
        assert_outcome(&results, id, TaskStatus::Success, 1);
    }
}

#[tokio::test]
async fn an_all_failing_dag_reports_every_task() {
    let mut s = LocalScheduler::with_max_workers(2);
    for i in 0..10 {
        s.add_task(format!("root{i}"), failing("Broken"), &[], 1)
            .unwrap();
        let dep = format!("root{i}");
        s.add_task(format!("leaf{i}"), failing("Broken"), &[dep.as_str()], 1)
            .unwrap();
    }
    let results = run(s).await;
    assert_eq!(results.len(), 20);
    for i in 0..10 {
        assert_outcome(&results, &format!("root{i}"), TaskStatus::Failed, 2);
        assert_outcome(&results, &format!("leaf{i}"), TaskStatus::Skipped, 0);
    }
}

#[tokio::test]
async fn panics_are_failures() {
    let mut s = LocalScheduler::new();
    s.add_task(
        "sync",
        LocalTask::blocking(|_| -> Result<(), TaskError> { panic!("sync boom") }),
        &[],
        1,
    )
    .unwrap();
    s.add_task(
        "async",
        LocalTask::new(|_| async {
            if true {
                panic!("async boom")
            } else {
                Ok::<_, TaskError>(())
            }
        }),
        &[],
        0,
    )
    .unwrap();
    s.add_task("after", ok(json!(1)), &["async"], 0).unwrap();
    let results = run(s).await;
    assert_outcome(&results, "sync", TaskStatus::Failed, 2);
    assert_eq!(results["sync"].error.as_ref().unwrap().kind(), PANIC);
    assert_eq!(
        results["sync"].error.as_ref().unwrap().message(),
        "sync boom"
    );
    assert_outcome(&results, "async", TaskStatus::Failed, 1);
    assert_eq!(
        results["async"].error.as_ref().unwrap().message(),
        "async boom"
    );
    assert_outcome(&results, "after", TaskStatus::Skipped, 0);
}

#[tokio::test]
async fn timeouts_fail_an_attempt_and_are_retried() {
    let started = Instant::now();
    let mut s = LocalScheduler::new();
    let forever = LocalTask::new(|_| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, TaskError>(())
    });
    s.add_task_with(
        "forever",
        forever,
        TaskOptions::new()
            .retries(1)
            .timeout(Duration::from_millis(50)),
    )
    .unwrap();
    // Hangs on its first attempt only.
    let second_time_lucky = LocalTask::new(|ctx| async move {
        if ctx.attempt() == 1 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok::<_, TaskError>(ctx.attempt())
    });
    s.add_task_with(
        "second_time_lucky",
        second_time_lucky,
        TaskOptions::new()
            .retries(3)
            .timeout(Duration::from_millis(50)),
    )
    .unwrap();
    s.add_task("after", ok(json!(1)), &["forever"], 0).unwrap();
    // A generous timeout does not get in the way.
    s.add_task_with("quick", ok(json!(1)), TaskOptions::new().timeout(BOUND))
        .unwrap();
    let results = run(s).await;
    assert_outcome(&results, "forever", TaskStatus::Failed, 2);
    let error = results["forever"].error.as_ref().unwrap();
    assert_eq!(error.kind(), TIME_LIMIT);
    assert!(error.message().contains("attempt 2"), "{error}");
    assert_outcome(&results, "second_time_lucky", TaskStatus::Success, 2);
    assert_outcome(&results, "after", TaskStatus::Skipped, 0);
    assert_outcome(&results, "quick", TaskStatus::Success, 1);
    assert!(started.elapsed() < BOUND);
}

#[tokio::test]
async fn a_blocking_task_past_its_timeout_is_told_to_stop() {
    let told = Arc::new(AtomicBool::new(false));
    let mut s = LocalScheduler::new();
    let told_in_task = told.clone();
    let spin = LocalTask::blocking(move |ctx| {
        let deadline = Instant::now() + BOUND;
        while !ctx.is_cancelled() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        told_in_task.store(ctx.is_cancelled(), Ordering::SeqCst);
        Ok::<_, TaskError>(())
    });
    s.add_task_with(
        "spin",
        spin,
        TaskOptions::new().timeout(Duration::from_millis(30)),
    )
    .unwrap();
    let results = run(s).await;
    assert_outcome(&results, "spin", TaskStatus::Failed, 1);
    assert_eq!(results["spin"].error.as_ref().unwrap().kind(), TIME_LIMIT);
    // The abandoned thread sees its token and returns soon after.
    let deadline = Instant::now() + BOUND;
    while !told.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(told.load(Ordering::SeqCst));
}

/// A task that reports it started, then waits for its token (giving up
/// after [`BOUND`]) and fails with kind `Cancelled`.
fn waits_for_cancel(started: oneshot::Sender<()>) -> LocalTask {
    let started = Arc::new(Mutex::new(Some(started)));
    LocalTask::new(move |ctx| {
        let started = started.lock().unwrap().take();
        async move {
            if let Some(tx) = started {
                let _ = tx.send(());
            }
            tokio::time::timeout(BOUND, ctx.cancellation_token().cancelled())
                .await
                .map_err(|_| TaskError::fatal("NotCancelled", "no cancellation came"))?;
            Err::<(), _>(TaskError::new(CANCELLED, "stopped on request"))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_cancels_its_dependents() {
    let (started, running) = oneshot::channel();
    let mut s = LocalScheduler::new();
    s.add_task("a", waits_for_cancel(started), &[], 3).unwrap();
    s.add_task("b", ok(json!(1)), &["a"], 0).unwrap();
    s.add_task("c", ok(json!(1)), &["b"], 0).unwrap();
    s.add_task("e", ok(json!(1)), &[], 0).unwrap();
    let handle = s.cancel_handle();
    let run = tokio::spawn(run(s));
    tokio::time::timeout(BOUND, running).await.unwrap().unwrap();
    handle.cancel("a");
    handle.cancel("no-such-task");
    let results = run.await.unwrap();
    // Not retried once cancelled, although it has retries left.
    assert_outcome(&results, "a", TaskStatus::Failed, 1);
    assert_eq!(results["a"].error.as_ref().unwrap().kind(), CANCELLED);
    for id in ["b", "c"] {
        assert_outcome(&results, id, TaskStatus::Skipped, 0);
        assert_eq!(results[id].error.as_ref().unwrap().kind(), CANCELLED);
    }
    assert_outcome(&results, "e", TaskStatus::Success, 1);
    assert!(!handle.is_cancelled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_finished_task_cancels_its_running_dependents() {
    let (started, running) = oneshot::channel();
    let mut s = LocalScheduler::new();
    s.add_task("a", ok(json!(1)), &[], 0).unwrap();
    s.add_task("b", waits_for_cancel(started), &["a"], 0)
        .unwrap();
    s.add_task("c", ok(json!(1)), &["b"], 0).unwrap();
    let handle = s.cancel_handle();
    let run = tokio::spawn(run(s));
    tokio::time::timeout(BOUND, running).await.unwrap().unwrap();
    handle.cancel("a");
    let results = run.await.unwrap();
    assert_outcome(&results, "a", TaskStatus::Success, 1);
    assert_outcome(&results, "b", TaskStatus::Failed, 1);
    assert_eq!(results["b"].error.as_ref().unwrap().kind(), CANCELLED);
    assert_outcome(&results, "c", TaskStatus::Skipped, 0);
}

#[tokio::test]
async fn cancelling_before_the_run_skips_the_task_and_its_dependents() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut s = LocalScheduler::new();
    s.add_task("a", counted(&ran), &[], 0).unwrap();
    s.add_task("b", counted(&ran), &["a"], 0).unwrap();
    s.add_task("e", counted(&ran), &[], 0).unwrap();
    s.cancel_handle().cancel("a");
    let results = run(s).await;
    assert_outcome(&results, "a", TaskStatus::Skipped, 0);
    assert_outcome(&results, "b", TaskStatus::Skipped, 0);
    assert_outcome(&results, "e", TaskStatus::Success, 1);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_all_starts_nothing_new() {
    let ran = Arc::new(AtomicUsize::new(0));
    let (started, running) = oneshot::channel();
    let mut s = LocalScheduler::with_max_workers(1);
    s.add_task("a", waits_for_cancel(started), &[], 5).unwrap();
    for id in ["x", "y", "z"] {
        s.add_task(id, counted(&ran), &[], 0).unwrap();
    }
    s.add_task("after", counted(&ran), &["a"], 0).unwrap();
    let handle = s.cancel_handle();
    let run = tokio::spawn(run(s));
    tokio::time::timeout(BOUND, running).await.unwrap().unwrap();
    handle.cancel_all();
    let results = run.await.unwrap();
    assert!(handle.is_cancelled());
    assert_outcome(&results, "a", TaskStatus::Failed, 1);
    for id in ["x", "y", "z"] {
        assert_outcome(&results, id, TaskStatus::Skipped, 0);
        assert_eq!(results[id].error.as_ref().unwrap().kind(), CANCELLED);
    }
    // `a` stopped with an error, so its dependent is skipped for that.
    assert_outcome(&results, "after", TaskStatus::Skipped, 0);
    assert_eq!(
        results["after"].error.as_ref().unwrap().kind(),
        DEPENDENCY_FAILED
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

/// Four workers and a `gpu` pool of 2: two `gpu` tasks and two others meet
/// at a 4-party barrier (so both pools are full at once), and no more than
/// two `gpu` tasks ever run together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_pools_bound_their_tasks_while_others_fill_the_workers() {
    let gpu = Arc::new(Gauge::default());
    let all = Arc::new(Gauge::default());
    let meet = Arc::new(Barrier::new(4));
    let mut s = LocalScheduler::new();
    s.resource_pool("gpu", 2);
    let task = |uses_gpu: bool, meets: bool| {
        let (gpu, all, meet) = (gpu.clone(), all.clone(), meet.clone());
        LocalTask::new(move |_| {
            let (gpu, all, meet) = (gpu.clone(), all.clone(), meet.clone());
            async move {
                all.enter();
                if uses_gpu {
                    gpu.enter();
                }
                let met = if meets {
                    tokio::time::timeout(BOUND, meet.wait()).await.is_ok()
                } else {
                    for _ in 0..20 {
                        tokio::task::yield_now().await;
                    }
                    true
                };
                if uses_gpu {
                    gpu.leave();
                }
                all.leave();
                if met {
                    Ok(())
                } else {
                    Err(TaskError::fatal("Starved", "the barrier never filled"))
                }
            }
        })
    };
    for i in 0..12 {
        let options = TaskOptions::new().resource("gpu");
        s.add_task_with(format!("gpu{i}"), task(true, i < 2), options)
            .unwrap();
    }
    for i in 0..12 {
        s.add_task(format!("cpu{i}"), task(false, i < 2), &[], 0)
            .unwrap();
    }
    let results = run(s).await;
    assert!(results.values().all(TaskResult::is_success), "{results:?}");
    assert_eq!(gpu.max(), 2);
    assert_eq!(all.max(), 4);
}

#[tokio::test]
async fn undeclared_or_empty_pools_are_refused() {
    let mut s = LocalScheduler::new();
    s.add_task_with("a", ok(json!(1)), TaskOptions::new().resource("tpu"))
        .unwrap();
    assert_eq!(
        s.run().await.unwrap_err(),
        LocalError::UnknownResource {
            task: "a".into(),
            resource: "tpu".into()
        }
    );

    let mut s = LocalScheduler::new();
    s.resource_pool("gpu", 0);
    s.add_task_with("a", ok(json!(1)), TaskOptions::new().resource("gpu"))
        .unwrap();
    assert!(matches!(
        s.run().await,
        Err(LocalError::ZeroCapacity { .. })
    ));

    let s = LocalScheduler::with_max_workers(0);
    assert!(matches!(
        s.run().await,
        Err(LocalError::ZeroCapacity { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_with_three_edges_each() {
    let n = 10_000;
    let mut s = LocalScheduler::with_max_workers(8);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        let mut deps = Vec::new();
        for _ in 0..3.min(i) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            deps.push(format!("n{}", seed % i as u64));
        }
        s.add_task_with(
            format!("n{i}"),
            sum_plus_one(),
            TaskOptions::new().depends_on(deps),
        )
        .unwrap();
    }
    let results = run(s).await;
    assert_eq!(results.len(), n);
    assert!(results.values().all(TaskResult::is_success));
}

#[tokio::test]
async fn results_serialize_as_json() {
    let mut s = LocalScheduler::new();
    s.add_task("a", failing("Broken"), &[], 0).unwrap();
    s.add_task("b", ok(json!([1, 2])), &[], 0).unwrap();
    let results = run(s).await;
    assert_eq!(
        serde_json::to_value(&results["a"]).unwrap(),
        json!({"status": "failed", "result": null, "attempts": 1,
               "error": {"kind": "Broken", "message": "a failed on attempt 1"}})
    );
    assert_eq!(
        serde_json::to_value(&results["b"]).unwrap(),
        json!({"status": "success", "result": [1, 2], "attempts": 1, "error": null})
    );
    assert_eq!(TaskStatus::Skipped.to_string(), "skipped");
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_stops_its_async_tasks() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (started, running) = oneshot::channel();
    let started = Arc::new(Mutex::new(Some(started)));
    let mut s = LocalScheduler::new();
    let flag = dropped.clone();
    s.add_task(
        "forever",
        LocalTask::new(move |_| {
            let guard = DropFlag(flag.clone());
            let started = started.lock().unwrap().take();
            async move {
                let _guard = guard;
                if let Some(tx) = started {
                    let _ = tx.send(());
                }
                std::future::pending::<()>().await;
                Ok::<_, TaskError>(())
            }
        }),
        &[],
        0,
    )
    .unwrap();
    let run = tokio::spawn(s.run());
    tokio::time::timeout(BOUND, running).await.unwrap().unwrap();
    run.abort();
    let deadline = Instant::now() + BOUND;
    while !dropped.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(dropped.load(Ordering::SeqCst));
}

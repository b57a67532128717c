//! Cancellation: of one task, of everything, and by dropping the run.

use super::*;

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

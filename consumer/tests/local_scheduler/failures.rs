//! Failed attempts: retries, what a failure skips, panics and timeouts.

use super::*;

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

//! How many tasks run at once: the worker pool, readiness by each task's
//! own dependencies, resource pools and a large graph.

use super::*;

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

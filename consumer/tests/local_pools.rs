//! The in-process scheduler's pools map: several pools per task, several
//! units each, taken all at once; the single-pool `resource` option still
//! works beside it.
//!
//! Bounds are checked with gauges of the units held: a task enters before
//! it yields and leaves after, so overlapping holders are counted.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use celeriac_consumer::{
    LocalError, LocalScheduler, LocalTask, TaskError, TaskOptions, TaskResult,
};

/// Units held now, and the most held at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn enter(&self, units: usize) {
        let now = self.now.fetch_add(units, Ordering::SeqCst) + units;
        self.max.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self, units: usize) {
        self.now.fetch_sub(units, Ordering::SeqCst);
    }
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// A task holding `gpu` and `db` units while it yields a while.
fn holder(gpu: &Arc<Gauge>, db: &Arc<Gauge>, gpu_units: usize, db_units: usize) -> LocalTask {
    let (gpu, db) = (gpu.clone(), db.clone());
    LocalTask::new(move |_| {
        let (gpu, db) = (gpu.clone(), db.clone());
        async move {
            gpu.enter(gpu_units);
            db.enter(db_units);
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            db.leave(db_units);
            gpu.leave(gpu_units);
            Ok::<_, TaskError>(())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_take_all_their_units_at_once_and_never_exceed_a_pool() {
    let (gpu, db) = (Arc::new(Gauge::default()), Arc::new(Gauge::default()));
    let mut s = LocalScheduler::with_max_workers(8);
    s.resource_pool("gpu", 3).resource_pool("db", 1);
    for i in 0..6 {
        let options = TaskOptions::new().pool("gpu", 1).pool("db", 1);
        s.add_task_with(format!("both{i}"), holder(&gpu, &db, 1, 1), options)
            .unwrap();
    }
    for i in 0..6 {
        let options = TaskOptions::new().pool("gpu", 2);
        s.add_task_with(format!("big{i}"), holder(&gpu, &db, 2, 0), options)
            .unwrap();
    }
    // The older single-pool option: one unit of `db`.
    for i in 0..4 {
        let options = TaskOptions::new().resource("db");
        s.add_task_with(format!("old{i}"), holder(&gpu, &db, 0, 1), options)
            .unwrap();
    }
    let results = s.run().await.unwrap();
    assert_eq!(results.len(), 16);
    assert!(results.values().all(TaskResult::is_success), "{results:?}");
    assert!(gpu.max() <= 3, "gpu units held at once: {}", gpu.max());
    assert!(gpu.max() >= 2, "gpu tasks did run together");
    assert_eq!(db.max(), 1, "one db unit");
}

#[tokio::test]
async fn a_task_asking_for_more_than_a_pool_has_is_refused() {
    let mut s = LocalScheduler::new();
    s.resource_pool("gpu", 2);
    s.add_task_with(
        "a",
        LocalTask::blocking(|_| Ok::<_, TaskError>(())),
        TaskOptions::new().pool("gpu", 3),
    )
    .unwrap();
    assert_eq!(
        s.run().await.unwrap_err(),
        LocalError::PoolTooSmall {
            task: "a".into(),
            resource: "gpu".into(),
            units: 3,
            capacity: 2
        }
    );

    let mut s = LocalScheduler::new();
    s.resource_pool("gpu", 2);
    s.add_task_with(
        "a",
        LocalTask::blocking(|_| Ok::<_, TaskError>(())),
        TaskOptions::new().pool("gpu", 1).pool("tpu", 1),
    )
    .unwrap();
    assert_eq!(
        s.run().await.unwrap_err(),
        LocalError::UnknownResource {
            task: "a".into(),
            resource: "tpu".into()
        }
    );

    let mut s = LocalScheduler::new();
    s.resource_pool("gpu", 2);
    s.add_task_with(
        "a",
        LocalTask::blocking(|_| Ok::<_, TaskError>(())),
        TaskOptions::new().pool("gpu", 0),
    )
    .unwrap();
    assert!(matches!(
        s.run().await,
        Err(LocalError::ZeroCapacity { .. })
    ));
}

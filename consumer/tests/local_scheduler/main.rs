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

/// A task that counts its runs, for checking that nothing ran.
fn counted(counter: &Arc<AtomicUsize>) -> LocalTask {
    let counter = counter.clone();
    LocalTask::blocking(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, TaskError>(())
    })
}

mod cancel;
mod concurrency;
mod failures;
mod graph;

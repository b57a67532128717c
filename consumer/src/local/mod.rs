//! Workflows in-process: a DAG of tasks run on a bounded pool, with no
//! broker.
//!
//! The model is that of workflows across the cluster: a task starts once
//! all its dependencies have succeeded and receives their results by id; a
//! task that fails after its retries is `failed`, everything downstream of
//! it is `skipped`, and independent branches run to completion. Graphs are
//! checked by [`celeriac_schema::dag`] before anything runs, as on the
//! cluster.
//!
//! - [`LocalScheduler`]: add tasks, then [`run`](LocalScheduler::run) them.
//! - [`LocalTask`]: a task body, async ([`LocalTask::new`]) or a plain
//!   closure run on a blocking thread ([`LocalTask::blocking`]).
//! - [`TaskOptions`]: dependencies, retries, timeout, resource pool.
//! - [`LocalContext`]: what a running task sees: its attempt, its inputs,
//!   its cancellation token.
//! - [`TaskResult`]: the outcome of each task.
//! - [`CancelHandle`]: cancels one task and its dependents, or the run.
//! - [`LocalEvent`]: each change of a task's state, as it happens
//!   ([`LocalScheduler::events`]).
//! - [`LocalScheduler::from_flow`]: a YAML workflow
//!   ([`celeriac_producer::flow::Flow`]) run in-process, its programs by the
//!   exec runner and its `task:` nodes by registered handlers
//!   ([`FlowOptions`]).
//!
//! # Example
//!
//! ```
//! use celeriac_consumer::{LocalScheduler, LocalTask, TaskError, TaskStatus};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut dag = LocalScheduler::with_max_workers(2);
//! dag.add_task("a", LocalTask::blocking(|_| Ok::<_, TaskError>("x")), &[], 0)?;
//! dag.add_task("b", LocalTask::blocking(|_| {
//!     Err::<(), _>(TaskError::new("Broken", "always fails"))
//! }), &["a"], 2)?;
//! dag.add_task("c", LocalTask::blocking(|_| Ok::<_, TaskError>(())), &["b"], 0)?;
//! dag.add_task("e", LocalTask::blocking(|_| Ok::<_, TaskError>(())), &[], 0)?;
//!
//! let results = dag.run().await?;
//! assert_eq!(results["b"].status, TaskStatus::Failed);
//! assert_eq!(results["b"].attempts, 3);
//! assert_eq!(results["b"].error.as_ref().map(|e| e.kind()), Some("Broken"));
//! assert_eq!(results["c"].status, TaskStatus::Skipped);
//! assert_eq!(results["c"].attempts, 0);
//! assert!(results["e"].is_success());
//! # Ok::<(), celeriac_consumer::LocalError>(())
//! # }).unwrap();
//! ```

mod error;
mod event;
mod flow;
mod pools;
mod rate;
mod ready;
mod result;
mod scheduler;
mod task;
mod urgency;

pub use error::LocalError;
pub use event::{LocalEvent, LocalEventKind};
pub use flow::FlowOptions;
pub use result::{TaskResult, TaskStatus, CANCELLED, DEPENDENCY_FAILED};
pub use scheduler::{CancelHandle, LocalScheduler, DEFAULT_MAX_WORKERS};
pub use task::{LocalContext, LocalTask, TaskOptions, TaskOutput, OUTPUT_ERROR};

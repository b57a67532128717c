//! # celeriac-consumer: running tasks
//!
//! A [`Worker`] consumes one or more queues and runs the handlers of a
//! [`Registry`]. It acks a delivery only once its outcome is durable:
//!
//! - success: acked (acks are batched with `multiple` over the finished
//!   prefix);
//! - failure or panic: republished with the next attempt number through the
//!   broker's delay cascade after an exponential, jittered backoff, then
//!   acked; once retries are exhausted, dead-lettered with the failure in
//!   headers;
//! - unknown task names and malformed bodies: dead-lettered at once, the
//!   body kept byte for byte;
//! - past its expiry: dropped and counted.
//!
//! The mapping from outcome to broker action is the pure function
//! [`disposition::decide`]. The worker reconnects with backoff when the
//! broker goes away, and on shutdown lets in-flight tasks finish within a
//! grace period. Runs longer than half the broker's consumer timeout swap
//! their delivery for a lease (see `lease.rs`), so they are neither lost
//! nor run twice.
//!
//! # Example
//!
//! ```no_run
//! use celeriac_consumer::{Registry, TaskContext, TaskError, Worker};
//! use celeriac_schema::Task;
//!
//! struct Add;
//! impl Task for Add {
//!     const NAME: &'static str = "math.add";
//!     type Input = (i64, i64);
//!     type Output = i64;
//! }
//!
//! # async fn demo() -> celeriac_consumer::Result<()> {
//! let mut registry = Registry::new();
//! registry.register::<Add, _, _>(|(a, b), ctx: TaskContext| async move {
//!     tracing::info!(task_id = %ctx.task_id(), "adding");
//!     Ok::<_, TaskError>(a + b)
//! });
//! Worker::builder("amqp://127.0.0.1:5672/%2f", registry).build()?.run().await?;
//! # Ok(()) }
//! ```

mod ack_tracker;
pub mod builtin;
pub mod cli;
pub mod cli_policy;
mod coordinator;
pub mod disposition;
mod error;
pub mod exec;
pub mod http;
mod lease;
pub mod local;
mod metrics;
mod metrics_policy;
mod registry;
pub mod secrets;
mod signing;
mod stats;
mod task_error;
mod worker;

pub use ack_tracker::{AckAction, AckTracker};
pub use error::{Error, Result};
pub use local::{
    CancelHandle, LocalContext, LocalError, LocalScheduler, LocalTask, TaskOptions, TaskResult,
    TaskStatus,
};
pub use registry::{BoxFuture, ErasedHandler, Registry, TaskContext};
pub use stats::{StatsSnapshot, WorkerStats};
pub use task_error::{
    TaskError, BAD_INPUT, EXPIRED, FORBIDDEN, PANIC, TIME_LIMIT, UNKNOWN_POOL, UNKNOWN_TASK,
};
pub use worker::{Worker, WorkerBuilder, WorkerHandle, DEFAULT_URGENT_WEIGHT};

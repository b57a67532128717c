//! # celeriac-producer: sending tasks
//!
//! A [`Producer`] publishes typed tasks ([`celeriac_schema::Task`]) to
//! RabbitMQ with publisher confirms and the mandatory flag, over a pool of
//! connections (deadpool; TLS for `amqps://` URLs, see [`tls`]). `send`
//! returns a [`TaskHandle`] once the broker holds the task; `send_batch`
//! pipelines thousands of confirms. With
//! a state store ([`RedisStore`], from the `celeriac-store` crate) handles give the task's state and typed
//! result, idempotency keys hold across sends, and
//! [`Producer::submit`]/[`canvas`] run workflows. [`control`] broadcasts
//! commands to the workers (ping, inspect, revoke, ...).
//!
//! Countdowns and ETAs wait in the broker's delay cascade (see
//! [`celeriac_schema::topology`]), never in a worker.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> celeriac_producer::Result<()> {
//! use std::time::Duration;
//! use celeriac_producer::{Producer, SendOptions};
//! use celeriac_schema::Task;
//!
//! struct Resize;
//! impl Task for Resize {
//!     const NAME: &'static str = "images.resize";
//!     type Input = (String, u32);
//!     type Output = String;
//! }
//!
//! let producer = Producer::builder("amqp://127.0.0.1:5672/%2f")
//!     .namespace("shop")
//!     .connect()
//!     .await?;
//! let opts = SendOptions::new().countdown(Duration::from_secs(10)).max_retries(5);
//! let handle = producer.send::<Resize>(&("cat.png".into(), 640), &opts).await?;
//! println!("queued {}", handle.id());
//! # Ok(()) }
//! ```

pub mod addresses;
pub mod admission;
pub mod beat;
pub mod canvas;
pub mod control;
mod error;
mod events;
mod failover;
pub mod flow;
mod handle;
pub mod metrics;
mod pool;
mod producer;
pub mod publish;
pub mod schedule;
mod send_options;
pub mod signing;
pub mod status;
pub mod tls;
pub mod topology;

pub use celeriac_store::{IndexedTask, RedisStore, TaskPage, TaskQuery, INDEX_LIMIT};
pub use error::{redact_url, Error, Result};
pub use handle::{workflow_status, NodeStatus, TaskHandle, WorkflowHandle, WorkflowStatus};
pub use producer::{route_now, PreparedTask, Producer, ProducerBuilder};
pub use schedule::{Overlap, Schedule, ScheduleError};
pub use send_options::SendOptions;

/// The Redis store, now the `celeriac-store` crate: this path keeps
/// `celeriac_producer::redis_store::RedisStore` working.
pub use celeriac_store as redis_store;

pub use celeriac_schema as schema;
pub use lapin;

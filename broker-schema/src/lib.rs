//! # celeriac-schema: the celeriac wire contract
//!
//! Everything producers and workers must agree on, with no I/O:
//!
//! - [`Envelope`]: the task as it travels in a message body, a MessagePack
//!   map with named fields ([`encode`], [`decode`], [`decode_with`] and its
//!   [`DecodeLimits`]).
//! - [`Task`]: ties a task name to typed input and output.
//! - [`TaskState`]: the lifecycle states.
//! - [`headers`]: the AMQP header names and [`DeadLetterReason`]s.
//! - [`Topology`]: every exchange, queue, argument and binding of a
//!   namespace, and how delays are routed.
//! - [`RetryPolicy`] and [`Backoff`].
//! - [`control`]: the control plane's requests and replies.
//! - [`events`]: the task and worker events of the events exchange.
//! - [`signing`]: HMAC-SHA256 signatures of messages, and the
//!   [`signing::Keyring`] that makes and checks them.
//!
//! `SPEC.md` beside this crate documents the same contract for
//! implementations in other languages.
//!
//! # Example
//!
//! ```
//! use celeriac_schema::{decode, encode, Envelope, Task};
//!
//! struct Add;
//! impl Task for Add {
//!     const NAME: &'static str = "math.add";
//!     type Input = (i64, i64);
//!     type Output = i64;
//! }
//!
//! let input = celeriac_schema::to_value(&(2, 3)).unwrap();
//! let env = Envelope::new(Add::NAME, input);
//! let decoded = decode(&encode(&env).unwrap()).unwrap();
//! let (a, b): (i64, i64) = celeriac_schema::from_value(&decoded.input, "input").unwrap();
//! assert_eq!(a + b, 5);
//! ```

pub mod builtin;
mod codec;
pub mod control;
pub mod dag;
mod envelope;
mod error;
pub mod events;
pub mod exec;
pub mod fair;
pub mod headers;
pub mod json_value;
mod retry_policy;
pub mod signing;
mod state;
pub mod store;
mod task;
mod task_id;
pub mod tolerance;
pub mod topology;
pub mod workflow;

pub use codec::{check_limits, decode, decode_with, encode, from_value, to_value, DecodeLimits};
pub use envelope::{
    now_ms, ChordRef, Continuation, Envelope, GroupRef, Signature, WorkflowRef, SCHEMA_VERSION,
};
pub use error::{Error, Result};
pub use headers::DeadLetterReason;
pub use retry_policy::{Backoff, RetryPolicy};
pub use state::TaskState;
pub use task::Task;
pub use task_id::TaskId;
pub use topology::Topology;

/// The AMQP `content_type` of every task message.
pub const CONTENT_TYPE: &str = "application/x-msgpack";

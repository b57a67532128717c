//! The worker's side of the control plane: what it holds for the commands
//! ([`ControlPlane`]), the listener on its control queue ([`listener`]),
//! and one module per group of commands.
//!
//! - [`jobs`]: the deliveries being handled (reserved and active), and the
//!   cancellation of running ones.
//! - [`revoke`]: the revocations held.
//! - [`limits`]: run-time rate and time limits per task.
//! - [`pool`]: the concurrency limit and the consumed queues.
//! - [`inspect`]: the answers to `inspect`.
//! - [`heartbeat`]: `worker.*` events, the store's worker list and the
//!   periodic re-read of revocations and limits.

pub(super) mod heartbeat;
mod inspect;
pub(super) mod jobs;
pub(super) mod limits;
pub(super) mod listener;
pub(super) mod pool;
pub(super) mod revoke;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use celeriac_schema::control::MAX_SKEW;

use tokio::sync::Semaphore;

use super::Config;

/// Default period of a worker's heartbeat.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);

/// What the control commands act on, shared by the worker's sessions.
#[derive(Debug)]
pub(crate) struct ControlPlane {
    /// When the worker started, Unix ms.
    pub(crate) started_at: u64,
    /// Deliveries being handled.
    pub(crate) jobs: jobs::Jobs,
    /// Revocations held.
    pub(crate) revoked: revoke::Revocations,
    /// Rate and time limits per task.
    pub(crate) limits: limits::Limits,
    /// The concurrency limit.
    pub(crate) pool: pool::Concurrency,
    /// The queues consumed, and the live session's lanes.
    pub(crate) queues: pool::Queues,
    /// Rate tokens taken ahead, and the buckets of a worker without a
    /// store.
    pub(crate) tokens: crate::worker::job::Tokens,
    /// Requests refused for their signature (or a replay).
    pub(crate) refused: AtomicU64,
    /// Ids of signed requests seen within [`MAX_SKEW`], and when.
    seen: Mutex<HashMap<String, u64>>,
}

impl ControlPlane {
    pub(crate) fn new(config: &Config) -> ControlPlane {
        ControlPlane {
            started_at: celeriac_schema::now_ms(),
            jobs: jobs::Jobs::default(),
            revoked: revoke::Revocations::default(),
            limits: limits::Limits::default(),
            pool: pool::Concurrency::new(config.concurrency),
            queues: pool::Queues::new(config.queues.clone()),
            tokens: Default::default(),
            refused: AtomicU64::new(0),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether request `id` is seen for the first time (signed requests
    /// carry a unique id: one seen before is a replay).
    pub(crate) fn first_sight(&self, id: &str, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let window = MAX_SKEW.as_millis() as u64 * 2;
        seen.retain(|_, at| now.saturating_sub(*at) <= window);
        seen.insert(id.to_owned(), now).is_none()
    }

    /// The semaphore of the concurrency limit.
    pub(crate) fn semaphore(&self) -> Arc<Semaphore> {
        self.pool.semaphore()
    }
}

/// The host name, for worker records and `inspect stats`.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

//! What the store answers to a run lease and to an enqueue claim.

use std::time::Duration;

use crate::TaskId;

/// What [`Store::begin`](super::Store::begin) decided for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The lease is ours and `started` is recorded: run the task.
    Run,
    /// The idempotency key already succeeded (as `task_id`): do not run
    /// again, only repeat the follow-up steps.
    Succeeded {
        /// The task whose run succeeded with this key.
        task_id: TaskId,
    },
    /// Another run holds the lease: try again after `retry_after`.
    Busy {
        /// The time left on the other run's lease.
        retry_after: Duration,
    },
    /// The task, its workflow or its idempotency key is revoked: do not
    /// run it (see [`Store::admit`](super::Store::admit)). The lease was taken; end it with
    /// [`Store::finish`](super::Store::finish) and the `revoked` state.
    Revoked {
        /// The revoked id or key that matched.
        id: String,
    },
}

/// What [`Store::claim`](super::Store::claim) found for an enqueue idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key is now bound to this task: publish it.
    Claimed,
    /// The key was bound before: this is the first task's id.
    Existing {
        /// The first task sent with the key.
        task_id: TaskId,
        /// The first task was recorded but never confirmed by the broker
        /// within the stale window (its producer died between the two):
        /// publish again under `task_id`.
        republish: bool,
    },
}

/// How long a task may stay `created` (claimed, not yet confirmed) before
/// a second send with its key publishes it again.
pub const CLAIM_STALE_AFTER: Duration = Duration::from_secs(60);

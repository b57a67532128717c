//! The task envelope: what travels in every message body.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::retry_policy::RetryPolicy;
use crate::task_id::TaskId;

/// The envelope schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One task as it travels on the wire: a MessagePack map with named fields.
///
/// Optional fields are left out of the map when empty; unknown fields are
/// ignored on decode, so new fields can be added without a version bump.
///
/// # Examples
///
/// ```
/// use celeriac_schema::{decode, encode, Envelope};
///
/// let env = Envelope::new("ping", rmpv::Value::from("hello"));
/// let bytes = encode(&env).unwrap();
/// assert_eq!(decode(&bytes).unwrap(), env);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// The task id (UUID v7 string).
    pub id: TaskId,
    /// The task name a handler is registered under.
    pub task: String,
    /// The task input, any MessagePack value.
    pub input: rmpv::Value,
    /// 0 for the first run, incremented on every retry.
    #[serde(default)]
    pub attempt: u32,
    /// Retries and backoff.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Do not run before this time (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<u64>,
    /// Do not run after this time (Unix milliseconds); a later delivery is
    /// discarded and counted as expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Longest time, in milliseconds, the task may wait after it became due
    /// (its `eta`, else `created_at`) before it starts; `None`: it cannot wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_ms: Option<u64>,
    /// The tenant (client) the task is run for: rate limits and fair sharing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Units of named cluster-wide resource pools the task holds while it runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, u32>,
    /// Soft time limit in milliseconds: the handler is asked to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_time_limit_ms: Option<u64>,
    /// Hard time limit in milliseconds: the handler is aborted and the run
    /// counts as a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_time_limit_ms: Option<u64>,
    /// Priority, 0 (default) to 9.
    #[serde(default)]
    pub priority: u8,
    /// Key under which the task's effect is applied at most once; derived
    /// from the id when the producer gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The first task of the tree this task belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<TaskId>,
    /// The task that spawned this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<TaskId>,
    /// Workflow membership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowRef>,
    /// What runs after this task: remaining chain, group and chord membership.
    #[serde(default, skip_serializing_if = "Continuation::is_empty")]
    pub continuation: Continuation,
    /// User metadata, passed through untouched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// When the producer created the task (Unix milliseconds).
    pub created_at: u64,
}

impl Envelope {
    /// A first-attempt envelope with a fresh id, default retry policy and
    /// `created_at` set to now.
    pub fn new(task: impl Into<String>, input: rmpv::Value) -> Self {
        Envelope {
            v: SCHEMA_VERSION,
            id: TaskId::new(),
            task: task.into(),
            input,
            attempt: 0,
            retry: RetryPolicy::default(),
            eta: None,
            expires: None,
            tolerance_ms: None,
            tenant: None,
            pools: BTreeMap::new(),
            soft_time_limit_ms: None,
            hard_time_limit_ms: None,
            priority: 0,
            idempotency_key: None,
            root_id: None,
            parent_id: None,
            workflow: None,
            continuation: Continuation::default(),
            meta: BTreeMap::new(),
            created_at: now_ms(),
        }
    }

    /// The idempotency key: the one given, else the task id.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut env = celeriac_schema::Envelope::new("ping", rmpv::Value::Nil);
    /// assert_eq!(env.effective_idempotency_key(), env.id.to_string());
    /// env.idempotency_key = Some("order-42".into());
    /// assert_eq!(env.effective_idempotency_key(), "order-42");
    /// ```
    pub fn effective_idempotency_key(&self) -> String {
        match &self.idempotency_key {
            Some(key) => key.clone(),
            None => self.id.to_string(),
        }
    }

    /// Whether the task is past its expiry at `now_ms`.
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires.is_some_and(|e| now_ms >= e)
    }

    /// When the task became due (Unix milliseconds): its `eta` when later
    /// than `created_at`, else `created_at`.
    pub fn due_ms(&self) -> u64 {
        self.eta
            .map_or(self.created_at, |eta| eta.max(self.created_at))
    }

    /// The latest start (Unix milliseconds) its tolerance allows: due time
    /// plus `tolerance_ms`; `None` for a task without a tolerance.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut env = celeriac_schema::Envelope::new("ping", rmpv::Value::Nil);
    /// env.created_at = 1_000;
    /// assert_eq!(env.deadline_ms(), None);
    /// env.tolerance_ms = Some(5_000);
    /// assert_eq!(env.deadline_ms(), Some(6_000));
    /// env.eta = Some(10_000);
    /// assert_eq!(env.deadline_ms(), Some(15_000));
    /// ```
    pub fn deadline_ms(&self) -> Option<u64> {
        self.tolerance_ms
            .map(|tolerance| self.due_ms().saturating_add(tolerance))
    }

    /// How long before the task may run, at `now_ms` (zero when it may run).
    pub fn wait_before_run(&self, now_ms: u64) -> Duration {
        match self.eta {
            Some(eta) if eta > now_ms => Duration::from_millis(eta - now_ms),
            _ => Duration::ZERO,
        }
    }
}

/// A task's place in a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRef {
    /// The workflow id.
    pub workflow_id: TaskId,
    /// The node's name inside the workflow.
    pub node_id: String,
}

/// A task to run later, as the canvas carries it: a name, an input and
/// options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// The task name.
    pub task: String,
    /// Input; for a chain link the previous result is passed instead when
    /// this is nil.
    #[serde(default = "nil")]
    pub input: rmpv::Value,
    /// The queue to send it to; the sender's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Its retry policy.
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// Membership of a group: this task is member `index` of `size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    /// The group id.
    pub group_id: TaskId,
    /// 0-based position; results are returned in this order.
    pub index: u32,
    /// Number of members.
    pub size: u32,
}

/// Membership of a chord: the group plus the callback that receives the
/// ordered results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChordRef {
    /// The chord id.
    pub chord_id: TaskId,
    /// Runs once with every member's result, in order.
    pub callback: Signature,
}

/// What follows a task in its canvas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Continuation {
    /// The rest of the chain: the first runs with this task's result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Signature>,
    /// Group membership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupRef>,
    /// Chord membership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chord: Option<ChordRef>,
}

impl Continuation {
    /// Whether nothing follows.
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty() && self.group.is_none() && self.chord.is_none()
    }
}

fn nil() -> rmpv::Value {
    rmpv::Value::Nil
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

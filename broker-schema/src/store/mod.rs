//! The shared state store: task records, results, idempotency keys and
//! run leases, behind one trait.
//!
//! Two implementations exist: [`MemoryStore`] here (embedded mode and unit
//! tests) and `RedisStore` in the producer crate (clusters). Both follow the
//! same rules, written down once in this module:
//!
//! - **Records.** Every task has a [`TaskRecord`]: its current state, the
//!   timestamps of its life, the number of runs, the worker, the last error
//!   and (unless the task opted out) its MessagePack result. Each
//!   [`Update`] also appends a [`Transition`] to the record's history.
//!   Records live for the store's result TTL after their last write.
//! - **Producer states never go back.** `created` and `queued` are written
//!   by producers and apply only while the record is new, `created` or
//!   `queued`: a worker that started the task before the producer's
//!   `queued` write arrived keeps its `started` (and the late write only
//!   records its time, `queued_at`).
//! - **Execution keys.** [`Store::begin`] decides atomically: if the
//!   task's idempotency key already succeeded, it says so
//!   ([`Begin::Succeeded`]); if another run holds the key's lease, it says
//!   how long that lease has left ([`Begin::Busy`]); otherwise it takes the
//!   lease, then records `started`. [`Store::finish`] records the outcome,
//!   marks the key succeeded (on success, together with the record) or
//!   releases the lease (otherwise, if this run still holds it), and wakes
//!   waiters on a final state.
//! - **Enqueue keys.** [`Store::claim`] binds an idempotency key to the
//!   first task id sent with it, for the key TTL.
//! - **Workflows are created once.** [`Store::create_workflow`] of an id
//!   the store holds already changes nothing, so submitting a workflow
//!   again never resets the progress of the first submission.
//!
//! # Examples
//!
//! ```
//! use celeriac_schema::store::{Begin, MemoryStore, Store, Update};
//! use celeriac_schema::{TaskId, TaskState};
//!
//! # tokio_test_block_on(async {
//! let store = MemoryStore::new(Default::default());
//! let id = TaskId::new();
//! let started = Update::new(id, "math.add", "default", TaskState::Started, 0);
//! assert!(matches!(store.begin(&id.to_string(), "run-1", &started).await?, Begin::Run));
//!
//! let mut done = Update::new(id, "math.add", "default", TaskState::Succeeded, 0);
//! done.result = Some(celeriac_schema::store::encode_result(&3i64)?);
//! store.finish(&id.to_string(), "run-1", &done).await?;
//!
//! let record = store.get(id).await?.expect("recorded");
//! assert_eq!(record.state, TaskState::Succeeded);
//! assert_eq!(record.decode_result::<i64>()?, Some(3));
//! // The key succeeded: a second delivery is not run again.
//! assert!(matches!(
//!     store.begin(&id.to_string(), "run-2", &started).await?,
//!     Begin::Succeeded { .. }
//! ));
//! # Ok::<_, celeriac_schema::Error>(()) });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

mod control_state;
pub mod layout;
mod memory;
mod policy;

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::workflow::{Node, Workflow};
use crate::{Error, Result, TaskId, TaskState};

pub use control_state::ControlHash;
pub use memory::MemoryStore;
pub use policy::{
    burst, tenant_limit, Bucket, Grant, Policy, PoolGrant, PoolStatus, TENANT_RATE_FIELD,
};

/// How long the store keeps things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// How long a task record and its result live after their last write.
    pub result_ttl: Duration,
    /// How long an idempotency key is remembered (enqueue claims and
    /// succeeded executions).
    pub key_ttl: Duration,
    /// How long a run lease lasts unless renewed; a crashed worker's task
    /// runs again once its lease expires.
    pub lease_ttl: Duration,
}

impl StoreSettings {
    /// One day.
    pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(24 * 3600);
    /// One day.
    pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(24 * 3600);
    /// Thirty seconds, renewed every ten while the task runs.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            result_ttl: Self::DEFAULT_RESULT_TTL,
            key_ttl: Self::DEFAULT_KEY_TTL,
            lease_ttl: Self::DEFAULT_LEASE_TTL,
        }
    }
}

/// Why a run failed, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// A short machine-readable type (`ValueError`, `TimeLimitExceeded`).
    pub error_type: String,
    /// The human-readable message.
    pub message: String,
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

/// One entry of a task's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state entered.
    pub state: TaskState,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The attempt number (0 for the first run).
    pub attempt: u32,
    /// The worker that wrote it, for worker-side states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The failure, for `retrying` and `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskFailure>,
}

/// One state change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The task.
    pub id: TaskId,
    /// Its name.
    pub task: String,
    /// Its logical queue.
    pub queue: String,
    /// The state entered.
    pub state: TaskState,
    /// The attempt number.
    pub attempt: u32,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The worker writing it.
    pub worker: Option<String>,
    /// The idempotency key the task was sent with, if any.
    pub idempotency_key: Option<String>,
    /// The workflow the task belongs to, if any.
    pub workflow_id: Option<String>,
    /// The failure, for `retrying` and `failed`.
    pub error: Option<TaskFailure>,
    /// The MessagePack result, for `succeeded` (absent when the task opted
    /// out of storing it).
    pub result: Option<Vec<u8>>,
    /// On an outcome of a run that never recorded `started` (a run shorter
    /// than the worker's threshold for writing it, see
    /// [`Store::lease`]): when the run started, in Unix milliseconds. The
    /// `started` transition is then recorded just before this update, in
    /// the same write.
    pub started_at_ms: Option<u64>,
}

impl Update {
    /// An update stamped now, with nothing optional set.
    pub fn new(
        id: TaskId,
        task: impl Into<String>,
        queue: impl Into<String>,
        state: TaskState,
        attempt: u32,
    ) -> Update {
        Update {
            id,
            task: task.into(),
            queue: queue.into(),
            state,
            attempt,
            at_ms: crate::now_ms(),
            worker: None,
            idempotency_key: None,
            workflow_id: None,
            error: None,
            result: None,
            started_at_ms: None,
        }
    }

    /// The `started` history entry a final update with
    /// [`started_at_ms`](Update::started_at_ms) records first.
    pub fn started_transition(&self) -> Option<Transition> {
        let at_ms = self.started_at_ms?;
        (self.state != TaskState::Started).then(|| Transition {
            state: TaskState::Started,
            at_ms,
            attempt: self.attempt,
            worker: self.worker.clone(),
            error: None,
        })
    }

    /// The whole `started` update a final update with
    /// [`started_at_ms`](Update::started_at_ms) records first.
    pub fn started_part(&self) -> Option<Update> {
        let at_ms = self.started_at_ms?;
        // Field by field: the outcome's result and error stay behind.
        (self.state != TaskState::Started).then(|| Update {
            id: self.id,
            task: self.task.clone(),
            queue: self.queue.clone(),
            state: TaskState::Started,
            attempt: self.attempt,
            at_ms,
            worker: self.worker.clone(),
            idempotency_key: self.idempotency_key.clone(),
            workflow_id: self.workflow_id.clone(),
            error: None,
            result: None,
            started_at_ms: None,
        })
    }

    /// The history entry this update appends.
    pub fn transition(&self) -> Transition {
        Transition {
            state: self.state,
            at_ms: self.at_ms,
            attempt: self.attempt,
            worker: self.worker.clone(),
            error: self.error.clone(),
        }
    }

    /// Whether this is a producer-side state, which never overrides a
    /// worker-side one.
    pub fn is_producer_state(&self) -> bool {
        matches!(self.state, TaskState::Created | TaskState::Queued)
    }
}

/// Everything the store knows about a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task.
    pub id: TaskId,
    /// Its name.
    pub task: String,
    /// Its logical queue.
    pub queue: String,
    /// The current state.
    pub state: TaskState,
    /// The attempt number of the latest transition.
    pub attempt: u32,
    /// How many runs started (re-runs after a crash included).
    pub runs: u32,
    /// The worker of the latest worker-side transition.
    pub worker: Option<String>,
    /// The idempotency key the task was sent with, if any.
    pub idempotency_key: Option<String>,
    /// The workflow the task belongs to, if any.
    pub workflow_id: Option<String>,
    /// When the producer first recorded it.
    pub created_at: Option<u64>,
    /// When the broker confirmed it.
    pub queued_at: Option<u64>,
    /// When its latest run started.
    pub started_at: Option<u64>,
    /// When it reached a final state.
    pub finished_at: Option<u64>,
    /// The latest failure.
    pub error: Option<TaskFailure>,
    /// The MessagePack result, when it succeeded and stored one.
    pub result: Option<Vec<u8>>,
    /// Every transition, oldest first (at most the last 100).
    pub history: Vec<Transition>,
}

impl TaskRecord {
    /// A fresh record for the first update of a task.
    pub fn from_first(update: &Update) -> TaskRecord {
        let mut record = TaskRecord {
            id: update.id,
            task: update.task.clone(),
            queue: update.queue.clone(),
            state: update.state,
            attempt: update.attempt,
            runs: 0,
            worker: None,
            idempotency_key: None,
            workflow_id: None,
            created_at: None,
            queued_at: None,
            started_at: None,
            finished_at: None,
            error: None,
            result: None,
            history: Vec::new(),
        };
        record.apply(update);
        record
    }

    /// Applies an update by the rules of this module; returns whether it
    /// applied (a late producer state only records its time).
    pub fn apply(&mut self, update: &Update) -> bool {
        if update.idempotency_key.is_some() {
            self.idempotency_key = update.idempotency_key.clone();
        }
        if update.workflow_id.is_some() {
            self.workflow_id = update.workflow_id.clone();
        }
        match update.state {
            TaskState::Created => {
                self.created_at.get_or_insert(update.at_ms);
            }
            TaskState::Queued => {
                self.queued_at.get_or_insert(update.at_ms);
            }
            _ => {}
        }
        let producer_may_write = matches!(self.state, TaskState::Created | TaskState::Queued);
        if update.is_producer_state() && !producer_may_write {
            // A late producer state: its time is kept, nothing else.
            return false;
        }
        self.history.push(update.transition());
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
        self.state = update.state;
        self.attempt = update.attempt;
        if update.worker.is_some() {
            self.worker = update.worker.clone();
        }
        match update.state {
            TaskState::Started => {
                self.runs += 1;
                self.started_at = Some(update.at_ms);
                self.finished_at = None;
            }
            s if s.is_terminal() => self.finished_at = Some(update.at_ms),
            _ => {}
        }
        if update.error.is_some() {
            self.error = update.error.clone();
        }
        if update.state == TaskState::Succeeded {
            self.error = None;
            self.result = update.result.clone();
        }
        true
    }

    /// The stored result decoded as `T`; `None` when no result is stored.
    ///
    /// # Errors
    ///
    /// [`Error::Field`] (field `result`) when it is not a `T`.
    pub fn decode_result<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match &self.result {
            None => Ok(None),
            Some(bytes) => decode_result(bytes).map(Some),
        }
    }

    /// Run time of the latest run, when it finished.
    pub fn run_time(&self) -> Option<Duration> {
        match (self.started_at, self.finished_at) {
            (Some(s), Some(f)) if f >= s => Some(Duration::from_millis(f - s)),
            _ => None,
        }
    }
}

/// How many transitions a record keeps.
pub const HISTORY_LIMIT: usize = 100;

/// Encodes a result the way the store keeps it (MessagePack, named fields).
///
/// # Errors
///
/// [`Error::Encode`] when the value cannot be encoded.
pub fn encode_result<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Encode {
        what: "result",
        message: e.to_string(),
    })
}

/// Decodes a stored result.
///
/// # Errors
///
/// [`Error::Field`] (field `result`) when the bytes are not a `T`.
pub fn decode_result<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Field {
        field: "result".into(),
        message: e.to_string(),
    })
}

/// What [`Store::begin`] decided for a delivery.
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
    /// run it (see [`Store::admit`]). The lease was taken; end it with
    /// [`Store::finish`] and the `revoked` state.
    Revoked {
        /// The revoked id or key that matched.
        id: String,
    },
}

/// What [`Store::claim`] found for an enqueue idempotency key.
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

/// Where a workflow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowState {
    /// Nodes are still to run.
    Running,
    /// Every node succeeded.
    Succeeded,
    /// Every node finished, and at least one failed (its dependents are
    /// skipped).
    Failed,
}

impl WorkflowState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
        }
    }

    /// From the lowercase name.
    pub fn parse(s: &str) -> Option<WorkflowState> {
        match s {
            "running" => Some(WorkflowState::Running),
            "succeeded" => Some(WorkflowState::Succeeded),
            "failed" => Some(WorkflowState::Failed),
            _ => None,
        }
    }
}

/// The coordinator's view of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeProgress {
    /// Waiting for dependencies.
    Waiting,
    /// Released (published), not finished.
    Released,
    /// Succeeded.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Skipped because a node it depends on failed.
    Skipped,
}

/// A workflow as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// The workflow id.
    pub id: TaskId,
    /// Where it stands.
    pub state: WorkflowState,
    /// Its node count.
    pub nodes: usize,
    /// Nodes not finished yet.
    pub remaining: usize,
    /// Nodes that failed for good.
    pub failed: usize,
    /// Nodes released by the coordinator after their dependencies
    /// succeeded (roots are not counted): each at most once.
    pub released: usize,
    /// The nodes whose results are the workflow's result, in order.
    pub outputs: Vec<String>,
    /// When it was submitted (Unix ms).
    pub created_at: u64,
    /// When its last node finished.
    pub finished_at: Option<u64>,
    /// Every node's progress.
    pub progress: std::collections::BTreeMap<String, NodeProgress>,
}

/// A node the coordinator found ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The node id.
    pub node: String,
    /// Whether this call released it (`false`: released before, and not
    /// finished; publishing it again is harmless, its key keeps it to one
    /// run).
    pub first: bool,
}

/// A shared state store. See the module documentation for its rules.
///
/// Implementations are cheap to share behind an `Arc`.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Its TTLs.
    fn settings(&self) -> &StoreSettings;

    /// Its cluster-wide rate limits and resource pools, if it keeps them
    /// (see [`Policy`]).
    fn policy(&self) -> Option<&dyn Policy> {
        None
    }

    /// Whether the store answers.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when it does not.
    async fn ping(&self) -> Result<()>;

    /// Records updates, in order, in one round trip.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn record(&self, updates: &[Update]) -> Result<()>;

    /// The record of a task, if the store has it.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`], or [`Error::StoreData`] for a record
    /// this build cannot read.
    async fn get(&self, id: TaskId) -> Result<Option<TaskRecord>>;

    /// Waits until the task reaches a final state and returns its record,
    /// or returns `None` once `timeout` has passed. Waiting costs no
    /// polling: waiters are woken by the write of the final state.
    ///
    /// # Errors
    ///
    /// As [`Store::get`].
    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskRecord>>;

    /// Binds enqueue idempotency keys to task ids, recording `created` for
    /// each task that claimed its key; one answer per claim, in order.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn claim(&self, claims: &[(String, Update)]) -> Result<Vec<Claim>>;

    /// Releases enqueue claims whose publish failed, so that sending again
    /// publishes; a key bound to another task is left alone.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn unclaim(&self, claims: &[(String, TaskId)]) -> Result<()>;

    /// Takes the lease of a run under `key` with token `token`, recording
    /// nothing; see [`Begin`]. The run's `started` state is written later
    /// with [`Store::started`], or with its outcome through
    /// [`Update::started_at_ms`] when the run ends first: short runs then
    /// cost one write instead of two.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`], [`Error::StoreData`].
    async fn lease(&self, key: &str, token: &str) -> Result<Begin>;

    /// Records a worker-side state (normally `started`) of a run that
    /// holds its lease.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn started(&self, update: &Update) -> Result<()>;

    /// Starts a run under `key` with lease token `token`; see [`Begin`].
    /// On [`Begin::Run`], `update` (normally `started`) is recorded: a
    /// [`lease`](Store::lease) followed by [`started`](Store::started).
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`], [`Error::StoreData`].
    async fn begin(&self, key: &str, token: &str, update: &Update) -> Result<Begin> {
        let begun = self.lease(key, token).await?;
        if begun == Begin::Run {
            self.started(update).await?;
        }
        Ok(begun)
    }

    /// Extends the lease of a run; `false` when the lease is no longer
    /// ours (it expired and another run may have taken it).
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn renew(&self, key: &str, token: &str) -> Result<bool>;

    /// Ends a run: records `update`, marks `key` succeeded when the update
    /// is `succeeded`, releases the lease if `token` still holds it, and
    /// wakes waiters on a final state.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn finish(&self, key: &str, token: &str, update: &Update) -> Result<()>;

    /// The stored results of many tasks at once, in order (`None` where a
    /// task has no stored result).
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn results(&self, ids: &[TaskId]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Stores a validated workflow for the coordinator: its nodes, who
    /// depends on whom, and `outputs`. Its root nodes count as released.
    ///
    /// Creating is atomic and happens once per workflow id: when a
    /// workflow with this id is stored already, it is left exactly as it
    /// is (its definition, outputs and progress) and `false` is returned;
    /// `true` when this call created it.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn create_workflow(&self, workflow: &Workflow, outputs: &[String]) -> Result<bool>;

    /// The stored definitions of some nodes of a workflow, in order.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`], [`Error::StoreData`].
    async fn workflow_nodes(&self, workflow: TaskId, nodes: &[String])
        -> Result<Vec<Option<Node>>>;

    /// Marks `node` succeeded (once, however often it is called) and
    /// returns its dependents whose dependencies have all succeeded and
    /// that have not finished: each is released exactly once
    /// ([`Ready::first`]).
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn node_succeeded(&self, workflow: TaskId, node: &str) -> Result<Vec<Ready>>;

    /// Marks `node` failed for good and every node downstream of it
    /// skipped; returns the nodes this call skipped.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn node_failed(&self, workflow: TaskId, node: &str) -> Result<Vec<String>>;

    /// The coordinator's record of a workflow.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`], [`Error::StoreData`].
    async fn get_workflow(&self, workflow: TaskId) -> Result<Option<WorkflowRecord>>;

    /// Waits until the workflow finishes (woken by its last node, no
    /// polling), or returns `None` after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Store::get_workflow`].
    async fn wait_workflow(
        &self,
        workflow: TaskId,
        timeout: Duration,
    ) -> Result<Option<WorkflowRecord>>;

    /// [`Store::lease`], unless one of `revocable` (the task id, its
    /// workflow id, its idempotency key) is revoked: then
    /// [`Begin::Revoked`]. Decided with the lease, in the same round trip
    /// where the store allows it, so a task revoked before its lease is
    /// taken never runs.
    ///
    /// # Errors
    ///
    /// As [`Store::lease`].
    async fn admit(&self, key: &str, token: &str, revocable: &[&str]) -> Result<Begin> {
        let now = crate::now_ms();
        let revoked = self.revocations().await?;
        if let Some((id, _)) = revoked
            .into_iter()
            .find(|(id, expiry)| *expiry > now && revocable.contains(&id.as_str()))
        {
            return Ok(Begin::Revoked { id });
        }
        self.lease(key, token).await
    }

    /// Revokes task ids, workflow ids or idempotency keys until
    /// `expires_at` (Unix ms); lapsed revocations are dropped meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`], also from a store that keeps no
    /// revocations.
    async fn revoke(&self, ids: &[String], expires_at: u64) -> Result<()> {
        let _ = (ids, expires_at);
        Err(Error::StoreUnavailable {
            op: "revoke",
            message: "this store keeps no revocations".into(),
        })
    }

    /// The revocations in force: (id or key, expiry in Unix ms).
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn revocations(&self) -> Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }

    /// Every field of a control hash of the namespace.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn hash_all(&self, hash: ControlHash) -> Result<Vec<(String, Vec<u8>)>> {
        let _ = hash;
        Ok(Vec::new())
    }

    /// Sets (`Some`) or deletes (`None`) a field of a control hash.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`], also from a store without control
    /// hashes.
    async fn hash_put(&self, hash: ControlHash, field: &str, value: Option<&[u8]>) -> Result<()> {
        let _ = (hash, field, value);
        Err(Error::StoreUnavailable {
            op: "hash_put",
            message: "this store keeps no control hashes".into(),
        })
    }

    /// Replaces a field of a control hash only if it still holds `old`;
    /// whether it did (atomic: of several callers, one wins).
    ///
    /// # Errors
    ///
    /// As [`Store::hash_put`].
    async fn hash_swap(
        &self,
        hash: ControlHash,
        field: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        let _ = (hash, field, old, new);
        Err(Error::StoreUnavailable {
            op: "hash_swap",
            message: "this store keeps no control hashes".into(),
        })
    }

    /// Marks logical queue `queue` purged at `at_ms` (milliseconds since
    /// the Unix epoch), for `ttl`: a worker drops any later delivery of
    /// that queue whose envelope was created before then (a task that
    /// waited in the shared delay levels while the queue was purged). A
    /// later mark replaces an earlier one.
    ///
    /// The default keeps no marks and says so.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn mark_purged(&self, queue: &str, at_ms: u64, ttl: Duration) -> Result<()> {
        let _ = (queue, at_ms, ttl);
        Err(Error::StoreUnavailable {
            op: "mark purged",
            message: "this store keeps no purge marks".into(),
        })
    }

    /// Every live purge mark: (logical queue, purged at in milliseconds).
    ///
    /// The default keeps no marks and says so.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`].
    async fn purge_marks(&self) -> Result<Vec<(String, u64)>> {
        Err(Error::StoreUnavailable {
            op: "purge marks",
            message: "this store keeps no purge marks".into(),
        })
    }
}

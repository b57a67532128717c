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

mod claim;
mod control_state;
pub mod layout;
mod memory;
mod policy;
mod record;
mod workflow_record;

use std::fmt;
use std::time::Duration;

use crate::workflow::{Node, Workflow};
use crate::{Error, Result, TaskId};

pub use claim::{Begin, Claim, CLAIM_STALE_AFTER};
pub use control_state::ControlHash;
pub use memory::MemoryStore;
pub use policy::{
    burst, tenant_limit, Bucket, Grant, Policy, PoolGrant, PoolStatus, TENANT_RATE_FIELD,
};
pub use record::{
    decode_result, encode_result, TaskFailure, TaskRecord, Transition, Update, HISTORY_LIMIT,
};
pub use workflow_record::{NodeProgress, Ready, WorkflowRecord, WorkflowState};

/// How long the store keeps things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// How long a task record and its result live after their last write.
    pub result_ttl: Duration,
    /// How long an idempotency key is remembered (enqueue claims and
    /// succeeded executions). A task sent without a key is remembered by
    /// its record, for `result_ttl`.
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
    /// each task that claimed its key; one answer per claim, in order. A
    /// key already bound to the claiming task's own id, still `created`
    /// (never confirmed as queued), answers [`Claim::Claimed`] again, so a
    /// send may claim again when it never got the first answer.
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
    /// Tokens are unique per run, and taking the lease again with the token
    /// that holds it answers [`Begin::Run`]: a run whose first call took
    /// the lease but lost its answer (a broken connection, a failover)
    /// calls again and does not wait for itself.
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

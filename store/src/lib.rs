//! # celeriac-store: the state store in Redis
//!
//! [`RedisStore`] implements [`celeriac_schema::store::Store`] (the trait
//! and the in-memory store live in the schema crate) for clusters: task
//! records and results, idempotency and enqueue keys, workflows, the
//! control plane's keys, and the task index of the dashboard
//! ([`TaskQuery`]). [`tls`] holds the TLS settings shared with the broker
//! connection.
//!
//! One multiplexed connection (reconnecting on its own) carries every
//! command. Each store step is atomic: a Lua script where it must read
//! before it writes (producer states with their rules, enqueue claims,
//! workflow steps), plain commands in one transaction where it need not (a
//! run's start and outcome). A run's lease needs no atomicity: its `SET
//! NX` and reads go ahead of the transaction, in the same trip. A worker's
//! concurrent runs share those trips and transactions (see the `batch`
//! module), and a producer's batches of
//! updates go out pipelined. Waiting for results costs one more connection,
//! shared by every waiter of the process: each waiter subscribes to its
//! task's channel, and the final write publishes on it.
//!
//! Keys, under the namespace `{ns}` (the public layout, version 2, of
//! SPEC.md section 18; `celeriac_schema::store::layout` names them and
//! reads records):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:r:{task id}` | hash | the record: its fields, one field `h:…` per transition of its history, and a producer's `queued` mark `q` for a task sent without a key |
//! | `{ns}:k:{key}` | string | the run lease token while a run holds it; `done:{task id}` once a run with this idempotency key succeeded (a task sent without a key, whose key is its id, has its success in its record and its lease deleted) |
//! | `{ns}:e:{key}` | string | the task id an enqueue key is bound to |
//! | `{ns}:purged` | hash | logical queue → when it was purged (ms); the hash lives as long as the longest mark asked for |
//! | channel `{ns}:done:{task id}` | pub/sub | the final state, when reached |
//!
//! The control plane's keys (revocations, run-time limits, workers) are
//! listed in the `control` module, the task index's in [`index`].
//!
//! The modules, by what they hold: `connect` (connecting, running
//! commands, key names), `records` (task states, records, results, enqueue
//! claims, purge marks), `leases` (run leases of idempotency keys),
//! `workflows`, `waiters` (waiting for final states), `control`, [`index`],
//! `batch` (shared transactions) and `scripts` (the Lua scripts).

mod batch;
mod connect;
mod control;
mod error;
pub mod index;
mod leases;
mod limits;
mod pools;
mod records;
mod scripts;
pub mod sentinel;
pub mod tls;
mod waiters;
mod workflows;

pub use connect::connect_manager;
pub use error::{redact_url, Error, Result};
pub use index::{IndexedTask, TaskPage, TaskQuery, INDEX_LIMIT};

use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::store::{
    Begin, Claim, ControlHash, Ready, Store, StoreSettings, TaskRecord, Update, WorkflowRecord,
};
use celeriac_schema::workflow::{Node, Workflow};
use celeriac_schema::{Error as SchemaError, TaskId};
use redis::Script;

use batch::Batcher;
use waiters::Waiters;

type StoreResult<T> = celeriac_schema::Result<T>;

/// A [`Store`] in Redis, for clusters.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use celeriac_store::RedisStore;
/// use celeriac_schema::store::{Store, StoreSettings};
///
/// # async fn demo() -> celeriac_schema::Result<()> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379", "celeriac", StoreSettings::default()).await?;
/// let store: Arc<dyn Store> = Arc::new(store);
/// store.ping().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    prefix: String,
    settings: StoreSettings,
    conn: sentinel::StoreConnection,
    apply: Scripts,
    waiters: Waiters,
    /// Carries the run leases and outcomes of concurrent runs together.
    batcher: Batcher,
    /// Task index entries written by this client (see `index`).
    indexed: std::sync::atomic::AtomicU64,
}

struct Scripts {
    record: Script,
    claim: Script,
    release: Script,
    renew: Script,
    unclaim: Script,
    node_succeeded: Script,
    node_failed: Script,
    create_workflow: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable<'a>(
    op: &'static str,
    url: &'a str,
) -> impl Fn(redis::RedisError) -> SchemaError + 'a {
    move |e| SchemaError::StoreUnavailable {
        op,
        message: format!("{} ({})", e, redact_url(url)),
    }
}

/// MessagePack with named fields, as the store keeps its values.
fn encode<T: serde::Serialize + ?Sized>(what: &'static str, value: &T) -> StoreResult<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| SchemaError::Encode {
        what,
        message: e.to_string(),
    })
}

impl RedisStore {
    /// The key prefix (`{namespace}:`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    fn settings(&self) -> &StoreSettings {
        &self.inner.settings
    }

    fn policy(&self) -> Option<&dyn celeriac_schema::store::Policy> {
        Some(self)
    }

    async fn mark_purged(&self, queue: &str, at_ms: u64, ttl: Duration) -> StoreResult<()> {
        self.mark_queue_purged(queue, at_ms, ttl).await
    }

    async fn purge_marks(&self) -> StoreResult<Vec<(String, u64)>> {
        self.read_purge_marks().await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.ping_redis().await
    }

    async fn record(&self, updates: &[Update]) -> StoreResult<()> {
        self.record_updates(updates).await
    }

    async fn get(&self, id: TaskId) -> StoreResult<Option<TaskRecord>> {
        self.get_record(id).await
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> StoreResult<Option<TaskRecord>> {
        self.wait_record(id, timeout).await
    }

    async fn claim(&self, claims: &[(String, Update)]) -> StoreResult<Vec<Claim>> {
        self.claim_keys(claims).await
    }

    async fn unclaim(&self, claims: &[(String, TaskId)]) -> StoreResult<()> {
        self.unclaim_keys(claims).await
    }

    async fn lease(&self, key: &str, token: &str) -> StoreResult<Begin> {
        self.take_lease(key, token).await
    }

    async fn admit(&self, key: &str, token: &str, revocable: &[&str]) -> StoreResult<Begin> {
        self.admit_checked(key, token, revocable).await
    }

    async fn revoke(&self, ids: &[String], expires_at: u64) -> StoreResult<()> {
        self.revoke_ids(ids, expires_at).await
    }

    async fn revocations(&self) -> StoreResult<Vec<(String, u64)>> {
        self.live_revocations().await
    }

    async fn hash_all(&self, hash: ControlHash) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.control_hash_all(hash).await
    }

    async fn hash_put(
        &self,
        hash: ControlHash,
        field: &str,
        value: Option<&[u8]>,
    ) -> StoreResult<()> {
        self.control_hash_put(hash, field, value).await
    }

    async fn hash_swap(
        &self,
        hash: ControlHash,
        field: &str,
        old: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        self.control_hash_swap(hash, field, old, new).await
    }

    async fn started(&self, update: &Update) -> StoreResult<()> {
        self.record_started(update).await
    }

    async fn results(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.read_results(ids).await
    }

    async fn create_workflow(&self, workflow: &Workflow, outputs: &[String]) -> StoreResult<bool> {
        self.create_workflow_record(workflow, outputs).await
    }

    async fn workflow_nodes(
        &self,
        workflow: TaskId,
        nodes: &[String],
    ) -> StoreResult<Vec<Option<Node>>> {
        self.read_workflow_nodes(workflow, nodes).await
    }

    async fn node_succeeded(&self, workflow: TaskId, node: &str) -> StoreResult<Vec<Ready>> {
        self.release_after_success(workflow, node).await
    }

    async fn node_failed(&self, workflow: TaskId, node: &str) -> StoreResult<Vec<String>> {
        self.skip_after_failure(workflow, node).await
    }

    async fn get_workflow(&self, workflow: TaskId) -> StoreResult<Option<WorkflowRecord>> {
        self.read_workflow(workflow).await
    }

    async fn wait_workflow(
        &self,
        workflow: TaskId,
        timeout: Duration,
    ) -> StoreResult<Option<WorkflowRecord>> {
        self.wait_workflow_record(workflow, timeout).await
    }

    async fn renew(&self, key: &str, token: &str) -> StoreResult<bool> {
        self.renew_lease(key, token).await
    }

    async fn finish(&self, key: &str, token: &str, update: &Update) -> StoreResult<()> {
        self.finish_run(key, token, update).await
    }
}

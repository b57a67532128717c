//! Typed handles on sent tasks: their state and their result.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::store::{
    decode_result, NodeProgress, Store, TaskFailure, TaskRecord, WorkflowRecord, WorkflowState,
};
use celeriac_schema::workflow::node_task_id;
use celeriac_schema::{Task, TaskId, TaskState};

use crate::error::{Error, Result};

/// A sent task of type `T`: ask for its state or wait for its output.
///
/// Handles are cheap to clone and to keep by the thousand: waiting costs no
/// polling, and every handle of a process shares one store connection for
/// its wake-ups. Build one for an id you kept with
/// [`Producer::handle`](crate::Producer::handle).
///
/// # Examples
///
/// ```no_run
/// # async fn demo(producer: celeriac_producer::Producer) -> celeriac_producer::Result<()> {
/// use std::time::Duration;
/// use celeriac_producer::{Error, SendOptions};
/// use celeriac_schema::Task;
///
/// struct Add;
/// impl Task for Add {
///     const NAME: &'static str = "math.add";
///     type Input = (i64, i64);
///     type Output = i64;
/// }
///
/// let handle = producer.send::<Add>(&(2, 3), &SendOptions::new()).await?;
/// match handle.wait(Duration::from_secs(10)).await {
///     Ok(sum) => assert_eq!(sum, 5),
///     Err(Error::TaskFailed { failure, .. }) => eprintln!("failed: {failure}"),
///     Err(Error::WaitTimedOut { state, .. }) => eprintln!("still {state:?}"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
pub struct TaskHandle<T> {
    id: TaskId,
    store: Option<Arc<dyn Store>>,
    /// The producer that sent it, to revoke it.
    producer: Option<crate::Producer>,
    _task: PhantomData<fn() -> T>,
}

impl<T> Clone for TaskHandle<T> {
    fn clone(&self) -> Self {
        TaskHandle {
            id: self.id,
            store: self.store.clone(),
            producer: self.producer.clone(),
            _task: PhantomData,
        }
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle").field("id", &self.id).finish()
    }
}

impl<T: Task> TaskHandle<T> {
    pub(crate) fn new(id: TaskId, store: Option<Arc<dyn Store>>) -> Self {
        TaskHandle {
            id,
            store,
            producer: None,
            _task: PhantomData,
        }
    }

    pub(crate) fn with_producer(mut self, producer: crate::Producer) -> Self {
        self.producer = Some(producer);
        self
    }

    /// Revokes the task (see [`Producer::revoke`](crate::Producer::revoke)):
    /// if it has not started it never runs, and with
    /// [`RevokeOptions::terminate`](crate::control::RevokeOptions) a run in
    /// progress is stopped; [`TaskHandle::wait`] then returns
    /// [`Error::TaskRevoked`].
    ///
    /// # Errors
    ///
    /// As [`Producer::revoke`](crate::Producer::revoke);
    /// [`Error::InvalidOptions`] for a handle built without a producer.
    pub async fn revoke(
        &self,
        options: &crate::control::RevokeOptions,
    ) -> Result<crate::control::Revoked> {
        revoke_with(self.producer.as_ref(), self.id, options).await
    }

    /// The task id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    fn store(&self, what: &'static str) -> Result<&Arc<dyn Store>> {
        self.store.as_ref().ok_or(Error::NoStore { what })
    }

    /// The task's current state; `None` when the store does not know the
    /// id (never sent with this store, or expired after its result TTL).
    ///
    /// # Errors
    ///
    /// [`Error::NoStore`] without a store; [`Error::Schema`] when the store
    /// is unreachable.
    pub async fn status(&self) -> Result<Option<TaskState>> {
        Ok(self.record().await?.map(|r| r.state))
    }

    /// Everything the store knows about the task.
    ///
    /// # Errors
    ///
    /// As [`TaskHandle::status`].
    pub async fn record(&self) -> Result<Option<TaskRecord>> {
        Ok(self.store("task status")?.get(self.id).await?)
    }

    /// Waits up to `timeout` for the task to finish and returns its output.
    ///
    /// # Errors
    ///
    /// - [`Error::TaskFailed`] with its last error when it failed for good;
    /// - [`Error::TaskRevoked`], [`Error::TaskExpired`], [`Error::TaskSkipped`];
    /// - [`Error::WaitTimedOut`] with its state when `timeout` passed first;
    /// - [`Error::NoResult`] when it succeeded without storing a result;
    /// - [`Error::NoStore`] without a store, [`Error::Schema`] when the
    ///   store is unreachable or the result is not a `T::Output`.
    pub async fn wait(&self, timeout: Duration) -> Result<T::Output> {
        let store = self.store("waiting for a result")?;
        let Some(record) = store.wait(self.id, timeout).await? else {
            let state = store.get(self.id).await?.map(|r| r.state);
            return Err(Error::WaitTimedOut {
                task_id: self.id,
                after: timeout,
                state,
            });
        };
        outcome::<T>(record)
    }
}

/// The output of a finished task, or its failure as an error.
pub(crate) fn outcome<T: Task>(record: TaskRecord) -> Result<T::Output> {
    let task_id = record.id;
    match record.state {
        TaskState::Succeeded => match &record.result {
            Some(bytes) => Ok(decode_result(bytes)?),
            // A unit-like output is stored as nothing at all when opted out.
            None => decode_result(&[0xc0]).map_err(|_| Error::NoResult { task_id }),
        },
        TaskState::Failed => Err(Error::TaskFailed {
            task_id,
            failure: record.error.unwrap_or_else(|| TaskFailure {
                error_type: "Unknown".into(),
                message: "the task failed without a recorded error".into(),
            }),
        }),
        TaskState::Revoked => Err(Error::TaskRevoked { task_id }),
        TaskState::Expired => Err(Error::TaskExpired { task_id }),
        TaskState::Skipped => Err(Error::TaskSkipped { task_id }),
        state => Err(Error::WaitTimedOut {
            task_id,
            after: Duration::ZERO,
            state: Some(state),
        }),
    }
}

/// A submitted workflow: its status and its result.
///
/// The result is that of its output nodes: the one output's result, or a
/// list of them in order (a group).
#[derive(Clone)]
pub struct WorkflowHandle {
    id: TaskId,
    store: Arc<dyn Store>,
    producer: Option<crate::Producer>,
}

async fn revoke_with(
    producer: Option<&crate::Producer>,
    id: TaskId,
    options: &crate::control::RevokeOptions,
) -> Result<crate::control::Revoked> {
    let producer = producer.ok_or_else(|| {
        Error::InvalidOptions(
            "this handle was built without a producer: use Producer::revoke".into(),
        )
    })?;
    producer.revoke(&[id.to_string()], options).await
}

impl fmt::Debug for WorkflowHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowHandle")
            .field("id", &self.id)
            .finish()
    }
}

/// One node of a workflow status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    /// The node id.
    pub id: String,
    /// Its task id.
    pub task_id: TaskId,
    /// The coordinator's view.
    pub progress: NodeProgress,
    /// Its task's record, once it has one.
    pub record: Option<TaskRecord>,
}

impl NodeStatus {
    /// Runs started (0 for a node that never ran).
    pub fn attempts(&self) -> u32 {
        self.record.as_ref().map_or(0, |r| r.runs)
    }

    /// Its last error.
    pub fn error(&self) -> Option<&TaskFailure> {
        self.record.as_ref().and_then(|r| r.error.as_ref())
    }
}

/// Every node of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkflowStatus {
    /// The coordinator's record.
    pub workflow: WorkflowRecord,
    /// Each node, sorted by id.
    pub nodes: Vec<NodeStatus>,
}

impl WorkflowHandle {
    pub(crate) fn new(id: TaskId, store: Arc<dyn Store>) -> Self {
        WorkflowHandle {
            id,
            store,
            producer: None,
        }
    }

    pub(crate) fn with_producer(mut self, producer: crate::Producer) -> Self {
        self.producer = Some(producer);
        self
    }

    /// Revokes the whole workflow: no node that has not started runs, and
    /// with [`RevokeOptions::terminate`](crate::control::RevokeOptions)
    /// running ones are stopped; every revoked node skips its dependents,
    /// as a failure does.
    ///
    /// # Errors
    ///
    /// As [`Producer::revoke`](crate::Producer::revoke).
    pub async fn revoke(
        &self,
        options: &crate::control::RevokeOptions,
    ) -> Result<crate::control::Revoked> {
        revoke_with(self.producer.as_ref(), self.id, options).await
    }

    /// The workflow id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Every node's progress, state, attempts and error; `None` for an
    /// unknown id.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] when the store is unreachable.
    pub async fn status(&self) -> Result<Option<WorkflowStatus>> {
        workflow_status(self.store.as_ref(), self.id).await
    }

    /// Waits up to `timeout` for every node to finish and returns the
    /// workflow's result.
    ///
    /// # Errors
    ///
    /// [`Error::WorkflowFailed`] naming the failed nodes;
    /// [`Error::WaitTimedOut`]; [`Error::Schema`] for store failures.
    pub async fn wait(&self, timeout: Duration) -> Result<rmpv::Value> {
        let Some(record) = self.store.wait_workflow(self.id, timeout).await? else {
            return Err(Error::WaitTimedOut {
                task_id: self.id,
                after: timeout,
                state: None,
            });
        };
        if record.state == WorkflowState::Failed {
            let mut failed: Vec<String> = record
                .progress
                .iter()
                .filter(|(_, p)| **p == NodeProgress::Failed)
                .map(|(n, _)| n.clone())
                .collect();
            failed.sort();
            let first_error = match failed.first() {
                Some(node) => self
                    .store
                    .get(node_task_id(self.id, node))
                    .await?
                    .and_then(|r| r.error),
                None => None,
            };
            return Err(Error::WorkflowFailed {
                workflow_id: self.id,
                failed,
                first_error,
            });
        }
        let ids: Vec<TaskId> = record
            .outputs
            .iter()
            .map(|n| node_task_id(self.id, n))
            .collect();
        let mut values = Vec::with_capacity(ids.len());
        for bytes in self.store.results(&ids).await? {
            values.push(match bytes {
                Some(bytes) => decode_result::<rmpv::Value>(&bytes)?,
                None => rmpv::Value::Nil,
            });
        }
        Ok(match values.len() {
            1 => values.swap_remove(0),
            _ => rmpv::Value::Array(values),
        })
    }

    /// [`WorkflowHandle::wait`], decoded as `T`.
    ///
    /// # Errors
    ///
    /// As [`WorkflowHandle::wait`], and [`Error::Schema`] when the result
    /// is not a `T`.
    pub async fn wait_as<T: serde::de::DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        let value = self.wait(timeout).await?;
        Ok(celeriac_schema::from_value(&value, "result")?)
    }
}

/// Every node of workflow `id`, joined with its task record.
///
/// # Errors
///
/// [`Error::Schema`] when the store is unreachable.
pub async fn workflow_status(store: &dyn Store, id: TaskId) -> Result<Option<WorkflowStatus>> {
    let Some(workflow) = store.get_workflow(id).await? else {
        return Ok(None);
    };
    let mut nodes = Vec::with_capacity(workflow.progress.len());
    for (node, progress) in &workflow.progress {
        let task_id = node_task_id(id, node);
        nodes.push(NodeStatus {
            id: node.clone(),
            task_id,
            progress: *progress,
            record: store.get(task_id).await?,
        });
    }
    Ok(Some(WorkflowStatus { workflow, nodes }))
}

//! Why a workflow cannot be run in-process.

use celeriac_schema::dag::DagError;

/// A workflow the [`LocalScheduler`](crate::LocalScheduler) refuses, before
/// any of its tasks runs.
///
/// Failing tasks are not errors of the run: they are reported in their
/// [`TaskResult`](crate::TaskResult).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// A task id was added twice.
    #[error("task `{id}` is added twice")]
    DuplicateTask {
        /// The repeated id.
        id: String,
    },
    /// The dependencies do not form a DAG: an unknown id or a cycle.
    #[error(transparent)]
    Graph(#[from] DagError),
    /// A task wants a resource pool that was not declared.
    #[error("task `{task}` uses resource pool `{resource}`, which is not declared")]
    UnknownResource {
        /// The task.
        task: String,
        /// The pool it names.
        resource: String,
    },
    /// A task asks for more units of a pool than the pool has, so it could
    /// never start.
    #[error("task `{task}` asks for {units} units of resource pool `{resource}`, whose capacity is {capacity}")]
    PoolTooSmall {
        /// The task.
        task: String,
        /// The pool.
        resource: String,
        /// The units asked for.
        units: u32,
        /// The pool's capacity.
        capacity: usize,
    },
    /// A pool or the worker count is zero, so some task could never start.
    #[error("{what} must be at least 1")]
    ZeroCapacity {
        /// `max_workers` or `resource pool "<name>"`.
        what: String,
    },
    /// A workflow node names a handler the registry does not have.
    #[error("task `{task}` runs handler `{handler}`, which is not registered (known: {known})")]
    UnknownHandler {
        /// The node.
        task: String,
        /// The handler it names.
        handler: String,
        /// The registered handlers, comma-separated.
        known: String,
    },
    /// The runtime shut down while the workflow ran.
    #[error("the run was aborted: the runtime is shutting down")]
    Aborted,
}

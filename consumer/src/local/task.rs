//! What the scheduler runs: a task body, its options, and what it sees.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::dag::Dag;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::registry::BoxFuture;
use crate::task_error::TaskError;

/// Error kind of a result that cannot be represented as JSON.
pub const OUTPUT_ERROR: &str = "OutputError";

/// What one attempt of a task returns.
pub type TaskOutput = Result<Value, TaskError>;

type AsyncBody = dyn Fn(LocalContext) -> BoxFuture<TaskOutput> + Send + Sync;
type BlockingBody = dyn Fn(LocalContext) -> TaskOutput + Send + Sync;

/// The body of a task: an async function, or a plain closure that runs on a
/// blocking thread.
///
/// The body is called once per attempt, so it is `Fn`. It returns any
/// serializable value, which becomes the task's JSON result and its
/// dependents' input; an error of a kind that is not retryable
/// ([`TaskError::fatal`]) ends the task without further attempts.
///
/// Cheap to clone.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::{LocalTask, TaskError};
///
/// // An async function.
/// let fetch = LocalTask::new(|ctx| async move {
///     Ok::<_, TaskError>(format!("fetched by {}", ctx.id()))
/// });
/// // A plain closure, run on a blocking thread.
/// let parse = LocalTask::blocking(|ctx| {
///     let n: u32 = "42".parse()?;
///     Ok(n + ctx.attempt())
/// });
/// # let _ = (fetch, parse);
/// ```
#[derive(Clone)]
pub struct LocalTask {
    pub(crate) body: Body,
}

#[derive(Clone)]
pub(crate) enum Body {
    Async(Arc<AsyncBody>),
    Blocking(Arc<BlockingBody>),
}

impl LocalTask {
    /// A task whose body is an async function, polled on the runtime that
    /// calls [`run`](crate::LocalScheduler::run).
    pub fn new<F, Fut, T>(body: F) -> Self
    where
        F: Fn(LocalContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Serialize,
    {
        LocalTask {
            body: Body::Async(Arc::new(move |ctx| {
                let attempt = body(ctx);
                Box::pin(async move { attempt.await.and_then(to_json) })
            })),
        }
    }

    /// A task whose body is a plain closure, run on tokio's blocking thread
    /// pool so that it may block or compute for long.
    ///
    /// A blocking body cannot be interrupted: when it overruns its timeout or
    /// is cancelled, its [`LocalContext::is_cancelled`] turns true and its
    /// eventual result is ignored.
    pub fn blocking<F, T>(body: F) -> Self
    where
        F: Fn(LocalContext) -> Result<T, TaskError> + Send + Sync + 'static,
        T: Serialize,
    {
        LocalTask {
            body: Body::Blocking(Arc::new(move |ctx| body(ctx).and_then(to_json))),
        }
    }

    /// Whether the body runs on a blocking thread.
    pub fn is_blocking(&self) -> bool {
        matches!(self.body, Body::Blocking(_))
    }
}

impl fmt::Debug for LocalTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_blocking() {
            "LocalTask::blocking(..)"
        } else {
            "LocalTask::new(..)"
        })
    }
}

fn to_json<T: Serialize>(value: T) -> TaskOutput {
    serde_json::to_value(value).map_err(|e| {
        TaskError::fatal(
            OUTPUT_ERROR,
            format!("the result cannot be represented as JSON: {e}"),
        )
    })
}

/// How a task is wired into the graph and how it is run.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_consumer::TaskOptions;
///
/// let options = TaskOptions::new()
///     .depends_on(["load", "clean"])
///     .retries(2)
///     .timeout(Duration::from_secs(30))
///     .resource("gpu");
/// assert_eq!(options.dependencies, ["load", "clean"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskOptions {
    /// Ids of the tasks whose success this one waits for, and whose results
    /// it receives by name.
    pub dependencies: Vec<String>,
    /// How many times a failed attempt is retried: a task runs at most
    /// `retries + 1` times.
    pub retries: u32,
    /// The longest one attempt may run; an attempt that overruns fails with
    /// kind [`TIME_LIMIT`](crate::TIME_LIMIT) and may be retried.
    pub timeout: Option<Duration>,
    /// A resource pool (declared with
    /// [`LocalScheduler::resource_pool`](crate::LocalScheduler::resource_pool))
    /// of which the task holds one unit while it runs.
    pub resource: Option<String>,
    /// The tenant the task runs for: ready tasks of different tenants take
    /// turns for the workers, so one tenant's many tasks cannot hold back
    /// another's few (tasks without a tenant count as one tenant).
    pub tenant: Option<String>,
    /// How long the task may wait after it became ready (SPEC.md section
    /// 19.8): ready tasks without one start first, then those with the
    /// earliest deadline.
    pub tolerance: Option<Duration>,
    /// Units of several resource pools the task holds while it runs, all
    /// taken at once (a `resource` counts as one unit of its pool).
    pub pools: std::collections::BTreeMap<String, u32>,
}

impl TaskOptions {
    /// No dependency, no retry, no timeout, no resource.
    pub fn new() -> Self {
        TaskOptions::default()
    }

    /// Adds dependencies.
    pub fn depends_on<I, S>(mut self, dependencies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.dependencies
            .extend(dependencies.into_iter().map(Into::into));
        self
    }

    /// Sets the number of retries.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the timeout of each attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the delay tolerance.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Some(tolerance);
        self
    }

    /// Sets the resource pool.
    pub fn resource(mut self, pool: impl Into<String>) -> Self {
        self.resource = Some(pool.into());
        self
    }

    /// Sets the tenant: ready tasks of different tenants start in turns.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_consumer::TaskOptions;
    ///
    /// assert_eq!(TaskOptions::new().tenant("acme").tenant.as_deref(), Some("acme"));
    /// ```
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Holds `units` of pool `pool` while the task runs (several pools may
    /// be named: the task starts when all its units are free).
    ///
    /// ```
    /// use celeriac_consumer::TaskOptions;
    ///
    /// let options = TaskOptions::new().pool("gpu", 2).pool("db", 1);
    /// assert_eq!(options.pools.get("gpu"), Some(&2));
    /// ```
    pub fn pool(mut self, pool: impl Into<String>, units: u32) -> Self {
        self.pools.insert(pool.into(), units);
        self
    }
}

/// What a running task knows: who it is, which attempt this is, its
/// dependencies' results, and whether it should stop.
///
/// Cheap to clone.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::{LocalContext, LocalTask, TaskError};
///
/// // Sums the results of whatever it depends on.
/// let total = LocalTask::blocking(|ctx: LocalContext| {
///     let sum: i64 = ctx.inputs().filter_map(|(_, v)| v.as_i64()).sum();
///     Ok::<_, TaskError>(sum)
/// });
/// # let _ = total;
/// ```
#[derive(Clone)]
pub struct LocalContext {
    pub(crate) attempt: u32,
    pub(crate) inputs: Arc<Inputs>,
    pub(crate) token: CancellationToken,
}

/// A task's place in the graph and its dependencies' results, shared by its
/// attempts. Names are read from the graph rather than copied per edge.
pub(crate) struct Inputs {
    pub(crate) dag: Arc<Dag>,
    pub(crate) node: usize,
    /// One per `dag.dependencies(node)`, in that order.
    pub(crate) values: Vec<Arc<Value>>,
}

impl LocalContext {
    /// The task's id.
    pub fn id(&self) -> &str {
        self.inputs.dag.id(self.inputs.node)
    }

    /// The attempt, 1 for the first run.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The result of dependency `id`, when this task depends on it.
    pub fn input(&self, id: &str) -> Option<&Value> {
        self.inputs()
            .find(|(dep, _)| *dep == id)
            .map(|(_, value)| value)
    }

    /// Every dependency's id and result, in the order the dependencies were
    /// declared.
    pub fn inputs(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> + '_ {
        let dag = &*self.inputs.dag;
        dag.dependencies(self.inputs.node)
            .iter()
            .zip(&self.inputs.values)
            .map(move |(&dep, value)| (dag.id(dep), &**value))
    }

    /// The dependencies' results as one JSON object keyed by id.
    pub fn inputs_object(&self) -> serde_json::Map<String, Value> {
        self.inputs()
            .map(|(id, value)| (id.to_owned(), value.clone()))
            .collect()
    }

    /// The token that is cancelled when this task should stop: the task or
    /// one of its dependencies was cancelled, the whole run was, or this
    /// attempt overran its timeout. Checking it is up to the task.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether this task should stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

impl fmt::Debug for LocalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalContext")
            .field("id", &self.id())
            .field("attempt", &self.attempt)
            .field("inputs", &self.inputs.values.len())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

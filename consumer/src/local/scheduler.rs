//! The in-process executor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use celeriac_schema::dag::Dag;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::error::LocalError;
use super::event::{Events, LocalEvent};
use super::ready::ReadyQueues;
use super::result::TaskResult;
use super::task::{LocalTask, TaskOptions};

mod run;

use run::{Run, Spec, State};

/// Workers of a scheduler built with [`LocalScheduler::new`].
pub const DEFAULT_MAX_WORKERS: usize = 4;

/// Runs a DAG of tasks in-process, with no broker.
///
/// Tasks are added with [`add_task`](Self::add_task) (or
/// [`add_task_with`](Self::add_task_with) for timeouts and resource pools)
/// in any order, then [`run`](Self::run) checks the graph and runs it:
///
/// - a task starts the moment all its dependencies have succeeded, and
///   every ready task starts at once, up to `max_workers` running together
///   (ready tasks start in the order they became ready, tenants taking
///   turns: see [`TaskOptions::tenant()`]);
/// - a task receives its dependencies' results by id
///   ([`LocalContext::input`](super::LocalContext::input));
/// - a failed attempt is retried up to the task's `retries`; a task whose
///   last attempt fails is `failed` with that attempt's error, and every
///   task downstream of it is `skipped` with 0 attempts, while independent
///   branches run to completion;
/// - a task holding units of resource pools also holds one of the
///   `max_workers`: with a `gpu` pool of 2 and 4 workers, two other tasks
///   run beside two `gpu` tasks; a task naming several pools
///   ([`TaskOptions::pool`]) takes all its units at once or waits.
///
/// # Examples
///
/// The diamond `a → {b, c} → d`, with `b` failing once before it succeeds:
///
/// ```
/// use celeriac_consumer::{LocalScheduler, LocalTask, TaskError, TaskStatus};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mut dag = LocalScheduler::new();
/// dag.add_task("a", LocalTask::blocking(|_| Ok::<_, TaskError>(1)), &[], 0)?;
/// dag.add_task("b", LocalTask::blocking(|ctx| {
///     if ctx.attempt() == 1 {
///         return Err(TaskError::new("Flaky", "first attempt fails"));
///     }
///     Ok(ctx.input("a").and_then(|v| v.as_i64()).unwrap_or(0) + 10)
/// }), &["a"], 1)?;
/// dag.add_task("c", LocalTask::new(|ctx| async move {
///     Ok::<_, TaskError>(ctx.input("a").and_then(|v| v.as_i64()).unwrap_or(0) + 100)
/// }), &["a"], 0)?;
/// dag.add_task("d", LocalTask::blocking(|ctx| {
///     Ok::<_, TaskError>(ctx.inputs().filter_map(|(_, v)| v.as_i64()).sum::<i64>())
/// }), &["b", "c"], 0)?;
///
/// let results = dag.run().await?;
/// assert_eq!(results["b"].attempts, 2);
/// assert_eq!(results["d"].status, TaskStatus::Success);
/// assert_eq!(results["d"].result, Some(serde_json::json!(112)));
/// # Ok::<(), celeriac_consumer::LocalError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct LocalScheduler {
    max_workers: usize,
    pools: Vec<(String, usize)>,
    entries: Vec<Entry>,
    ids: HashSet<String>,
    cancel: CancelHandle,
    cancel_requests: mpsc::UnboundedReceiver<String>,
    events: Events,
}

#[derive(Debug)]
struct Entry {
    id: String,
    task: LocalTask,
    options: TaskOptions,
}

/// Cancels the tasks of a [`LocalScheduler`], from anywhere, before or
/// during its run.
///
/// Cancellation is cooperative: a running task sees it through its
/// [`LocalContext::cancellation_token`](super::LocalContext::cancellation_token),
/// is not retried, and its result is kept if it returns one. A task cancelled before it started is `skipped`
/// with kind [`CANCELLED`](super::CANCELLED).
///
/// Cheap to clone.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::{LocalScheduler, LocalTask, TaskError, TaskStatus};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mut dag = LocalScheduler::new();
/// dag.add_task("a", LocalTask::blocking(|_| Ok::<_, TaskError>(())), &[], 0)?;
/// dag.add_task("b", LocalTask::blocking(|_| Ok::<_, TaskError>(())), &["a"], 0)?;
/// dag.cancel_handle().cancel("a");
/// let results = dag.run().await?;
/// assert_eq!(results["a"].status, TaskStatus::Skipped);
/// assert_eq!(results["b"].status, TaskStatus::Skipped);
/// # Ok::<(), celeriac_consumer::LocalError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct CancelHandle {
    all: CancellationToken,
    requests: mpsc::UnboundedSender<String>,
}

impl CancelHandle {
    /// Cancels task `id` and everything downstream of it. An unknown id is
    /// ignored (and logged).
    pub fn cancel(&self, id: impl Into<String>) {
        // The receiver lives as long as the scheduler; once the run is over
        // there is nothing left to cancel.
        let _ = self.requests.send(id.into());
    }

    /// Cancels every task: nothing new starts, running tasks see their
    /// tokens cancelled, tasks not yet started are `skipped`.
    pub fn cancel_all(&self) {
        self.all.cancel();
    }

    /// Whether [`cancel_all`](Self::cancel_all) was called.
    pub fn is_cancelled(&self) -> bool {
        self.all.is_cancelled()
    }
}

impl Default for LocalScheduler {
    fn default() -> Self {
        LocalScheduler::new()
    }
}

impl LocalScheduler {
    /// An empty scheduler with [`DEFAULT_MAX_WORKERS`] workers.
    pub fn new() -> Self {
        LocalScheduler::with_max_workers(DEFAULT_MAX_WORKERS)
    }

    /// An empty scheduler that runs at most `max_workers` tasks at once.
    pub fn with_max_workers(max_workers: usize) -> Self {
        let (requests, cancel_requests) = mpsc::unbounded_channel();
        LocalScheduler {
            max_workers,
            pools: Vec::new(),
            entries: Vec::new(),
            ids: HashSet::new(),
            cancel: CancelHandle {
                all: CancellationToken::new(),
                requests,
            },
            cancel_requests,
            events: Events::default(),
        }
    }

    /// How many tasks may run at once.
    pub fn max_workers(&self) -> usize {
        self.max_workers
    }

    /// Declares (or resizes) resource pool `name`: at most `capacity` tasks
    /// that use it run at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_consumer::{LocalScheduler, LocalTask, TaskError, TaskOptions};
    ///
    /// let mut dag = LocalScheduler::new();
    /// dag.resource_pool("gpu", 2);
    /// for i in 0..8 {
    ///     let train = LocalTask::blocking(|_| Ok::<_, TaskError>(()));
    ///     dag.add_task_with(format!("train-{i}"), train, TaskOptions::new().resource("gpu"))?;
    /// }
    /// # Ok::<(), celeriac_consumer::LocalError>(())
    /// ```
    pub fn resource_pool(&mut self, name: impl Into<String>, capacity: usize) -> &mut Self {
        let name = name.into();
        match self.pools.iter_mut().find(|(n, _)| *n == name) {
            Some(pool) => pool.1 = capacity,
            None => self.pools.push((name, capacity)),
        }
        self
    }

    /// The events of the coming run: one per change of a task's state
    /// (attempt started, retrying, succeeded, failed, skipped), for
    /// progress displays. Events are buffered until read; the channel
    /// closes when the run is over. Calling it again replaces the earlier
    /// receiver.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_consumer::local::{LocalEventKind, LocalScheduler, LocalTask};
    /// use celeriac_consumer::TaskError;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mut dag = LocalScheduler::new();
    /// dag.add_task("a", LocalTask::blocking(|_| Ok::<_, TaskError>(1)), &[], 0)?;
    /// let mut events = dag.events();
    /// dag.run().await?;
    /// let mut seen = Vec::new();
    /// while let Some(event) = events.recv().await {
    ///     seen.push((event.task.to_string(), event.kind.name()));
    /// }
    /// assert_eq!(seen, [("a".to_string(), "started"), ("a".to_string(), "succeeded")]);
    /// # Ok::<(), celeriac_consumer::LocalError>(())
    /// # }).unwrap();
    /// ```
    pub fn events(&mut self) -> mpsc::UnboundedReceiver<LocalEvent> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.events = Events::new(sender);
        receiver
    }

    /// A handle to cancel tasks while [`run`](Self::run) runs.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Number of tasks added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no task was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds task `id`, which waits for `dependencies` and is retried up to
    /// `retries` times. Dependencies may be added later; they are checked by
    /// [`run`](Self::run).
    ///
    /// # Errors
    ///
    /// [`LocalError::DuplicateTask`] when `id` is already taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_consumer::{LocalError, LocalScheduler, LocalTask, TaskError};
    ///
    /// let mut dag = LocalScheduler::new();
    /// let noop = LocalTask::blocking(|_| Ok::<_, TaskError>(()));
    /// dag.add_task("report", noop.clone(), &["extract"], 3)?;
    /// dag.add_task("extract", noop.clone(), &[], 0)?;
    /// assert_eq!(
    ///     dag.add_task("extract", noop, &[], 0),
    ///     Err(LocalError::DuplicateTask { id: "extract".into() })
    /// );
    /// # Ok::<(), LocalError>(())
    /// ```
    pub fn add_task(
        &mut self,
        id: impl Into<String>,
        task: LocalTask,
        dependencies: &[&str],
        retries: u32,
    ) -> Result<(), LocalError> {
        let options = TaskOptions::new()
            .depends_on(dependencies.iter().copied())
            .retries(retries);
        self.add_task_with(id, task, options)
    }

    /// Adds task `id` with all its [`TaskOptions`].
    ///
    /// # Errors
    ///
    /// [`LocalError::DuplicateTask`] when `id` is already taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use celeriac_consumer::{LocalScheduler, LocalTask, TaskError, TaskOptions};
    ///
    /// let mut dag = LocalScheduler::new();
    /// let slow = LocalTask::new(|ctx| async move {
    ///     tokio::select! {
    ///         _ = ctx.cancellation_token().cancelled() => Err(TaskError::new("Stopped", "told to stop")),
    ///         _ = tokio::time::sleep(Duration::from_millis(10)) => Ok(()),
    ///     }
    /// });
    /// let deps = vec!["a".to_string()];
    /// dag.add_task_with("slow", slow, TaskOptions::new()
    ///     .depends_on(deps)
    ///     .retries(1)
    ///     .timeout(Duration::from_secs(5)))?;
    /// # Ok::<(), celeriac_consumer::LocalError>(())
    /// ```
    pub fn add_task_with(
        &mut self,
        id: impl Into<String>,
        task: LocalTask,
        options: TaskOptions,
    ) -> Result<(), LocalError> {
        let id = id.into();
        if !self.ids.insert(id.clone()) {
            return Err(LocalError::DuplicateTask { id });
        }
        self.entries.push(Entry { id, task, options });
        Ok(())
    }

    /// Runs every task and reports each one's outcome by id.
    ///
    /// Needs a tokio runtime (either flavour). Returns once every task has
    /// an outcome; after [`CancelHandle::cancel_all`], once the tasks that
    /// were running have returned.
    ///
    /// # Errors
    ///
    /// [`LocalError::Aborted`] when the runtime shuts down during the run.
    /// Before anything runs: [`LocalError::Graph`] naming an unknown
    /// dependency or a cycle, [`LocalError::UnknownResource`] for an
    /// undeclared pool, [`LocalError::ZeroCapacity`] when `max_workers` or a
    /// pool used by a task is 0. Task failures are not errors: see
    /// [`TaskResult`].
    pub async fn run(self) -> Result<HashMap<String, TaskResult>, LocalError> {
        if self.max_workers == 0 {
            return Err(LocalError::ZeroCapacity {
                what: "max_workers".into(),
            });
        }
        let dag = Dag::new(
            self.entries
                .iter()
                .map(|e| (e.id.clone(), &e.options.dependencies)),
        )?;
        let pools = super::pools::PoolTable::resolve(
            &self.pools,
            self.entries.iter().map(|e| (e.id.as_str(), &e.options)),
        )?;

        let span = tracing::debug_span!("local_run", tasks = dag.len(), edges = dag.edge_count());
        let n = dag.len();
        let tenant_of = self
            .entries
            .iter()
            .map(|e| e.options.tenant.as_deref().map(Arc::from));
        let tenant_of = tenant_of.collect();
        let specs = self
            .entries
            .into_iter()
            .map(|e| {
                Arc::new(Spec {
                    id: Arc::from(e.id),
                    task: e.task,
                    retries: e.options.retries,
                    timeout: e.options.timeout,
                    tolerance: e.options.tolerance,
                })
            })
            .collect();
        let run = Run {
            max_workers: self.max_workers,
            ready: ReadyQueues::new(pools.queues(), tenant_of),
            pools,
            specs,
            waiting: (0..n).map(|i| dag.dependencies(i).len()).collect(),
            state: vec![State::Waiting; n],
            outcomes: vec![None; n],
            results: vec![None; n],
            tokens: vec![None; n],
            running: 0,
            missed: vec![false; n],
            join: JoinSet::new(),
            in_flight: HashMap::new(),
            all: self.cancel.all.clone(),
            requests: self.cancel_requests,
            events: self.events,
            dag: Arc::new(dag),
        };
        // The sender half stays alive in `self.cancel` for the whole run, so
        // the request channel never reports closed.
        let _keep_sender = self.cancel;
        // The loop runs as a task of its own: awaited from `block_on`, it
        // would sit on a thread outside the runtime and every task would
        // cross threads twice. Dropping `run` drops the loop, whose
        // `JoinSet` aborts the tasks still running.
        let mut driver = AbortOnDrop(tokio::spawn(run.drive().instrument(span)));
        match (&mut driver.0).await {
            Ok(report) => Ok(report),
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(LocalError::Aborted),
            },
        }
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

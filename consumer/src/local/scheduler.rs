//! The in-process executor.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_schema::dag::Dag;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::error::LocalError;
use super::event::{Events, LocalEvent, LocalEventKind};
use super::ready::ReadyQueues;
use super::result::{TaskResult, CANCELLED, DEPENDENCY_FAILED};
use super::task::{Body, Inputs, LocalContext, LocalTask, TaskOptions, TaskOutput};
use super::urgency::Urgency;
use crate::task_error::{TaskError, PANIC, TIME_LIMIT};

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
///   ([`LocalContext::input`]);
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
/// [`LocalContext::cancellation_token`], is not retried, and its result is
/// kept if it returns one. A task cancelled before it started is `skipped`
/// with kind [`CANCELLED`].
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

/// One task, as the spawned attempt loop needs it.
struct Spec {
    id: Arc<str>,
    task: LocalTask,
    retries: u32,
    timeout: Option<Duration>,
    tolerance: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Some dependency has not succeeded yet.
    Waiting,
    /// In a ready queue.
    Ready,
    Running,
    Done,
}

/// The state of one run. Nodes are the indices of the [`Dag`].
struct Run {
    dag: Arc<Dag>,
    specs: Vec<Arc<Spec>>,
    max_workers: usize,
    pools: super::pools::PoolTable,
    /// Ready nodes by pool. Cancelled nodes stay queued and are dropped
    /// when they reach the front.
    ready: ReadyQueues,
    /// Nodes that started after their deadline (SPEC.md section 19.8).
    missed: Vec<bool>,
    /// Dependencies each node still waits for.
    waiting: Vec<usize>,
    state: Vec<State>,
    outcomes: Vec<Option<TaskResult>>,
    /// Results of the nodes that succeeded, shared with their dependents.
    results: Vec<Option<Arc<Value>>>,
    /// Tokens of the running nodes.
    tokens: Vec<Option<CancellationToken>>,
    running: usize,
    join: JoinSet<(usize, u32, TaskOutput)>,
    in_flight: HashMap<tokio::task::Id, usize>,
    all: CancellationToken,
    requests: mpsc::UnboundedReceiver<String>,
    events: Events,
}

impl Run {
    async fn drive(mut self) -> HashMap<String, TaskResult> {
        while let Ok(id) = self.requests.try_recv() {
            self.cancel(&id);
        }
        for node in self.dag.roots().collect::<Vec<_>>() {
            if self.state[node] == State::Waiting {
                self.make_ready(node);
            }
        }
        self.dispatch();
        while self.running > 0 {
            tokio::select! {
                biased;
                Some(id) = self.requests.recv() => self.cancel(&id),
                joined = self.join.join_next_with_id() => match joined {
                    Some(Ok((task, (node, attempts, output)))) => {
                        self.in_flight.remove(&task);
                        self.finish(node, attempts, output);
                    }
                    Some(Err(e)) => {
                        // The attempt loop catches panics, so only an abort
                        // gets here.
                        if let Some(node) = self.in_flight.remove(&e.id()) {
                            let error = TaskError::new(PANIC, format!("the task was lost: {e}"));
                            self.finish(node, 1, Err(error));
                        }
                    }
                    None => break,
                },
            }
            self.dispatch();
        }
        self.report()
    }

    fn make_ready(&mut self, node: usize) {
        self.state[node] = State::Ready;
        let queue = self.pools.queue_of(node);
        let urgency = Urgency::new(self.specs[node].tolerance, Instant::now());
        self.ready.push(queue, node, urgency);
    }

    /// Starts ready nodes while workers (and their pools) are free: urgent
    /// first, then the earliest deadline, then the oldest ready, tenants
    /// taking turns (see [`super::ready`]).
    fn dispatch(&mut self) {
        while self.running < self.max_workers && !self.all.is_cancelled() {
            let (pools, state) = (&self.pools, &self.state);
            let fits = |n: usize| pools.fits(n);
            let Some((node, urgency)) = self.ready.pop_next(fits, |n| state[n] == State::Ready)
            else {
                break;
            };
            self.missed[node] = urgency.missed(Instant::now());
            self.start(node);
        }
    }

    fn start(&mut self, node: usize) {
        self.state[node] = State::Running;
        self.running += 1;
        self.pools.take(node);
        let token = self.all.child_token();
        self.tokens[node] = Some(token.clone());
        let values = self
            .dag
            .dependencies(node)
            .iter()
            // Every dependency succeeded, so every one has a result.
            .map(|&d| self.results[d].clone().unwrap_or_default())
            .collect();
        let inputs = Arc::new(Inputs {
            dag: self.dag.clone(),
            node,
            values,
        });
        let spec = self.specs[node].clone();
        let span = tracing::debug_span!("local_task", task_id = %spec.id);
        let events = self.events.clone();
        let handle = self.join.spawn(
            async move {
                let (attempts, output) = attempt_loop(&spec, inputs, token, &events).await;
                (node, attempts, output)
            }
            .instrument(span),
        );
        self.in_flight.insert(handle.id(), node);
    }

    fn finish(&mut self, node: usize, attempts: u32, output: TaskOutput) {
        self.running -= 1;
        self.pools.give(node);
        self.tokens[node] = None;
        self.state[node] = State::Done;
        match output {
            Ok(value) => {
                self.events
                    .emit(&self.specs[node].id, || LocalEventKind::Succeeded {
                        attempts,
                    });
                self.outcomes[node] = Some(TaskResult::success(Value::Null, attempts));
                self.results[node] = Some(Arc::new(value));
                let dag = self.dag.clone();
                for &child in dag.dependents(node) {
                    if self.state[child] == State::Waiting {
                        self.waiting[child] -= 1;
                        if self.waiting[child] == 0 {
                            self.make_ready(child);
                        }
                    }
                }
            }
            Err(error) => {
                tracing::debug!(task_id = %self.specs[node].id, attempts, %error, "task failed");
                self.events
                    .emit(&self.specs[node].id, || LocalEventKind::Failed {
                        attempts,
                        error: error.clone(),
                    });
                self.outcomes[node] = Some(TaskResult::failed(error, attempts));
                let failed = self.specs[node].id.clone();
                // Only nodes still waiting can be downstream of a node that
                // has not succeeded; the others were already skipped.
                let mut stack = vec![node];
                while let Some(n) = stack.pop() {
                    for &child in self.dag.dependents(n) {
                        if self.state[child] == State::Waiting {
                            self.state[child] = State::Done;
                            let error = TaskError::new(
                                DEPENDENCY_FAILED,
                                format!("dependency `{failed}` failed"),
                            );
                            self.events
                                .emit(&self.specs[child].id, || LocalEventKind::Skipped {
                                    error: error.clone(),
                                });
                            self.outcomes[child] = Some(TaskResult::skipped(error));
                            stack.push(child);
                        }
                    }
                }
            }
        }
    }

    /// Cancels node `id` and everything downstream of it.
    fn cancel(&mut self, id: &str) {
        let Some(node) = self.dag.index_of(id) else {
            tracing::warn!(task_id = id, "cannot cancel an unknown task");
            return;
        };
        tracing::debug!(task_id = id, "cancelling the task and its dependents");
        for n in self.dag.downstream(node) {
            match self.state[n] {
                State::Waiting | State::Ready => {
                    self.state[n] = State::Done;
                    let why = if n == node {
                        "cancelled before it started".to_owned()
                    } else {
                        format!("dependency `{id}` was cancelled")
                    };
                    let error = TaskError::new(CANCELLED, why);
                    self.events
                        .emit(&self.specs[n].id, || LocalEventKind::Skipped {
                            error: error.clone(),
                        });
                    self.outcomes[n] = Some(TaskResult::skipped(error));
                }
                State::Running => {
                    if let Some(token) = &self.tokens[n] {
                        token.cancel();
                    }
                }
                State::Done => {}
            }
        }
    }

    fn report(mut self) -> HashMap<String, TaskResult> {
        let mut report = HashMap::with_capacity(self.dag.len());
        for node in 0..self.dag.len() {
            let outcome = match self.outcomes[node].take() {
                Some(mut outcome) => {
                    outcome.deadline_missed = self.missed[node];
                    if let Some(value) = self.results[node].take() {
                        outcome.result =
                            Some(Arc::try_unwrap(value).unwrap_or_else(|shared| (*shared).clone()));
                    }
                    outcome
                }
                // Only a cancelled run leaves nodes without an outcome.
                None => {
                    let error =
                        TaskError::new(CANCELLED, "the run was cancelled before it started");
                    self.events
                        .emit(&self.specs[node].id, || LocalEventKind::Skipped {
                            error: error.clone(),
                        });
                    TaskResult::skipped(error)
                }
            };
            report.insert(self.specs[node].id.to_string(), outcome);
        }
        report
    }
}

/// Runs the attempts of one task until one succeeds, the failure is not
/// retryable, the retries are used up or the task is cancelled.
async fn attempt_loop(
    spec: &Spec,
    inputs: Arc<Inputs>,
    token: CancellationToken,
    events: &Events,
) -> (u32, TaskOutput) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        events.emit(&spec.id, || LocalEventKind::Started { attempt });
        // An attempt with a timeout gets a token of its own, cancelled when
        // it overruns, so that the next attempt starts with a fresh one.
        let attempt_token = match spec.timeout {
            Some(_) => token.child_token(),
            None => token.clone(),
        };
        let ctx = LocalContext {
            attempt,
            inputs: inputs.clone(),
            token: attempt_token.clone(),
        };
        tracing::trace!(attempt, "attempt started");
        let output = match spec.timeout {
            None => run_body(&spec.task, ctx).await,
            Some(limit) => match tokio::time::timeout(limit, run_body(&spec.task, ctx)).await {
                Ok(output) => output,
                Err(_) => {
                    attempt_token.cancel();
                    Err(TaskError::new(
                        TIME_LIMIT,
                        format!("attempt {attempt} ran longer than {limit:?}"),
                    ))
                }
            },
        };
        match output {
            Ok(value) => return (attempt, Ok(value)),
            Err(error) => {
                let retries_left = attempt <= spec.retries;
                if !retries_left || !error.is_retryable() || token.is_cancelled() {
                    return (attempt, Err(error));
                }
                tracing::debug!(attempt, %error, "attempt failed, retrying");
                events.emit(&spec.id, || LocalEventKind::Retrying { attempt, error });
            }
        }
    }
}

async fn run_body(task: &LocalTask, ctx: LocalContext) -> TaskOutput {
    match &task.body {
        Body::Async(body) => AssertUnwindSafe(async { body(ctx).await })
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref()))),
        Body::Blocking(body) => {
            let body = body.clone();
            match tokio::task::spawn_blocking(move || body(ctx)).await {
                Ok(output) => output,
                Err(e) if e.is_panic() => Err(panicked(e.into_panic().as_ref())),
                Err(e) => Err(TaskError::new(CANCELLED, e.to_string())),
            }
        }
    }
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> TaskError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the task panicked".to_owned());
    TaskError::new(PANIC, message)
}

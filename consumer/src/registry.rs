//! The handler registry: task names mapped to typed async handlers.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use celeriac_schema::signing::Keyring;
use celeriac_schema::{Envelope, Task, TaskId};

use crate::task_error::TaskError;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler learns about the task it runs.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct TaskContext {
    envelope: Arc<Envelope>,
    queue: Arc<str>,
    worker: Arc<str>,
    spawner: Option<Arc<Spawner>>,
    cancel: Option<Arc<Cancellation>>,
}

/// A run's cancellation: set when the task is revoked with `terminate`.
#[derive(Debug, Default)]
pub(crate) struct Cancellation {
    token: tokio_util::sync::CancellationToken,
    /// 0 none, 1 TERM, 2 KILL.
    signal: std::sync::atomic::AtomicU8,
}

impl Cancellation {
    /// Cancels the run with `signal`.
    pub(crate) fn cancel(&self, signal: celeriac_schema::control::KillSignal) {
        let code = match signal {
            celeriac_schema::control::KillSignal::Term => 1,
            celeriac_schema::control::KillSignal::Kill => 2,
        };
        self.signal
            .fetch_max(code, std::sync::atomic::Ordering::Relaxed);
        self.token.cancel();
    }

    /// The signal asked for, once cancelled.
    pub(crate) fn signal(&self) -> Option<celeriac_schema::control::KillSignal> {
        match self.signal.load(std::sync::atomic::Ordering::Relaxed) {
            1 => Some(celeriac_schema::control::KillSignal::Term),
            2 => Some(celeriac_schema::control::KillSignal::Kill),
            _ => None,
        }
    }

    /// The token, cancelled with the run.
    pub(crate) fn token(&self) -> &tokio_util::sync::CancellationToken {
        &self.token
    }
}

/// Sends subtasks for the handlers of one worker: a producer on the
/// worker's broker, namespace and store, connected on first use.
pub(crate) struct Spawner {
    url: String,
    tls: celeriac_producer::tls::TlsOptions,
    namespace: String,
    store: Option<Arc<dyn celeriac_schema::store::Store>>,
    signing: Option<Arc<Keyring>>,
    producer: tokio::sync::OnceCell<celeriac_producer::Producer>,
}

impl Spawner {
    pub(crate) fn new(
        url: String,
        tls: celeriac_producer::tls::TlsOptions,
        namespace: String,
        store: Option<Arc<dyn celeriac_schema::store::Store>>,
        signing: Option<Arc<Keyring>>,
    ) -> Self {
        Spawner {
            url,
            tls,
            namespace,
            store,
            signing,
            producer: tokio::sync::OnceCell::new(),
        }
    }

    async fn producer(&self) -> celeriac_producer::Result<&celeriac_producer::Producer> {
        self.producer
            .get_or_try_init(|| async {
                let mut builder = celeriac_producer::Producer::builder(&self.url)
                    .tls(self.tls.clone())
                    .namespace(&self.namespace);
                if let Some(store) = &self.store {
                    builder = builder.store(store.clone());
                }
                if let Some(keyring) = &self.signing {
                    builder = builder.signing(Keyring::clone(keyring));
                }
                builder.connect().await
            })
            .await
    }
}

impl TaskContext {
    pub(crate) fn new(
        envelope: Arc<Envelope>,
        queue: Arc<str>,
        worker: Arc<str>,
        spawner: Option<Arc<Spawner>>,
    ) -> Self {
        TaskContext {
            envelope,
            queue,
            worker,
            spawner,
            cancel: None,
        }
    }

    /// The context of a run that `cancel` can stop.
    pub(crate) fn with_cancellation(mut self, cancel: Arc<Cancellation>) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Whether the task was revoked with `terminate` while it runs: stop
    /// soon. A handler that does not stop is aborted after a short grace
    /// (at once for `--signal KILL`).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.token.is_cancelled())
    }

    /// Completes when the task is revoked with `terminate` (never, for a
    /// run that cannot be cancelled).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use celeriac_consumer::{TaskContext, TaskError};
    ///
    /// async fn long(ctx: TaskContext) -> Result<(), TaskError> {
    ///     tokio::select! {
    ///         _ = ctx.cancelled() => Err(TaskError::fatal("Cancelled", "revoked")),
    ///         _ = tokio::time::sleep(Duration::from_secs(600)) => Ok(()),
    ///     }
    /// }
    /// ```
    pub async fn cancelled(&self) {
        match &self.cancel {
            Some(cancel) => cancel.token.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// The signal the revocation asked for, once cancelled.
    pub fn cancel_signal(&self) -> Option<celeriac_schema::control::KillSignal> {
        self.cancel.as_ref().and_then(|c| c.signal())
    }

    /// The soft time limit of this run (the task's own, or the worker's
    /// override set with `celeriac control time-limit`): a handler past it
    /// should wrap up; the hard limit aborts it.
    pub fn soft_time_limit(&self) -> Option<std::time::Duration> {
        self.envelope
            .soft_time_limit_ms
            .map(std::time::Duration::from_millis)
    }

    /// Sends a subtask of this task, on this task's queue, and returns its
    /// handle: `handle.wait(timeout)` waits for its output (with a state
    /// store). Subtasks may spawn their own.
    ///
    /// A handler that waits holds its concurrency slot meanwhile: keep the
    /// worker's concurrency above the depth of the task tree, or send the
    /// subtasks to a queue other workers consume
    /// ([`TaskContext::spawn_with`]).
    ///
    /// # Errors
    ///
    /// A retryable [`TaskError`] when the subtask cannot be sent.
    pub async fn spawn<T: Task>(
        &self,
        input: &T::Input,
    ) -> Result<celeriac_producer::TaskHandle<T>, TaskError> {
        self.spawn_with::<T>(
            input,
            celeriac_producer::SendOptions::new().queue(self.queue()),
        )
        .await
    }

    /// [`TaskContext::spawn`] with options (queue, retries, ...).
    ///
    /// # Errors
    ///
    /// As [`TaskContext::spawn`].
    pub async fn spawn_with<T: Task>(
        &self,
        input: &T::Input,
        options: celeriac_producer::SendOptions,
    ) -> Result<celeriac_producer::TaskHandle<T>, TaskError> {
        let spawner = self
            .spawner
            .as_ref()
            .ok_or_else(|| TaskError::fatal("Subtask", "this context cannot send subtasks"))?;
        let producer = spawner
            .producer()
            .await
            .map_err(|e| TaskError::new("Subtask", e.to_string()))?;
        let mut task = producer
            .prepare::<T>(input, &options)
            .map_err(|e| TaskError::fatal("Subtask", e.to_string()))?;
        task.envelope.parent_id = Some(self.envelope.id);
        task.envelope.root_id = Some(self.envelope.root_id.unwrap_or(self.envelope.id));
        let id = producer
            .send_prepared(&task)
            .await
            .map_err(|e| TaskError::new("Subtask", e.to_string()))?;
        Ok(producer.handle::<T>(id))
    }

    /// The task id.
    pub fn task_id(&self) -> TaskId {
        self.envelope.id
    }

    /// The task name.
    pub fn task_name(&self) -> &str {
        &self.envelope.task
    }

    /// 0 for the first run, incremented on every retry.
    pub fn attempt(&self) -> u32 {
        self.envelope.attempt
    }

    /// The idempotency key: make your own side effects idempotent with it.
    pub fn idempotency_key(&self) -> String {
        self.envelope.effective_idempotency_key()
    }

    /// The logical queue the task came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The id of the worker running the task.
    pub fn worker_id(&self) -> &str {
        &self.worker
    }

    /// User metadata sent with the task.
    pub fn meta(&self) -> &std::collections::BTreeMap<String, String> {
        &self.envelope.meta
    }

    /// The whole envelope (input excluded).
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.envelope.id)
            .field("task", &self.envelope.task)
            .field("attempt", &self.envelope.attempt)
            .finish_non_exhaustive()
    }
}

/// A handler with its types erased: MessagePack value in, value out.
pub trait ErasedHandler: Send + Sync + 'static {
    /// Runs the task.
    fn call(
        &self,
        input: rmpv::Value,
        ctx: TaskContext,
    ) -> BoxFuture<Result<rmpv::Value, TaskError>>;
}

struct TypedHandler<T, F> {
    f: F,
    _task: std::marker::PhantomData<fn() -> T>,
}

impl<T, F, Fut> ErasedHandler for TypedHandler<T, F>
where
    T: Task,
    F: Fn(T::Input, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T::Output, TaskError>> + Send + 'static,
{
    fn call(
        &self,
        input: rmpv::Value,
        ctx: TaskContext,
    ) -> BoxFuture<Result<rmpv::Value, TaskError>> {
        let typed: Result<T::Input, _> = celeriac_schema::from_value(&input, "input");
        match typed {
            Ok(typed) => {
                let fut = (self.f)(typed, ctx);
                Box::pin(async move {
                    let output = fut.await?;
                    celeriac_schema::to_value(&output)
                        .map_err(|e| TaskError::fatal("OutputEncodeError", e.to_string()))
                })
            }
            Err(e) => Box::pin(async move { Err(TaskError::bad_input(e.to_string())) }),
        }
    }
}

/// Task names mapped to handlers.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::{Registry, TaskContext, TaskError};
/// use celeriac_schema::Task;
///
/// struct Add;
/// impl Task for Add {
///     const NAME: &'static str = "math.add";
///     type Input = (i64, i64);
///     type Output = i64;
/// }
///
/// let mut registry = Registry::new();
/// registry.register::<Add, _, _>(|(a, b), _ctx: TaskContext| async move {
///     Ok::<_, TaskError>(a + b)
/// });
/// assert!(registry.contains("math.add"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    /// Tasks whose output is not stored ([`Task::STORE_RESULT`] false).
    no_result: std::collections::HashSet<String>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the handler of task `T`, replacing any earlier one.
    pub fn register<T, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        T: Task,
        F: Fn(T::Input, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T::Output, TaskError>> + Send + 'static,
    {
        if T::STORE_RESULT {
            self.no_result.remove(T::NAME);
        } else {
            self.no_result.insert(T::NAME.to_owned());
        }
        self.handlers.insert(
            T::NAME.to_owned(),
            Arc::new(TypedHandler::<T, F> {
                f: handler,
                _task: std::marker::PhantomData,
            }),
        );
        self
    }

    /// Registers an untyped handler under `name`.
    pub fn register_erased(
        &mut self,
        name: impl Into<String>,
        handler: Arc<dyn ErasedHandler>,
    ) -> &mut Self {
        self.handlers.insert(name.into(), handler);
        self
    }

    /// The handler of `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn ErasedHandler>> {
        self.handlers.get(name)
    }

    /// Whether workers store the output of `name` (true unless its task
    /// type opted out).
    pub fn stores_result(&self, name: &str) -> bool {
        !self.no_result.contains(name)
    }

    /// Whether `name` has a handler.
    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    /// Registered task names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("tasks", &self.names())
            .finish()
    }
}

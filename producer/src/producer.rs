//! The producer: a pooled, confirming publisher of typed tasks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_schema::topology::{validate_name, DEFAULT_NAMESPACE, DEFAULT_QUEUE};
use celeriac_schema::{encode, now_ms, DecodeLimits, Envelope, Task, TaskId, Topology};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, ConnectionProperties};
use tracing::debug;

use crate::error::{redact_url, Error, Result};
use crate::publish::{self, Route};
use crate::send_options::{duration_ms, to_unix_ms, SendOptions};
use crate::topology::declare;

/// Confirms outstanding at once in a batch send; bounds memory while keeping
/// the pipeline full.
const BATCH_WINDOW: usize = 2048;

/// Builds a [`Producer`].
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> celeriac_producer::Result<()> {
/// use std::time::Duration;
/// use celeriac_producer::Producer;
///
/// let producer = Producer::builder("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .namespace("shop")
///     .default_queue("emails")
///     .connect_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ProducerBuilder {
    url: String,
    namespace: String,
    default_queue: String,
    delivery_limit: Option<u32>,
    pool_size: usize,
    connect_timeout: Duration,
    confirm_timeout: Duration,
    max_body_bytes: usize,
}

impl ProducerBuilder {
    /// Namespace prefix of every exchange and queue (default `celeriac`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Queue used when [`SendOptions::queue`] is not set (default `default`).
    pub fn default_queue(mut self, queue: impl Into<String>) -> Self {
        self.default_queue = queue.into();
        self
    }

    /// `x-delivery-limit` of the work queues this producer declares; must
    /// match the workers' (default 5).
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = Some(limit);
        self
    }

    /// Connections in the pool (default 2).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long to try to reach the broker before failing (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long to wait for a publisher confirm (default 30 s).
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Largest task body accepted; keep it equal to the workers' decode limit
    /// (default 1 MiB).
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Connects, declares the namespace's topology and the default queue.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] when the broker cannot be reached within the
    /// connect timeout; [`Error::Schema`] for an invalid namespace or queue
    /// name; [`Error::Amqp`] when a declaration is refused.
    pub async fn connect(self) -> Result<Producer> {
        let mut topology = Topology::new(self.namespace.clone())?;
        if let Some(limit) = self.delivery_limit {
            topology = topology.with_delivery_limit(limit);
        }
        validate_name("queue", &self.default_queue)?;
        let config = deadpool_lapin::Config {
            url: Some(self.url.clone()),
            pool: Some(deadpool_lapin::PoolConfig::new(self.pool_size)),
        };
        let pool = config
            .create_pool(
                || ConnectionProperties::default().with_connection_name("celeriac-producer".into()),
                deadpool_lapin::Runtime::Tokio1,
            )
            .map_err(|e| Error::Unreachable {
                url: redact_url(&self.url),
                after: Duration::ZERO,
                reason: e.to_string(),
            })?;
        let producer = Producer {
            inner: Arc::new(Inner {
                pool,
                topology,
                url: redact_url(&self.url),
                default_queue: self.default_queue.clone(),
                connect_timeout: self.connect_timeout,
                confirm_timeout: self.confirm_timeout,
                max_body_bytes: self.max_body_bytes,
                idle: Mutex::new(Vec::new()),
                declared: Mutex::new(HashSet::new()),
            }),
        };
        let channel = producer.channel().await?;
        declare(&channel, &producer.inner.topology.shared_declarations()).await?;
        producer.release(channel);
        producer.ensure_queue(&self.default_queue).await?;
        Ok(producer)
    }
}

/// Publishes tasks with publisher confirms; cheap to clone.
///
/// Every send returns only once the broker has confirmed the task, so a
/// returned [`TaskId`] is a task the broker holds. Tasks are published with
/// the mandatory flag: a task no queue would take is an error, never a
/// silent drop.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> celeriac_producer::Result<()> {
/// use celeriac_producer::{Producer, SendOptions};
/// use celeriac_schema::Task;
///
/// struct SendEmail;
/// impl Task for SendEmail {
///     const NAME: &'static str = "emails.send";
///     type Input = String;
///     type Output = ();
/// }
///
/// let producer = Producer::connect("amqp://127.0.0.1:5672/%2f").await?;
/// let id = producer
///     .send::<SendEmail>(&"ada@example.com".to_owned(), &SendOptions::new())
///     .await?;
/// println!("queued {id}");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    pool: deadpool_lapin::Pool,
    topology: Topology,
    url: String,
    default_queue: String,
    connect_timeout: Duration,
    confirm_timeout: Duration,
    max_body_bytes: usize,
    /// Confirm-mode channels not in use.
    idle: Mutex<Vec<Channel>>,
    /// Queues this producer has declared.
    declared: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("url", &self.url)
            .field("namespace", &self.topology.namespace())
            .finish_non_exhaustive()
    }
}

/// A task ready to publish: its logical queue and envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedTask {
    /// Logical work queue.
    pub queue: String,
    /// The envelope.
    pub envelope: Envelope,
}

impl Producer {
    /// Starts a builder for the broker at `url` (`amqp://user:pass@host:port/vhost`).
    pub fn builder(url: impl Into<String>) -> ProducerBuilder {
        ProducerBuilder {
            url: url.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            default_queue: DEFAULT_QUEUE.to_owned(),
            delivery_limit: None,
            pool_size: 2,
            connect_timeout: Duration::from_secs(10),
            confirm_timeout: publish::DEFAULT_CONFIRM_TIMEOUT,
            max_body_bytes: DecodeLimits::DEFAULT_MAX_BYTES,
        }
    }

    /// Connects with every default.
    ///
    /// # Errors
    ///
    /// See [`ProducerBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<Producer> {
        Self::builder(url).connect().await
    }

    /// The topology this producer publishes into.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// Builds the envelope of a task without sending it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for contradictory options (both ETA and
    /// countdown, a priority above 9); [`Error::Schema`] when the input
    /// cannot be encoded or a name is invalid.
    pub fn prepare<T: Task>(
        &self,
        input: &T::Input,
        options: &SendOptions,
    ) -> Result<PreparedTask> {
        let value = celeriac_schema::to_value(input)?;
        self.prepare_value(T::NAME, value, options)
    }

    /// Like [`Producer::prepare`] for an untyped task name and input value.
    ///
    /// # Errors
    ///
    /// See [`Producer::prepare`].
    pub fn prepare_value(
        &self,
        task: &str,
        input: rmpv::Value,
        options: &SendOptions,
    ) -> Result<PreparedTask> {
        validate_name("task", task)?;
        if options.eta.is_some() && options.countdown.is_some() {
            return Err(Error::InvalidOptions(
                "set either eta or countdown, not both".into(),
            ));
        }
        if options.priority > 9 {
            return Err(Error::InvalidOptions(format!(
                "priority {} is above 9",
                options.priority
            )));
        }
        let queue = options
            .queue
            .clone()
            .unwrap_or_else(|| self.inner.default_queue.clone());
        validate_name("queue", &queue)?;
        let mut envelope = Envelope::new(task, input);
        let now = envelope.created_at;
        if let Some(id) = options.task_id {
            envelope.id = id;
        }
        envelope.eta = match (options.eta, options.countdown) {
            (Some(at), _) => Some(to_unix_ms(at)),
            (_, Some(delay)) => Some(now.saturating_add(duration_ms(delay))),
            _ => None,
        };
        envelope.expires = options
            .expires_in
            .map(|ttl| now.saturating_add(duration_ms(ttl)));
        if let Some(policy) = options.retry {
            envelope.retry = policy;
        }
        envelope.idempotency_key = options.idempotency_key.clone();
        envelope.soft_time_limit_ms = options.soft_time_limit.map(duration_ms);
        envelope.hard_time_limit_ms = options.hard_time_limit.map(duration_ms);
        envelope.priority = options.priority;
        envelope.meta = options.meta.clone();
        Ok(PreparedTask { queue, envelope })
    }

    /// Sends one typed task and returns its id once the broker confirmed it.
    ///
    /// # Errors
    ///
    /// [`Error::Unroutable`] when no queue takes it, [`Error::Unreachable`]
    /// or [`Error::Amqp`] when the broker is gone, plus the errors of
    /// [`Producer::prepare`].
    pub async fn send<T: Task>(&self, input: &T::Input, options: &SendOptions) -> Result<TaskId> {
        let task = self.prepare::<T>(input, options)?;
        self.send_prepared(&task).await
    }

    /// Sends one prepared task.
    ///
    /// # Errors
    ///
    /// See [`Producer::send`].
    pub async fn send_prepared(&self, task: &PreparedTask) -> Result<TaskId> {
        let ids = self.send_all(std::slice::from_ref(task)).await?;
        Ok(ids[0])
    }

    /// Sends many typed tasks with the same options, pipelining the
    /// confirms; returns their ids in order.
    ///
    /// # Errors
    ///
    /// See [`Producer::send_all`].
    pub async fn send_batch<T: Task>(
        &self,
        inputs: impl IntoIterator<Item = T::Input>,
        options: &SendOptions,
    ) -> Result<Vec<TaskId>> {
        if options.idempotency_key.is_some() || options.task_id.is_some() {
            return Err(Error::InvalidOptions(
                "a batch cannot share one idempotency key or task id".into(),
            ));
        }
        let tasks = inputs
            .into_iter()
            .map(|input| self.prepare::<T>(&input, options))
            .collect::<Result<Vec<_>>>()?;
        self.send_all(&tasks).await
    }

    /// Sends prepared tasks on one channel, keeping up to 2048 confirms in
    /// flight; returns once every task is confirmed.
    ///
    /// When an error is returned, tasks before the failing one may have
    /// been delivered: sending the batch again is safe only with
    /// idempotency keys.
    ///
    /// # Errors
    ///
    /// The first error met; see [`Producer::send`].
    pub async fn send_all(&self, tasks: &[PreparedTask]) -> Result<Vec<TaskId>> {
        for queue in tasks
            .iter()
            .map(|t| t.queue.as_str())
            .collect::<HashSet<_>>()
        {
            self.ensure_queue(queue).await?;
        }
        let channel = self.channel().await?;
        let result = self.publish_on(&channel, tasks).await;
        if result.is_ok() {
            self.release(channel);
        }
        result
    }

    async fn publish_on(&self, channel: &Channel, tasks: &[PreparedTask]) -> Result<Vec<TaskId>> {
        let mut ids = Vec::with_capacity(tasks.len());
        let mut pending = std::collections::VecDeque::with_capacity(BATCH_WINDOW.min(tasks.len()));
        let now = now_ms();
        for task in tasks {
            let env = &task.envelope;
            let body = encode(env)?;
            if body.len() > self.inner.max_body_bytes {
                return Err(Error::TooLarge {
                    task_id: env.id,
                    size: body.len(),
                    limit: self.inner.max_body_bytes,
                });
            }
            let route = publish::route(&self.inner.topology, &task.queue, env, now)?;
            let props =
                publish::envelope_properties(env, publish::envelope_headers(env, &task.queue));
            let confirm = publish::publish(channel, &route, &body, props).await?;
            debug!(task_id = %env.id, task = %env.task, exchange = %route.exchange, "published");
            pending.push_back((confirm, env.id, route));
            ids.push(env.id);
            if pending.len() >= BATCH_WINDOW {
                self.await_one(&mut pending).await?;
            }
        }
        while !pending.is_empty() {
            self.await_one(&mut pending).await?;
        }
        Ok(ids)
    }

    async fn await_one(
        &self,
        pending: &mut std::collections::VecDeque<(lapin::PublisherConfirm, TaskId, Route)>,
    ) -> Result<()> {
        if let Some((confirm, id, route)) = pending.pop_front() {
            publish::check_confirm(confirm, &id.to_string(), &route, self.inner.confirm_timeout)
                .await?;
        }
        Ok(())
    }

    /// Declares a logical queue (and its dead-letter queue) once per
    /// producer.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] for an invalid name, [`Error::Amqp`] when refused.
    pub async fn ensure_queue(&self, queue: &str) -> Result<()> {
        if self.lock_declared().contains(queue) {
            return Ok(());
        }
        let declarations = self.inner.topology.queue_declarations(queue)?;
        let channel = self.channel().await?;
        declare(&channel, &declarations).await?;
        self.release(channel);
        self.lock_declared().insert(queue.to_owned());
        Ok(())
    }

    fn lock_declared(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .declared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Channel>> {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A confirm-mode channel: an idle one, or a new one on a pooled
    /// connection.
    async fn channel(&self) -> Result<Channel> {
        loop {
            let Some(channel) = self.lock_idle().pop() else {
                break;
            };
            if channel.status().connected() {
                return Ok(channel);
            }
        }
        let inner = &self.inner;
        let connection = tokio::time::timeout(inner.connect_timeout, inner.pool.get())
            .await
            .map_err(|_| Error::Unreachable {
                url: inner.url.clone(),
                after: inner.connect_timeout,
                reason: "timed out".into(),
            })?
            .map_err(|e| Error::Unreachable {
                url: inner.url.clone(),
                after: inner.connect_timeout,
                reason: e.to_string(),
            })?;
        let channel = connection
            .create_channel()
            .await
            .map_err(Error::amqp("opening a channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(Error::amqp("enabling publisher confirms"))?;
        Ok(channel)
    }

    fn release(&self, channel: Channel) {
        if channel.status().connected() {
            self.lock_idle().push(channel);
        }
    }
}

/// Where a task with this envelope would be published now (for tools and
/// tests).
pub fn route_now(topology: &Topology, task: &PreparedTask) -> Result<Route> {
    publish::route(topology, &task.queue, &task.envelope, now_ms())
}

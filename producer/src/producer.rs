//! The producer: a pooled, confirming publisher of typed tasks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_schema::signing::Keyring;
use celeriac_schema::store::{Claim, NodeProgress, Store, Update};
use celeriac_schema::topology::{validate_name, DEFAULT_NAMESPACE, DEFAULT_QUEUE};
use celeriac_schema::workflow::{InputFrom, Node, Workflow};
use celeriac_schema::{encode, now_ms, DecodeLimits, Envelope, Task, TaskId, TaskState, Topology};
use lapin::options::ConfirmSelectOptions;
use lapin::Channel;
use tracing::{debug, warn};

use crate::canvas::Canvas;
use crate::error::{redact_url, Error, Result};
use crate::handle::{TaskHandle, WorkflowHandle};
use crate::publish::{self, Route};
use crate::send_options::{duration_ms, to_unix_ms, SendOptions};
use crate::tls::TlsOptions;
use crate::topology::declare;
mod fair;

mod tolerance;

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
#[derive(Clone)]
pub struct ProducerBuilder {
    url: String,
    namespace: String,
    default_queue: String,
    delivery_limit: Option<u32>,
    pool_size: usize,
    connect_timeout: Duration,
    confirm_timeout: Duration,
    max_body_bytes: usize,
    store: Option<Arc<dyn Store>>,
    signing: Option<Arc<Keyring>>,
    tls: TlsOptions,
    metrics: Option<Arc<crate::metrics::ProducerMetrics>>,
    events: bool,
    fair: Vec<(String, u64)>,
    pub(crate) admission: Vec<crate::admission::AdmissionLimit>,
    failover: Option<Duration>,
    leader_locator: Option<celeriac_schema::topology::LeaderLocator>,
}

impl std::fmt::Debug for ProducerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("url", &redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("store", &self.store)
            .field("signing", &self.signing)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ProducerBuilder {
    /// Every node of the broker cluster: connections start at a random one
    /// and fail over to the others (see [`crate::addresses`]); replaces the
    /// URL given to [`Producer::builder`].
    pub fn addresses<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, urls: I) -> Self {
        self.url = crate::addresses::join(urls);
        self
    }

    /// How long a send keeps publishing its unconfirmed tasks again on a
    /// new connection after the broker connection failed (default: 30 s
    /// with several addresses, none with one). A task whose confirm was
    /// lost with the connection is published twice: use idempotency keys.
    pub fn failover(mut self, budget: Duration) -> Self {
        self.failover = Some(budget);
        self
    }

    /// Declares queues with this `x-queue-leader-locator` (see
    /// [`Topology::with_leader_locator`]).
    pub fn leader_locator(mut self, locator: celeriac_schema::topology::LeaderLocator) -> Self {
        self.leader_locator = Some(locator);
        self
    }

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

    /// Counts what this producer sends in `metrics` (see
    /// [`crate::metrics`]; default: no metrics).
    pub fn metrics(mut self, metrics: Arc<crate::metrics::ProducerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How long to wait for a publisher confirm (default 30 s).
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// The state store that records sent tasks, answers result handles
    /// and remembers enqueue idempotency keys (default: none; results and
    /// enqueue keys then are unavailable).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Signs every task this producer publishes (sends, batches, workflow
    /// and canvas submissions, beat ticks) with the keyring's signing key,
    /// so that workers that require signatures run them (default: tasks
    /// go unsigned). See [`crate::signing`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> celeriac_producer::Result<()> {
    /// use celeriac_producer::{signing, Producer};
    ///
    /// let keys = signing::load_keyring("/etc/celeriac/signing-keys".as_ref())?;
    /// let producer = Producer::builder("amqp://127.0.0.1:5672/%2f")
    ///     .signing(keys)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn signing(mut self, keyring: Keyring) -> Self {
        self.signing = Some(Arc::new(keyring));
        self
    }

    /// TLS settings for an `amqps://` URL: the CA bundle to trust (default:
    /// the system's roots) and a client certificate for mutual TLS. An
    /// `amqps://` URL always connects over TLS, never in plaintext.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Publishes a `task.sent` event on the events exchange for every task
    /// sent, once the broker confirmed it (default: off). The events go
    /// out without confirms of their own, at most once (SPEC.md section
    /// 17, "Events").
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> celeriac_producer::Result<()> {
    /// use celeriac_producer::Producer;
    ///
    /// let producer = Producer::builder("amqp://127.0.0.1:5672/%2f")
    ///     .events(true)
    ///     .connect()
    ///     .await?;
    /// # let _ = producer;
    /// # Ok(()) }
    /// ```
    pub fn events(mut self, on: bool) -> Self {
        self.events = on;
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
    /// connect timeout; [`Error::Tls`] when the TLS handshake fails and
    /// [`Error::TlsConfig`] when a TLS file cannot be used;
    /// [`Error::InvalidUrl`] for a URL that does not parse;
    /// [`Error::Schema`] for an invalid namespace or queue name;
    /// [`Error::Amqp`] when a declaration is refused.
    pub async fn connect(self) -> Result<Producer> {
        let mut topology = Topology::new(self.namespace.clone())?;
        if let Some(limit) = self.delivery_limit {
            topology = topology.with_delivery_limit(limit);
        }
        if let Some(locator) = self.leader_locator {
            topology = topology.with_leader_locator(locator);
        }
        validate_name("queue", &self.default_queue)?;
        let topology = self.fair_topology(topology).await?;
        let pool = crate::pool::new(self.url.clone(), self.tls.clone(), self.pool_size).map_err(
            |reason| Error::Unreachable {
                url: redact_url(&self.url),
                after: Duration::ZERO,
                reason,
            },
        )?;
        let events = self.events.then(|| topology.events_exchange());
        let failover = self
            .failover
            .unwrap_or_else(|| crate::failover::default_budget(&self.url));
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
                store: self.store.clone(),
                signing: self.signing.clone(),
                metrics: self.metrics.clone(),
                events,
                admission: crate::admission::Admission::new(self.admission, self.store.clone()),
                failover,
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
/// let handle = producer
///     .send::<SendEmail>(&"ada@example.com".to_owned(), &SendOptions::new())
///     .await?;
/// println!("queued {}", handle.id());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    pool: crate::pool::Pool,
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
    /// The state store, for results and enqueue idempotency.
    store: Option<Arc<dyn Store>>,
    /// Signs every published task when set.
    signing: Option<Arc<Keyring>>,
    /// Counts sends when set.
    metrics: Option<Arc<crate::metrics::ProducerMetrics>>,
    /// The events exchange, when `task.sent` events are on.
    events: Option<String>,
    admission: Option<crate::admission::Admission>,
    /// How long a failed publish is retried on new connections.
    failover: Duration,
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
            store: None,
            signing: None,
            tls: TlsOptions::default(),
            metrics: None,
            events: false,
            fair: Vec::new(),
            admission: Vec::new(),
            failover: None,
            leader_locator: None,
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
        options.fill(&mut envelope)?;
        Ok(PreparedTask { queue, envelope })
    }

    /// Sends one typed task and returns its id once the broker confirmed it.
    ///
    /// # Errors
    ///
    /// [`Error::Unroutable`] when no queue takes it, [`Error::Unreachable`]
    /// or [`Error::Amqp`] when the broker is gone, plus the errors of
    /// [`Producer::prepare`].
    pub async fn send<T: Task>(
        &self,
        input: &T::Input,
        options: &SendOptions,
    ) -> Result<TaskHandle<T>> {
        let task = self.prepare::<T>(input, options)?;
        let ids = self
            .send_all_with(std::slice::from_ref(&task), options.admission)
            .await?;
        Ok(self.handle(ids[0]))
    }

    /// A handle on a task sent earlier, by id (kept from
    /// [`TaskHandle::id`] or from [`Producer::send_batch`]).
    pub fn handle<T: Task>(&self, id: TaskId) -> TaskHandle<T> {
        TaskHandle::new(id, self.inner.store.clone()).with_producer(self.clone())
    }

    /// Submits a workflow: validates it, stores it for the coordinator and
    /// publishes the nodes that wait for nothing. `outputs` names the
    /// nodes whose results are the workflow's result (empty: every node
    /// nothing depends on, in order).
    ///
    /// Submitting the same workflow id twice runs it once. The store
    /// creates a workflow once ([`Store::create_workflow`]); a second
    /// submit leaves the stored workflow (its definition, outputs and
    /// progress) as it is, publishes again only those of its roots the
    /// broker may never have received (not finished, and recorded
    /// `created` or not recorded at all: the first submit stopped between
    /// storing the workflow and publishing), and returns the handle of the
    /// stored workflow. A root published twice still runs once: its task
    /// id and idempotency key come from the workflow id, and the worker's
    /// execution key suppresses a second run. So a submit that failed, or
    /// whose caller died before it returned, can simply be repeated.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(producer: celeriac_producer::Producer) -> celeriac_producer::Result<()> {
    /// use celeriac_schema::workflow::{Node, Workflow};
    ///
    /// let mut workflow = Workflow::new();
    /// workflow.push(Node::new("build", "reports.build", rmpv::Value::Nil));
    /// let first = producer.submit(&workflow, &[]).await?;
    /// // Safe to repeat, e.g. after a timeout: the workflow still runs once.
    /// let again = producer.submit(&workflow, &[]).await?;
    /// assert_eq!(first.id(), again.id());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Workflow`] naming a duplicate id, unknown dependency or
    /// cycle (nothing is published); [`Error::NoStore`]; broker and store
    /// errors as for [`Producer::send`].
    pub async fn submit(&self, workflow: &Workflow, outputs: &[String]) -> Result<WorkflowHandle> {
        let store = self
            .inner
            .store
            .clone()
            .ok_or(Error::NoStore { what: "a workflow" })?;
        let dag = workflow.validate()?;
        let outputs: Vec<String> = if outputs.is_empty() {
            (0..dag.len())
                .filter(|&i| dag.dependents(i).is_empty())
                .map(|i| dag.id(i).to_owned())
                .collect()
        } else {
            outputs.to_vec()
        };
        let prepared: Vec<PreparedTask> = workflow
            .nodes
            .iter()
            .map(|node| self.prepare_node(workflow.id, node))
            .collect::<Result<_>>()?;
        let roots: Vec<PreparedTask> = if store.create_workflow(workflow, &outputs).await? {
            let created: Vec<Update> = prepared
                .iter()
                .map(|t| update_for(t, TaskState::Created))
                .collect();
            store.record(&created).await?;
            prepared
                .into_iter()
                .zip(&workflow.nodes)
                .filter(|(_, node)| node.dependencies.is_empty())
                .map(|(task, _)| task)
                .collect()
        } else {
            self.unpublished_roots(&store, workflow.id).await?
        };
        self.ensure_queues(&roots).await?;
        self.publish_all(&roots).await?;
        let queued: Vec<Update> = roots
            .iter()
            .map(|t| update_for(t, TaskState::Queued))
            .collect();
        if let Err(e) = store.record(&queued).await {
            warn!(error = %e, "could not record workflow roots as queued");
        }
        debug!(workflow = %workflow.id, nodes = workflow.nodes.len(), roots = roots.len(), "workflow submitted");
        Ok(WorkflowHandle::new(workflow.id, store).with_producer(self.clone()))
    }

    /// The roots of a workflow stored before that the broker may not hold:
    /// released, not finished, and recorded `created` (publish not
    /// confirmed) or not recorded (the submit stopped before recording
    /// them, which this call then does). Built from the stored
    /// definition, which wins over the one submitted again.
    async fn unpublished_roots(
        &self,
        store: &Arc<dyn Store>,
        workflow: TaskId,
    ) -> Result<Vec<PreparedTask>> {
        let Some(record) = store.get_workflow(workflow).await? else {
            // Expired between the two calls: long finished.
            return Ok(Vec::new());
        };
        let released: Vec<String> = record
            .progress
            .iter()
            .filter(|(_, p)| **p == NodeProgress::Released)
            .map(|(id, _)| id.clone())
            .collect();
        let mut roots = Vec::new();
        let mut unrecorded = Vec::new();
        for node in store
            .workflow_nodes(workflow, &released)
            .await?
            .into_iter()
            .flatten()
            .filter(|node| node.dependencies.is_empty())
        {
            let task = self.prepare_node(workflow, &node)?;
            match store.get(task.envelope.id).await? {
                None => unrecorded.push(update_for(&task, TaskState::Created)),
                Some(r) if r.state == TaskState::Created => {}
                // Queued or further: the broker has it, or had it.
                Some(_) => continue,
            }
            roots.push(task);
        }
        if !unrecorded.is_empty() {
            store.record(&unrecorded).await?;
        }
        debug!(%workflow, roots = roots.len(), "workflow submitted before: left as it is");
        Ok(roots)
    }

    /// Compiles and submits a canvas (chain, group, chord, nested).
    ///
    /// # Errors
    ///
    /// As [`Producer::submit`].
    pub async fn submit_canvas(&self, canvas: &Canvas) -> Result<WorkflowHandle> {
        let (workflow, outputs) = canvas.compile()?;
        self.submit(&workflow, &outputs).await
    }

    /// A handle on a workflow submitted earlier.
    ///
    /// # Errors
    ///
    /// [`Error::NoStore`] without a store.
    pub fn workflow(&self, id: TaskId) -> Result<WorkflowHandle> {
        let store = self
            .inner
            .store
            .clone()
            .ok_or(Error::NoStore { what: "a workflow" })?;
        Ok(WorkflowHandle::new(id, store).with_producer(self.clone()))
    }

    /// The envelope of a workflow node, without its input when that comes
    /// from its dependencies.
    fn prepare_node(&self, workflow: TaskId, node: &Node) -> Result<PreparedTask> {
        fair::check_node(node)?;
        let queue = node
            .queue
            .clone()
            .unwrap_or_else(|| self.inner.default_queue.clone());
        validate_name("queue", &queue)?;
        // A root's inputs from dependencies are empty.
        let input = match node.input_from {
            InputFrom::ByName => rmpv::Value::Map(Vec::new()),
            InputFrom::InOrder => rmpv::Value::Array(Vec::new()),
            InputFrom::Given | InputFrom::Result => node.input.clone(),
        };
        Ok(PreparedTask {
            queue,
            envelope: node.envelope(workflow, input),
        })
    }

    /// The keyring this producer signs with, if any.
    pub fn signing(&self) -> Option<&Keyring> {
        self.inner.signing.as_deref()
    }

    /// The state store, if the producer has one.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.inner.store.as_ref()
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
        self.send_all_with(&tasks, options.admission).await
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
        self.send_all_with(tasks, None).await
    }

    async fn send_all_with(
        &self,
        tasks: &[PreparedTask],
        mode: Option<crate::admission::AdmissionMode>,
    ) -> Result<Vec<TaskId>> {
        if let Some(admission) = &self.inner.admission {
            for task in tasks {
                admission.admit(&task.envelope, mode).await?;
            }
        }
        self.ensure_queues(tasks).await?;
        let Some(store) = self.inner.store.clone() else {
            return self.publish_all(tasks).await;
        };
        // Enqueue idempotency: tasks whose key is already bound are not
        // published; their answer is the first task's id.
        let keyed: Vec<(usize, (String, Update))> = tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let key = t.envelope.idempotency_key.clone()?;
                Some((i, (key, update_for(t, TaskState::Created))))
            })
            .collect();
        let claims: Vec<(String, Update)> = keyed.iter().map(|(_, c)| c.clone()).collect();
        let answers = store.claim(&claims).await?;
        let mut ids: Vec<TaskId> = tasks.iter().map(|t| t.envelope.id).collect();
        let mut skip = vec![false; tasks.len()];
        let mut rebound: Vec<PreparedTask> = Vec::new();
        let mut claimed: Vec<(String, TaskId)> = Vec::new();
        for ((i, (key, _)), answer) in keyed.iter().zip(answers) {
            match answer {
                Claim::Claimed => claimed.push((key.clone(), ids[*i])),
                Claim::Existing { task_id, republish } => {
                    debug!(%key, first = %task_id, republish, "idempotency key already used");
                    ids[*i] = task_id;
                    skip[*i] = true;
                    if republish {
                        let mut task = tasks[*i].clone();
                        task.envelope.id = task_id;
                        rebound.push(task);
                    }
                }
            }
        }
        // Usually no key was used before: the tasks go out as they are
        // (a rebound task is always a skipped one).
        let reduced: Vec<PreparedTask>;
        let to_publish: &[PreparedTask] = if skip.contains(&true) {
            reduced = tasks
                .iter()
                .zip(&skip)
                .filter(|(_, skip)| !**skip)
                .map(|(t, _)| t.clone())
                .chain(rebound)
                .collect();
            &reduced
        } else {
            tasks
        };
        if let Err(e) = self.publish_all(to_publish).await {
            // Unbind the keys so that sending again publishes; tasks that
            // did reach the broker keep their ids through the worker's
            // execution keys.
            if let Err(release) = store.unclaim(&claimed).await {
                warn!(error = %release, "could not release idempotency keys after a failed send");
            }
            return Err(e);
        }
        let queued: Vec<Update> = to_publish
            .iter()
            .map(|t| update_for(t, TaskState::Queued))
            .collect();
        if let Err(e) = store.record(&queued).await {
            // The broker holds the tasks: the send succeeded; only the
            // `queued` mark is missing until a worker starts them.
            warn!(error = %e, tasks = queued.len(), "could not record sent tasks as queued");
        }
        Ok(ids)
    }

    async fn publish_all(&self, tasks: &[PreparedTask]) -> Result<Vec<TaskId>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut retry = crate::failover::Retry::new(self.inner.failover);
        // Tasks before `done` are confirmed; after a lost connection only
        // the rest goes out again, on a new one.
        let mut done = 0;
        let result = loop {
            let mut confirmed = 0;
            let attempt = match self.channel().await {
                Ok(channel) => {
                    let sent = self.publish_on(&channel, &tasks[done..], &mut confirmed);
                    let sent = sent.await;
                    if sent.is_ok() {
                        self.release(channel);
                    }
                    sent
                }
                Err(e) => Err(e),
            };
            done += confirmed;
            match attempt {
                Ok(_) => break Ok(tasks.iter().map(|t| t.envelope.id).collect()),
                Err(e) => match retry.after(&e, tasks.len() - done).await {
                    true => continue,
                    false => break Err(e),
                },
            }
        };
        if let Some(metrics) = &self.inner.metrics {
            for task in tasks {
                match &result {
                    Ok(_) => metrics.sent(&task.queue, &task.envelope.task),
                    Err(_) => metrics.failed(&task.queue),
                }
            }
        }
        result
    }

    async fn publish_on(
        &self,
        channel: &Channel,
        tasks: &[PreparedTask],
        confirmed: &mut usize,
    ) -> Result<Vec<TaskId>> {
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
                publish::task_properties(env, &task.queue, &body, self.inner.signing.as_deref())?;
            let confirm = publish::publish(channel, &route, &body, props).await?;
            debug!(task_id = %env.id, task = %env.task, exchange = %route.exchange, "published");
            let event = self
                .inner
                .events
                .as_ref()
                .and_then(|_| crate::events::sent(task));
            pending.push_back((confirm, env.id, route, event, std::time::Instant::now()));
            ids.push(env.id);
            if pending.len() >= BATCH_WINDOW {
                self.await_one(channel, &mut pending).await?;
                *confirmed += 1;
            }
        }
        while !pending.is_empty() {
            self.await_one(channel, &mut pending).await?;
            *confirmed += 1;
        }
        Ok(ids)
    }

    /// Waits for the oldest confirm; then, with events on, announces the
    /// task as sent.
    async fn await_one(
        &self,
        channel: &Channel,
        pending: &mut std::collections::VecDeque<Unconfirmed>,
    ) -> Result<()> {
        if let Some((confirm, id, route, event, published)) = pending.pop_front() {
            publish::check_confirm(confirm, &id.to_string(), &route, self.inner.confirm_timeout)
                .await?;
            if let Some(metrics) = &self.inner.metrics {
                metrics.confirmed_after(published.elapsed());
            }
            if let (Some(exchange), Some(event)) = (&self.inner.events, event) {
                crate::events::publish(channel, exchange, event).await;
            }
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

    /// A pooled connection, within the connect timeout.
    pub(crate) async fn connection(
        &self,
    ) -> Result<deadpool::managed::Object<crate::pool::Manager>> {
        let inner = &self.inner;
        tokio::time::timeout(inner.connect_timeout, inner.pool.get())
            .await
            .map_err(|_| Error::Unreachable {
                url: inner.url.clone(),
                after: inner.connect_timeout,
                reason: "timed out".into(),
            })?
            .map_err(|e| match e {
                // What the connection itself said: a TLS failure or a bad
                // URL names its cause, anything else the broker was not
                // reached.
                deadpool::managed::PoolError::Backend(Error::Amqp { source, .. }) => {
                    Error::Unreachable {
                        url: inner.url.clone(),
                        after: inner.connect_timeout,
                        reason: source.to_string(),
                    }
                }
                deadpool::managed::PoolError::Backend(e) => e,
                other => Error::Unreachable {
                    url: inner.url.clone(),
                    after: inner.connect_timeout,
                    reason: other.to_string(),
                },
            })
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
        let connection = self.connection().await?;
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

/// A published task waiting for its confirm, with its `sent` event.
type Unconfirmed = (
    lapin::PublisherConfirm,
    TaskId,
    Route,
    Option<crate::events::Pending>,
    std::time::Instant,
);

/// The store update a producer writes for `task` entering `state`.
fn update_for(task: &PreparedTask, state: TaskState) -> Update {
    let env = &task.envelope;
    let mut update = Update::new(
        env.id,
        env.task.clone(),
        task.queue.clone(),
        state,
        env.attempt,
    );
    update.idempotency_key = env.idempotency_key.clone();
    update.workflow_id = env.workflow.as_ref().map(|w| w.workflow_id.to_string());
    update
}

/// Where a task with this envelope would be published now (for tools and
/// tests).
pub fn route_now(topology: &Topology, task: &PreparedTask) -> Result<Route> {
    publish::route(topology, &task.queue, &task.envelope, now_ms())
}

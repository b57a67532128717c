//! The settings of a worker and their checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::tls::TlsOptions;
use celeriac_schema::signing::Keyring;
use celeriac_schema::store::Store;
use celeriac_schema::topology::validate_name;
use celeriac_schema::{DecodeLimits, Topology};
use tokio_util::sync::CancellationToken;

use super::{Config, Worker, DEFAULT_QUEUE_SAMPLE};
use crate::error::{Error, Result};
use crate::metrics::WorkerMetrics;
use crate::registry::Registry;
use crate::stats::WorkerStats;
/// Builds a [`Worker`].
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> celeriac_consumer::Result<()> {
/// use std::time::Duration;
/// use celeriac_consumer::{Registry, TaskContext, TaskError, Worker};
/// use celeriac_schema::builtin::Ping;
///
/// let mut registry = Registry::new();
/// registry.register::<Ping, _, _>(|(), _ctx: TaskContext| async {
///     Ok::<_, TaskError>("pong".to_owned())
/// });
/// let worker = Worker::builder("amqp://127.0.0.1:5672/%2f", registry)
///     .namespace("shop")
///     .queues(["default", "emails"])
///     .concurrency(32)
///     .grace(Duration::from_secs(20))
///     .build()?;
/// let handle = worker.handle();
/// tokio::spawn(async move {
///     tokio::signal::ctrl_c().await.ok();
///     handle.shutdown();
/// });
/// let stats = worker.run().await?;
/// println!("ran {} tasks", stats.succeeded);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WorkerBuilder {
    url: String,
    tls: TlsOptions,
    registry: Registry,
    namespace: String,
    queues: Vec<String>,
    concurrency: usize,
    prefetch: Option<u16>,
    grace: Duration,
    worker_id: Option<String>,
    delivery_limit: Option<u32>,
    leader_locator: Option<celeriac_schema::topology::LeaderLocator>,
    limits: DecodeLimits,
    consumer_timeout: Duration,
    lease_ttl: Duration,
    store: Option<Arc<dyn Store>>,
    events: bool,
    metrics_addr: Option<SocketAddr>,
    metrics_token: Option<String>,
    queue_sample_interval: Duration,
    signing: Option<Arc<Keyring>>,
    heartbeat: Duration,
    fair: Vec<(String, u64)>,
    urgency: super::urgency::Settings,
    pub(super) policy: super::policy::PolicyFlags,
}

impl WorkerBuilder {
    /// Consumes logical queue `queue` as a fair queue with `shards` shard
    /// queues: its plain queue and every shard, each with a small prefetch,
    /// sharing the worker's slots round-robin among those with work, so
    /// one tenant's flood cannot starve another tenant (SPEC.md section
    /// 21). Producers must use the same count; with a state store,
    /// `celeriac queue fair` records it for all, and a count set here wins
    /// over the store's.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_consumer::{Registry, Worker};
    ///
    /// let worker = Worker::builder("amqp://127.0.0.1:5672/%2f", Registry::new())
    ///     .fair_queue("default", 8)
    ///     .build();
    /// assert!(worker.is_ok());
    /// let zero = Worker::builder("amqp://127.0.0.1:5672/%2f", Registry::new())
    ///     .fair_queue("default", 0)
    ///     .build();
    /// assert!(zero.is_err());
    /// ```
    pub fn fair_queue(mut self, queue: impl Into<String>, shards: u64) -> Self {
        self.fair.push((queue.into(), shards));
        self
    }

    /// Under contention one concurrency slot in every `weight` goes to a
    /// deferrable task (one with a delay tolerance), the others to urgent
    /// ones (default [`DEFAULT_URGENT_WEIGHT`](super::DEFAULT_URGENT_WEIGHT);
    /// at least 2, checked by [`WorkerBuilder::build`]).
    pub fn urgent_weight(mut self, weight: u32) -> Self {
        self.urgency.weight = weight;
        self
    }

    /// The wait threshold of `queue`: a task that starts more than
    /// `threshold` after it became due is counted in
    /// `celeriac_tasks_wait_exceeded_total` and its `started` event says so.
    pub fn wait_threshold(mut self, queue: impl Into<String>, threshold: Duration) -> Self {
        self.urgency.waits.insert(queue.into(), threshold);
        self
    }

    /// The wait threshold of every queue without one of its own.
    pub fn default_wait_threshold(mut self, threshold: Duration) -> Self {
        self.urgency.default_wait = Some(threshold);
        self
    }

    /// Every node of the broker cluster: each (re)connection starts at a
    /// random one and tries the others in turn (see
    /// [`celeriac_producer::addresses`]); replaces the URL given to
    /// [`Worker::builder`](crate::Worker::builder).
    pub fn addresses<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, urls: I) -> Self {
        self.url = celeriac_producer::addresses::join(urls);
        self
    }

    /// How often the worker publishes `worker.heartbeat` on the events
    /// exchange and, with a store, refreshes its record in the worker list
    /// and re-reads revocations and task limits (default 2 s, at least
    /// 100 ms). A worker silent for three periods is shown as lost.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Requires signed messages: every delivery is verified with the
    /// keyring before it is decoded, and one that is unsigned or whose
    /// signature does not verify is dead-lettered with reason
    /// `bad-signature`, unchanged and never run. Every task the worker
    /// publishes (retries, released workflow nodes, subtasks) is signed
    /// with the keyring's signing key (default: no signatures checked or
    /// made). See [`celeriac_producer::signing`].
    pub fn signing(mut self, keyring: Keyring) -> Self {
        self.signing = Some(Arc::new(keyring));
        self
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `addr` while the
    /// worker runs (default: no server). Port 0 picks a free port; read it
    /// from [`WorkerHandle::metrics_addr`]. With the server on, the worker
    /// also samples the depth of its work and dead-letter queues.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo() -> celeriac_consumer::Result<()> {
    /// use celeriac_consumer::{Registry, Worker};
    ///
    /// let worker = Worker::builder("amqp://127.0.0.1:5672/%2f", Registry::new())
    ///     .metrics_addr(([127, 0, 0, 1], 0).into())
    ///     .build()?;
    /// let addr = worker.handle().metrics_addr().expect("metrics are on");
    /// println!("scrape http://{addr}/metrics");
    /// # Ok(()) }
    /// ```
    pub fn metrics_addr(mut self, addr: SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// Requires `Authorization: Bearer <token>` on `/metrics` (default:
    /// none). `/healthz` and `/readyz` stay open: they reveal nothing and
    /// probes send no credentials.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo() -> celeriac_consumer::Result<()> {
    /// use celeriac_consumer::{Registry, Worker};
    ///
    /// let token = "read me from a file, not from the code";
    /// let worker = Worker::builder("amqp://127.0.0.1:5672/%2f", Registry::new())
    ///     .metrics_addr(([127, 0, 0, 1], 9464).into())
    ///     .metrics_token(token)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn metrics_token(mut self, token: impl Into<String>) -> Self {
        self.metrics_token = Some(token.into());
        self
    }

    /// How often the depth and consumers of the consumed queues and their
    /// dead-letter queues are sampled for the metrics (default 15 s; at
    /// least 100 ms). Only with [`metrics_addr`](Self::metrics_addr).
    pub fn queue_sample_interval(mut self, interval: Duration) -> Self {
        self.queue_sample_interval = interval;
        self
    }

    /// The state store (default: none). With a store the worker records
    /// every state change and result, never runs a task whose idempotency
    /// key already succeeded, holds a run lease so a task never runs twice
    /// at once, and acks a delivery only once its outcome is stored; while
    /// the store is down it is not ready and holds its deliveries.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Publish task events on the events exchange (default off):
    /// `received`, `started`, `succeeded` (again for a suppressed
    /// duplicate), `failed`, `retried`, `expired`, `revoked` and
    /// `dead-lettered`, with the bodies of SPEC.md section 17
    /// ([`celeriac_schema::events::TaskEvent`]). They are published
    /// without waiting for confirms, at most once: a task never waits for
    /// or fails on an event.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_consumer::{Registry, Worker};
    ///
    /// let worker = Worker::builder("amqp://127.0.0.1:5672/%2f", Registry::new())
    ///     .events(true)
    ///     .build();
    /// assert!(worker.is_ok());
    /// ```
    pub fn events(mut self, on: bool) -> Self {
        self.events = on;
        self
    }

    /// TLS settings for an `amqps://` URL: the CA bundle to trust (default:
    /// the system's roots) and a client certificate for mutual TLS. An
    /// `amqps://` URL always connects over TLS, never in plaintext.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Namespace prefix (default `celeriac`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Logical queues to consume (default `["default"]`).
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Most tasks running at once, across all queues (default 16).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Unacked deliveries the broker may push to each queue's consumer
    /// (default four times the concurrency, at most 65535). Short tasks need
    /// a deep prefetch to keep the worker busy; for long tasks a small one
    /// leaves the waiting messages to other workers.
    pub fn prefetch(mut self, n: u16) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// How long in-flight tasks may finish after a shutdown request before
    /// they are abandoned to the queue (default 30 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Identity in logs and dead-letter headers (default `host-pid`).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Declares queues with this `x-queue-leader-locator` (see
    /// [`Topology::with_leader_locator`](celeriac_schema::Topology::with_leader_locator));
    /// must match the producers'.
    pub fn leader_locator(mut self, locator: celeriac_schema::topology::LeaderLocator) -> Self {
        self.leader_locator = Some(locator);
        self
    }

    /// Work queues' `x-delivery-limit` (default 5); must match the
    /// producers'.
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = Some(limit);
        self
    }

    /// Size and nesting limits for message bodies.
    pub fn limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The broker's consumer (ack) timeout (RabbitMQ's default: 30 min). A
    /// task still running at half of it swaps its delivery for a lease, so
    /// the broker never closes the channel under it.
    pub fn consumer_timeout(mut self, timeout: Duration) -> Self {
        self.consumer_timeout = timeout;
        self
    }

    /// How long a leased task's parked copy waits before it is handed back
    /// to the queue if the worker stops renewing it (default 60 s).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Checks the settings, and binds the metrics address if one is set.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::Schema`] for an invalid namespace,
    /// queue name, concurrency or lease setting; [`Error::Producer`] for
    /// TLS files that cannot be used;
    /// [`Error::MetricsServer`] when the metrics address cannot be bound.
    pub fn build(self) -> Result<Worker> {
        self.tls.check()?;
        let mut topology = Topology::new(self.namespace)?;
        if let Some(limit) = self.delivery_limit {
            topology = topology.with_delivery_limit(limit);
        }
        for (queue, shards) in &self.fair {
            topology = topology.with_fair_queue(queue, *shards)?;
        }
        if let Some(locator) = self.leader_locator {
            topology = topology.with_leader_locator(locator);
        }
        if self.queues.is_empty() {
            return Err(Error::Config("at least one queue is needed".into()));
        }
        for queue in &self.queues {
            validate_name("queue", queue)?;
        }
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        if self.urgency.weight < 2 {
            return Err(Error::Config(format!(
                "the urgent weight must be at least 2 (one deferrable slot in every N), not {}",
                self.urgency.weight
            )));
        }
        if let Some((queue, _)) = self.urgency.waits.iter().find(|(_, t)| t.is_zero()) {
            return Err(Error::Config(format!(
                "the wait threshold of {queue} is zero"
            )));
        }
        if self.urgency.default_wait.is_some_and(|t| t.is_zero()) {
            return Err(Error::Config("the default wait threshold is zero".into()));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(Error::Config("the lease TTL must be at least 1 s".into()));
        }
        let default_prefetch =
            u16::try_from(self.concurrency.saturating_mul(4)).unwrap_or(u16::MAX);
        let prefetch = self.prefetch.unwrap_or(default_prefetch).max(1);
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        let stats = Arc::new(WorkerStats::default());
        let metrics = Arc::new(WorkerMetrics::new(&self.queues, self.registry.names()));
        let listener = match self.metrics_addr {
            None => None,
            Some(addr) => {
                let bound = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(|l| l.local_addr().map(|local| (l, local)));
                Some(bound.map_err(|source| Error::MetricsServer { addr, source })?)
            }
        };
        if self.metrics_token.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Config("the metrics token is empty".into()));
        }
        let queue_sample = listener
            .as_ref()
            .map(|_| self.queue_sample_interval.max(Duration::from_millis(100)));
        Ok(Worker {
            config: Arc::new(Config {
                url: self.url,
                tls: self.tls,
                topology,
                queues: self.queues,
                concurrency: self.concurrency,
                prefetch,
                grace: self.grace,
                worker_id: worker_id.into(),
                limits: self.limits,
                lease_after: self.consumer_timeout / 2,
                lease_ttl: self.lease_ttl,
                store: self.store,
                events: self.events,
                queue_sample,
                signing: self.signing,
                heartbeat: self.heartbeat.max(Duration::from_millis(100)),
                urgency: self.urgency,
                policy: self.policy,
            }),
            registry: Arc::new(self.registry),
            stats,
            metrics,
            metrics_addr: listener.as_ref().map(|(_, local)| *local),
            metrics_token: self.metrics_token.map(Arc::from),
            listener: listener.map(|(l, _)| l),
            shutdown: CancellationToken::new(),
        })
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

impl Worker {
    /// Starts a builder for the broker at `url`, running `registry`'s tasks.
    pub fn builder(url: impl Into<String>, registry: Registry) -> WorkerBuilder {
        WorkerBuilder {
            url: url.into(),
            tls: TlsOptions::default(),
            registry,
            namespace: celeriac_schema::topology::DEFAULT_NAMESPACE.to_owned(),
            queues: vec![celeriac_schema::topology::DEFAULT_QUEUE.to_owned()],
            concurrency: 16,
            prefetch: None,
            grace: Duration::from_secs(30),
            worker_id: None,
            delivery_limit: None,
            leader_locator: None,
            limits: DecodeLimits::default(),
            consumer_timeout: Duration::from_secs(30 * 60),
            lease_ttl: Duration::from_secs(60),
            store: None,
            events: false,
            metrics_addr: None,
            metrics_token: None,
            queue_sample_interval: DEFAULT_QUEUE_SAMPLE,
            signing: None,
            fair: Vec::new(),
            heartbeat: super::control::DEFAULT_HEARTBEAT,
            urgency: super::urgency::Settings::default(),
            policy: Default::default(),
        }
    }
}

//! The worker runtime: connect, declare, consume, run handlers, settle
//! deliveries, reconnect, shut down gracefully.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::publish::{self, long_string, Route};
use celeriac_producer::tls::TlsOptions;
use celeriac_producer::topology::declare;
use celeriac_schema::signing::Keyring;
use celeriac_schema::store::{Begin, Store, TaskFailure, Update};
use celeriac_schema::topology::validate_name;
use celeriac_schema::{
    decode_with, headers, now_ms, DecodeLimits, Envelope, TaskId, TaskState, Topology,
};
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::ack_tracker::{AckAction, AckTracker};
use crate::coordinator;
use crate::disposition::{decide, Disposition, Outcome};
use crate::error::{Error, Result};
use crate::http::HttpState;
use crate::lease::Lease;
use crate::metrics::{QueueMetrics, TaskMetrics, WorkerMetrics};
use crate::registry::{Registry, TaskContext};
use crate::stats::{StatsSnapshot, WorkerStats};

/// How often stragglers are acked on their own.
const ACK_TICK: Duration = Duration::from_millis(20);
/// How often a delivery held behind another run's lease asks again.
const BUSY_RECHECK: Duration = Duration::from_millis(500);
/// What running a delivery's handler came to.
struct Executed {
    outcome: Outcome,
    /// The envelope, without its input (the handler took it).
    env: Envelope,
    /// The lease a long run swapped its delivery for.
    lease: Option<Lease>,
    /// The handler's result.
    output: Option<rmpv::Value>,
    /// Whether the run wrote `started` itself (it passed
    /// [`STARTED_AFTER`]).
    start_recorded: bool,
}

/// What a run leaves for the store besides its outcome.
struct RunEnd {
    /// The handler's result.
    output: Option<rmpv::Value>,
    /// When the run started, if its `started` state is not stored yet.
    unrecorded_start: Option<u64>,
}

/// A run still going after this long writes its `started` state on its
/// own; a shorter one records it with its outcome, in the same write.
const STARTED_AFTER: Duration = Duration::from_millis(50);
/// Longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default period of the queue-depth sample.
const DEFAULT_QUEUE_SAMPLE: Duration = Duration::from_secs(15);

/// Settings of a worker; built by [`WorkerBuilder`].
#[derive(Debug, Clone)]
struct Config {
    url: String,
    tls: TlsOptions,
    topology: Topology,
    queues: Vec<String>,
    concurrency: usize,
    prefetch: u16,
    grace: Duration,
    worker_id: Arc<str>,
    limits: DecodeLimits,
    lease_after: Duration,
    lease_ttl: Duration,
    store: Option<Arc<dyn Store>>,
    events: bool,
    /// Period of the queue-depth sample; `None` without a metrics server.
    queue_sample: Option<Duration>,
    /// Verifies every delivery and signs every task published, when set.
    signing: Option<Arc<Keyring>>,
}

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
    limits: DecodeLimits,
    consumer_timeout: Duration,
    lease_ttl: Duration,
    store: Option<Arc<dyn Store>>,
    events: bool,
    metrics_addr: Option<SocketAddr>,
    metrics_token: Option<String>,
    queue_sample_interval: Duration,
    signing: Option<Arc<Keyring>>,
}

impl WorkerBuilder {
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

    /// Publish a lifecycle event to the events exchange when a task
    /// succeeds or fails for good, again for a suppressed duplicate
    /// (default off).
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
        if self.queues.is_empty() {
            return Err(Error::Config("at least one queue is needed".into()));
        }
        for queue in &self.queues {
            validate_name("queue", queue)?;
        }
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
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

/// A worker: consumes queues and runs their tasks until shut down.
#[derive(Debug)]
pub struct Worker {
    config: Arc<Config>,
    registry: Arc<Registry>,
    stats: Arc<WorkerStats>,
    metrics: Arc<WorkerMetrics>,
    /// The bound metrics address, served from `run`.
    listener: Option<std::net::TcpListener>,
    metrics_addr: Option<SocketAddr>,
    metrics_token: Option<Arc<str>>,
    shutdown: CancellationToken,
}

/// Controls a running worker from elsewhere; cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    stats: Arc<WorkerStats>,
    http: HttpState,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
}

impl WorkerHandle {
    /// Asks the worker to stop: it stops consuming, lets in-flight tasks
    /// finish within the grace period and hands the rest back.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Whether the worker is connected, declared and consuming, its state
    /// store (if any) answers, and no shutdown has begun: what `/readyz`
    /// reports.
    pub fn is_ready(&self) -> bool {
        self.http.readiness().is_ok()
    }

    /// The address `/metrics`, `/healthz` and `/readyz` are served on
    /// (`None` without [`WorkerBuilder::metrics_addr`]); with port 0 asked
    /// for, the port the system picked.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The worker's metrics in the Prometheus text format, as `/metrics`
    /// serves them (also without a metrics server).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn demo() -> celeriac_consumer::Result<()> {
    /// use celeriac_consumer::{Registry, Worker};
    ///
    /// let worker = Worker::builder("amqp://127.0.0.1:5672/%2f", Registry::new()).build()?;
    /// assert!(worker.handle().metrics().contains("celeriac_worker_ready 0"));
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> String {
        self.http.render_metrics().unwrap_or_else(|e| {
            warn!(error = %e, "cannot render the metrics");
            String::new()
        })
    }
}

/// State every task of a worker shares.
struct Shared {
    config: Arc<Config>,
    registry: Arc<Registry>,
    stats: Arc<WorkerStats>,
    metrics: Arc<WorkerMetrics>,
    /// The publisher channel of the live session, for leased tasks that
    /// outlive the session they started in.
    publisher: watch::Receiver<Option<Channel>>,
    shutdown: CancellationToken,
    /// Queues declared for released workflow nodes.
    declared: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Sends subtasks for handlers.
    spawner: Arc<crate::registry::Spawner>,
}

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
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
            limits: DecodeLimits::default(),
            consumer_timeout: Duration::from_secs(30 * 60),
            lease_ttl: Duration::from_secs(60),
            store: None,
            events: false,
            metrics_addr: None,
            metrics_token: None,
            queue_sample_interval: DEFAULT_QUEUE_SAMPLE,
            signing: None,
        }
    }

    /// A handle to stop the worker and read its counters.
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle {
            stats: self.stats.clone(),
            http: self.http_state(),
            metrics_addr: self.metrics_addr,
            shutdown: self.shutdown.clone(),
        }
    }

    fn http_state(&self) -> HttpState {
        HttpState {
            metrics: self.metrics.clone(),
            stats: self.stats.clone(),
            shutdown: self.shutdown.clone(),
            has_store: self.config.store.is_some(),
            token: self.metrics_token.clone(),
        }
    }

    /// Runs until [`WorkerHandle::shutdown`]; reconnects with backoff
    /// whenever the broker connection is lost.
    ///
    /// # Errors
    ///
    /// Only for errors a reconnect cannot fix, such as a queue declared
    /// with other arguments.
    pub async fn run(mut self) -> Result<StatsSnapshot> {
        // Served until `run` returns: through the grace period, /readyz
        // says 503 and /metrics shows the drain.
        let http_stop = CancellationToken::new();
        let _http_guard = http_stop.clone().drop_guard();
        if let Some(listener) = self.listener.take() {
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|source| {
                Error::MetricsServer {
                    addr: self
                        .metrics_addr
                        .unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                    source,
                }
            })?;
            tokio::spawn(crate::http::serve(
                listener,
                self.http_state(),
                http_stop.clone(),
            ));
        }
        let (publisher_tx, publisher_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            registry: self.registry.clone(),
            stats: self.stats.clone(),
            metrics: self.metrics.clone(),
            publisher: publisher_rx,
            shutdown: self.shutdown.clone(),
            declared: std::sync::Mutex::new(self.config.queues.iter().cloned().collect()),
            spawner: Arc::new(crate::registry::Spawner::new(
                self.config.url.clone(),
                self.config.tls.clone(),
                self.config.topology.namespace().to_owned(),
                self.config.store.clone(),
                self.config.signing.clone(),
            )),
        });
        let semaphore = Arc::new(Semaphore::new(self.config.concurrency));
        let mut failures: u32 = 0;
        info!(
            worker = %self.config.worker_id,
            namespace = self.config.topology.namespace(),
            queues = ?self.config.queues,
            tasks = ?self.registry.names(),
            "worker starting"
        );
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            match connect(&self.config).await {
                Ok(session) => {
                    failures = 0;
                    publisher_tx.send_replace(Some(session.publisher.clone()));
                    self.stats.ready.store(true, Ordering::Relaxed);
                    info!(worker = %self.config.worker_id, "connected and consuming");
                    let end = session
                        .run(shared.clone(), semaphore.clone(), self.shutdown.clone())
                        .await;
                    self.stats.ready.store(false, Ordering::Relaxed);
                    publisher_tx.send_replace(None);
                    match end {
                        SessionEnd::Shutdown => break,
                        SessionEnd::Lost(reason) => {
                            WorkerStats::bump(&self.stats.reconnects);
                            self.metrics.reconnects.inc();
                            warn!(%reason, "connection lost; reconnecting");
                        }
                    }
                }
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => {
                    failures = failures.saturating_add(1);
                    warn!(error = %e, attempt = failures, "cannot connect to the broker; retrying");
                }
            }
            let delay = reconnect_delay(failures);
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let stats = self.stats.snapshot();
        info!(?stats, "worker stopped");
        Ok(stats)
    }
}

/// Exponential backoff with jitter, from 100 ms to [`MAX_RECONNECT_DELAY`].
fn reconnect_delay(failures: u32) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1u32 << failures.min(7));
    let capped = base.min(MAX_RECONNECT_DELAY);
    capped.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// One connection: a publisher channel and one consuming channel per queue.
struct Session {
    connection: Arc<Connection>,
    publisher: Channel,
    lanes: Vec<(Arc<str>, Channel, Consumer)>,
}

async fn connect(config: &Config) -> Result<Session> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("celeriac-worker {}", config.worker_id).into());
    let connecting = celeriac_producer::tls::connect(&config.url, props, &config.tls);
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| Error::Amqp {
            doing: "connecting",
            source: lapin::Error::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no connection to {} within {CONNECT_TIMEOUT:?}",
                    celeriac_producer::redact_url(&config.url)
                ),
            )),
        })?
        .map_err(|e| match e {
            celeriac_producer::Error::Amqp { source, .. } => Error::amqp("connecting")(source),
            other => Error::Connect(other),
        })?;
    let publisher = connection
        .create_channel()
        .await
        .map_err(Error::amqp("opening a channel"))?;
    declare_all(config, &publisher).await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(Error::amqp("enabling publisher confirms"))?;
    let mut lanes = Vec::with_capacity(config.queues.len());
    for queue in &config.queues {
        let channel = connection
            .create_channel()
            .await
            .map_err(Error::amqp("opening a channel"))?;
        // Per consumer, never global: quorum queues refuse global QoS.
        channel
            .basic_qos(config.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(Error::amqp("setting the prefetch"))?;
        let consumer = channel
            .basic_consume(
                config.topology.work_queue(queue).into(),
                format!("{}/{queue}", config.worker_id).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::amqp("starting a consumer"))?;
        lanes.push((Arc::from(queue.as_str()), channel, consumer));
    }
    Ok(Session {
        connection: Arc::new(connection),
        publisher,
        lanes,
    })
}

async fn declare_all(config: &Config, channel: &Channel) -> Result<()> {
    let declare_error = |e: celeriac_producer::Error| match e {
        // A refused declaration (other arguments) will be refused again.
        celeriac_producer::Error::Amqp { source, .. }
            if matches!(source.kind(), lapin::ErrorKind::ProtocolError(_)) =>
        {
            Error::Config(format!(
                "the broker refused the topology (is a queue declared with other arguments, \
                 such as another delivery limit?): {source}"
            ))
        }
        other => Error::Producer(other),
    };
    declare(channel, &config.topology.shared_declarations())
        .await
        .map_err(declare_error)?;
    for queue in &config.queues {
        declare(channel, &config.topology.queue_declarations(queue)?)
            .await
            .map_err(declare_error)?;
    }
    Ok(())
}

impl Session {
    async fn run(
        self,
        shared: Arc<Shared>,
        semaphore: Arc<Semaphore>,
        shutdown: CancellationToken,
    ) -> SessionEnd {
        // Ends every lane when one of them loses its channel.
        let session_token = shutdown.child_token();
        if let Some(every) = shared.config.queue_sample {
            tokio::spawn(sample_queues(
                self.connection.clone(),
                shared.clone(),
                every,
                session_token.clone(),
            ));
        }
        let mut lanes = JoinSet::new();
        for (queue, channel, consumer) in self.lanes {
            let metrics = shared.metrics.queue(&queue);
            let lane = Lane {
                shared: shared.clone(),
                metrics,
                queue,
                channel,
                publisher: self.publisher.clone(),
                semaphore: semaphore.clone(),
            };
            lanes.spawn(lane.run(consumer, session_token.clone(), shutdown.clone()));
        }
        let mut end = SessionEnd::Shutdown;
        while let Some(result) = lanes.join_next().await {
            match result {
                Ok(SessionEnd::Shutdown) => {}
                Ok(SessionEnd::Lost(reason)) => {
                    session_token.cancel();
                    if matches!(end, SessionEnd::Shutdown) {
                        end = SessionEnd::Lost(reason);
                    }
                }
                Err(join) => {
                    session_token.cancel();
                    end = SessionEnd::Lost(format!("consumer task failed: {join}"));
                }
            }
        }
        if shutdown.is_cancelled() {
            end = SessionEnd::Shutdown;
        }
        let _ = self.connection.close(200, "worker stopping".into()).await;
        end
    }
}

/// Samples the depth of each consumed work queue and its dead-letter queue,
/// and the work queue's consumers, for the metrics; pings the state store
/// on the same beat so readiness notices a store that went away while the
/// worker is idle. Passive declares on a channel of its own: a refusal
/// (a queue deleted under the worker) closes only that channel, reopened on
/// the next beat.
async fn sample_queues(
    connection: Arc<Connection>,
    shared: Arc<Shared>,
    every: Duration,
    session: CancellationToken,
) {
    let topology = &shared.config.topology;
    let queues: Vec<(Arc<QueueMetrics>, String, String)> = shared
        .config
        .queues
        .iter()
        .map(|queue| {
            (
                shared.metrics.queue(queue),
                topology.work_queue(queue),
                topology.dead_letter_queue(queue),
            )
        })
        .collect();
    let mut channel: Option<Channel> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = session.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some(store) = &shared.config.store {
            match tokio::time::timeout(every.max(Duration::from_secs(1)), store.ping()).await {
                Ok(Ok(())) => shared.stats.store_down.store(false, Ordering::Relaxed),
                Ok(Err(e)) => {
                    debug!(error = %e, "state store ping failed");
                    shared.stats.store_down.store(true, Ordering::Relaxed);
                }
                Err(_) => {
                    debug!("state store ping timed out");
                    shared.stats.store_down.store(true, Ordering::Relaxed);
                }
            }
        }
        let open = match channel.take() {
            Some(open) if open.status().connected() => open,
            _ => match connection.create_channel().await {
                Ok(open) => open,
                Err(e) => {
                    debug!(error = %e, "cannot open the queue-sampling channel");
                    continue;
                }
            },
        };
        for (metrics, work, dlq) in &queues {
            match passive_declare(&open, work).await {
                Ok(q) => {
                    metrics.work_messages.set(i64::from(q.message_count()));
                    metrics.consumers.set(i64::from(q.consumer_count()));
                }
                Err(e) => debug!(queue = %work, error = %e, "cannot sample the queue"),
            }
            match passive_declare(&open, dlq).await {
                Ok(q) => metrics.dlq_messages.set(i64::from(q.message_count())),
                Err(e) => debug!(queue = %dlq, error = %e, "cannot sample the queue"),
            }
        }
        channel = Some(open);
    }
    if let Some(open) = channel {
        let _ = open.close(200, "worker stopping".into()).await;
    }
}

async fn passive_declare(channel: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

/// One queue's consumer, its channel and its acknowledgements.
struct Lane {
    shared: Arc<Shared>,
    metrics: Arc<QueueMetrics>,
    queue: Arc<str>,
    channel: Channel,
    publisher: Channel,
    semaphore: Arc<Semaphore>,
}

/// Messages to a lane's acker.
#[derive(Debug)]
enum AckMsg {
    Delivered(u64),
    Finished(u64),
    Requeue(u64),
}

impl Lane {
    async fn run(
        self,
        mut consumer: Consumer,
        session: CancellationToken,
        shutdown: CancellationToken,
    ) -> SessionEnd {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let acker = tokio::spawn(run_acker(self.channel.clone(), ack_rx));
        let mut tasks = JoinSet::new();
        let shared = &self.shared;
        let end = loop {
            tokio::select! {
                biased;
                _ = session.cancelled() => {
                    break if shutdown.is_cancelled() {
                        SessionEnd::Shutdown
                    } else {
                        SessionEnd::Lost("another channel of the session closed".into())
                    };
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let tag = delivery.delivery_tag;
                        let _ = ack_tx.send(AckMsg::Delivered(tag));
                        let permit = tokio::select! {
                            permit = self.semaphore.clone().acquire_owned() => permit,
                            _ = session.cancelled() => {
                                let _ = ack_tx.send(AckMsg::Requeue(tag));
                                WorkerStats::bump(&shared.stats.requeued);
                                continue;
                            }
                        };
                        let Ok(permit) = permit else {
                            break SessionEnd::Shutdown;
                        };
                        let job = Job {
                            shared: shared.clone(),
                            metrics: self.metrics.clone(),
                            queue: self.queue.clone(),
                            publisher: self.publisher.clone(),
                            ack: ack_tx.clone(),
                            _permit: permit,
                        };
                        // Boxed: the job's future is large, and the runtime would copy it
                        // several times on its way to a thread.
                        tasks.spawn(Box::pin(job.run(delivery)));
                    }
                    Some(Err(e)) => break SessionEnd::Lost(e.to_string()),
                    None => break SessionEnd::Lost("the broker cancelled the consumer".into()),
                }
            }
        };
        match end {
            SessionEnd::Shutdown => {
                let _ = self
                    .channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
                let in_flight = tasks.len();
                if in_flight > 0 {
                    info!(queue = %self.queue, in_flight, grace = ?shared.config.grace, "waiting for in-flight tasks");
                }
                let drained = tokio::time::timeout(shared.config.grace, async {
                    while tasks.join_next().await.is_some() {}
                })
                .await;
                if drained.is_err() {
                    let abandoned = tasks.len();
                    warn!(queue = %self.queue, abandoned, "grace period over; handing unfinished tasks back to the queue");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    shared
                        .stats
                        .requeued
                        .fetch_add(abandoned as u64, Ordering::Relaxed);
                }
                drop(ack_tx);
                let _ = acker.await;
                // Closing the channel hands every unacked delivery back.
                let _ = self.channel.close(200, "worker stopping".into()).await;
            }
            SessionEnd::Lost(_) => {
                // Their deliveries went back to the queue with the channel;
                // leased runs still finish and settle through the next session.
                tasks.detach_all();
                drop(ack_tx);
                acker.abort();
            }
        }
        end
    }
}

async fn run_acker(channel: Channel, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let mut tracker = AckTracker::default();
    let mut tick = tokio::time::interval(ACK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                apply(&channel, &mut tracker, msg).await;
                while let Ok(msg) = rx.try_recv() {
                    apply(&channel, &mut tracker, msg).await;
                }
                if let Some(action) = tracker.take_prefix() {
                    send_ack(&channel, action).await;
                }
            }
            _ = tick.tick() => {
                for action in tracker.on_tick() {
                    send_ack(&channel, action).await;
                }
            }
        }
    }
    for action in tracker.drain() {
        send_ack(&channel, action).await;
    }
}

async fn apply(channel: &Channel, tracker: &mut AckTracker, msg: AckMsg) {
    match msg {
        AckMsg::Delivered(tag) => tracker.delivered(tag),
        AckMsg::Finished(tag) => tracker.finished(tag),
        AckMsg::Requeue(tag) => {
            tracker.forget(tag);
            let options = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            if let Err(e) = channel.basic_nack(tag, options).await {
                debug!(tag, error = %e, "nack failed; the channel hands the delivery back anyway");
            }
        }
    }
}

async fn send_ack(channel: &Channel, action: AckAction) {
    let (tag, multiple) = match action {
        AckAction::AckUpTo(tag) => (tag, true),
        AckAction::AckOne(tag) => (tag, false),
    };
    if let Err(e) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
        debug!(tag, error = %e, "ack failed; the delivery will be redelivered");
    }
}

/// One delivery being handled.
struct Job {
    shared: Arc<Shared>,
    metrics: Arc<QueueMetrics>,
    queue: Arc<str>,
    publisher: Channel,
    ack: mpsc::UnboundedSender<AckMsg>,
    _permit: OwnedSemaphorePermit,
}

/// Decrements the in-flight gauges when a job ends, however it ends.
struct InFlight<'a>(&'a WorkerStats, &'a QueueMetrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.1.in_flight.dec();
    }
}

impl Job {
    async fn run(self, delivery: Delivery) {
        let stats = &self.shared.stats;
        WorkerStats::bump(&stats.received);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.inc();
        let _in_flight = InFlight(stats, &self.metrics);
        let tag = delivery.delivery_tag;
        let config = &self.shared.config;
        let decoded = crate::signing::admit(config.signing.as_deref(), &delivery, &config.limits);
        let metrics = self
            .metrics
            .task(decoded.as_ref().ok().map(|env| env.task.as_str()));
        metrics.received.inc();
        // Fields are formatted only if the span is recorded.
        let span = match &decoded {
            Ok(env) => info_span!("task", task_id = %env.id, task = %env.task, queue = %self.queue),
            Err(_) => info_span!(
                "task",
                message_id = ?delivery.properties.message_id(),
                queue = %self.queue
            ),
        };
        self.handle(delivery, decoded, tag, metrics)
            .instrument(span)
            .await;
    }

    async fn handle(
        &self,
        delivery: Delivery,
        decoded: std::result::Result<Envelope, Outcome>,
        tag: u64,
        metrics: &TaskMetrics,
    ) {
        let stats = &self.shared.stats;
        let store = self.shared.config.store.clone();
        let mut lease = None;
        // The run this delivery started in the store: (key, token).
        let mut run: Option<(String, String)> = None;
        let mut output = None;
        let mut suppressed = None;
        // When a run started, while its `started` state is not yet stored.
        let mut unrecorded_start = None;
        let (outcome, envelope) = match decoded {
            Err(refused) => {
                crate::signing::log_refused(&refused);
                (refused, None)
            }
            Ok(mut env) => {
                let now = now_ms();
                let wait = env.wait_before_run(now);
                if env.is_expired_at(now) {
                    WorkerStats::bump(&stats.expired);
                    metrics.expired.inc();
                    info!("task expired before it could run; dropping it");
                    (Outcome::Expired, Some(env))
                } else if !wait.is_zero() {
                    (Outcome::Early(wait), Some(env))
                } else if let Some(handler) = self.shared.registry.get(&env.task).cloned() {
                    let begin = match &store {
                        None => Some(Begin::Run),
                        Some(store) => {
                            let key = env.effective_idempotency_key();
                            let token =
                                format!("{}/{}", self.shared.config.worker_id, TaskId::new());
                            let begun = self.begin(store, &key, &token).await;
                            if matches!(begun, Some(Begin::Run)) {
                                run = Some((key, token));
                            }
                            begun
                        }
                    };
                    match begin {
                        // Shutting down while the store is unreachable.
                        None => {
                            let _ = self.ack.send(AckMsg::Requeue(tag));
                            return;
                        }
                        Some(Begin::Run) => {
                            let started = std::time::Instant::now();
                            let started_ms = now_ms();
                            metrics.observe_wait(env.created_at, env.eta, started_ms);
                            let done = self
                                .execute(handler, env, &delivery, tag, run.as_ref(), started_ms)
                                .await;
                            if run.is_some() && !done.start_recorded {
                                unrecorded_start = Some(started_ms);
                            }
                            metrics.run_seconds.observe(started.elapsed().as_secs_f64());
                            lease = done.lease;
                            output = done.output;
                            (done.outcome, Some(done.env))
                        }
                        Some(Begin::Succeeded { task_id }) => {
                            WorkerStats::bump(&stats.duplicates_suppressed);
                            metrics.duplicates_suppressed.inc();
                            info!(first = %task_id, "idempotency key already succeeded; not running again");
                            suppressed = Some(task_id);
                            (Outcome::Succeeded, Some(env))
                        }
                        Some(Begin::Busy { retry_after }) => {
                            WorkerStats::bump(&stats.deferred);
                            debug!(
                                ?retry_after,
                                "running elsewhere; trying again when its lease ends"
                            );
                            env.eta = Some(now.saturating_add(retry_after.as_millis() as u64));
                            (Outcome::Early(retry_after), Some(env))
                        }
                    }
                } else {
                    warn!("no handler registered for this task");
                    (Outcome::UnknownTask, Some(env))
                }
            }
        };
        match &outcome {
            Outcome::Succeeded if suppressed.is_none() => {
                WorkerStats::bump(&stats.succeeded);
                metrics.succeeded.inc();
            }
            Outcome::Failed(_) | Outcome::Panicked(_) | Outcome::TimedOut(_) => {
                WorkerStats::bump(&stats.failed);
                metrics.failed.inc();
            }
            _ => {}
        }
        let disposition = decide(&outcome, envelope.as_ref(), rand::random::<f64>());
        // The outcome is stored before anything is acked or published.
        if let (Some(store), Some(env)) = (&store, envelope.as_ref()) {
            if !self
                .store_outcome(
                    store,
                    env,
                    &outcome,
                    &disposition,
                    run.as_ref(),
                    RunEnd {
                        output,
                        unrecorded_start,
                    },
                )
                .await
            {
                // Shutting down while the store is unreachable: hand the
                // delivery back (a leased run's copy returns by itself).
                if lease.is_none() {
                    let _ = self.ack.send(AckMsg::Requeue(tag));
                }
                return;
            }
        }
        // A leased run's delivery is already acked and its channel may be
        // gone: settle through the live session's publisher.
        let publisher = match &lease {
            Some(_) => self.shared.publisher.borrow().clone(),
            None => Some(self.publisher.clone()),
        };
        if let (Some(env), Outcome::Succeeded) = (envelope.as_ref(), &outcome) {
            self.follow_up(env, suppressed.unwrap_or(env.id)).await;
        }
        // Workflow nodes: release dependents, or skip them, before the ack.
        if let (Some(store), Some(env)) = (&store, envelope.as_ref()) {
            let step = match (&outcome, &disposition) {
                (Outcome::Succeeded, _) => Some(true),
                (_, Disposition::DeadLetter { .. }) => Some(false),
                _ => None,
            };
            if let (Some(succeeded), Some(_)) = (step, &env.workflow) {
                let done = match &publisher {
                    Some(publisher) => {
                        let cx = coordinator::Context {
                            store,
                            publisher,
                            topology: &self.shared.config.topology,
                            declared: &self.shared.declared,
                            queue: &self.queue,
                            worker: &self.shared.config.worker_id,
                            signing: self.shared.config.signing.as_deref(),
                        };
                        if succeeded {
                            coordinator::release(&cx, env).await.map(|first| {
                                self.shared.metrics.workflow_releases.inc_by(first as u64);
                            })
                        } else {
                            coordinator::fail(&cx, env).await
                        }
                    }
                    None => Err("no broker connection".to_owned()),
                };
                if let Err(e) = done {
                    warn!(error = %e, "workflow step failed; handing the task back to run it again");
                    if lease.is_none() {
                        let _ = self.ack.send(AckMsg::Requeue(tag));
                    }
                    return;
                }
            }
        }
        let settled = match publisher {
            Some(publisher) => {
                self.settle(&publisher, &disposition, envelope.as_ref(), &delivery)
                    .await
            }
            None => Err("no broker connection to settle the task".to_owned()),
        };
        if settled.is_ok() {
            metrics.settled(&disposition);
        }
        match (settled, lease) {
            (Ok(()), None) => {
                let _ = self.ack.send(AckMsg::Finished(tag));
            }
            (Ok(()), Some(lease)) => lease.release(&self.shared.publisher).await,
            (Err(e), None) => {
                warn!(error = %e, "could not settle the task; handing it back to the queue");
                let _ = self.ack.send(AckMsg::Requeue(tag));
            }
            (Err(e), Some(lease)) => {
                // The parked copy stays and returns to the queue when the
                // lease runs out: the task is not lost.
                warn!(error = %e, lease = %lease.queue_name(), "could not settle a leased task; its lease will hand it back");
            }
        }
    }

    /// Asks the store whether to run. While another run holds the lease,
    /// the delivery is held (unacked, so a crash loop still counts toward
    /// the delivery limit) and asked again as the lease nears its end; a
    /// hold longer than half the consumer timeout is deferred through the
    /// delay cascade instead. `None` when the worker shuts down.
    async fn begin(&self, store: &Arc<dyn Store>, key: &str, token: &str) -> Option<Begin> {
        let held_since = tokio::time::Instant::now();
        loop {
            let begun = self.store_call("lease", || store.lease(key, token)).await?;
            let Begin::Busy { retry_after } = begun else {
                return Some(begun);
            };
            if held_since.elapsed() + retry_after > self.shared.config.lease_after {
                return Some(begun);
            }
            debug!(
                ?retry_after,
                "running elsewhere; holding the delivery until its lease ends"
            );
            let pause = retry_after.min(BUSY_RECHECK) + Duration::from_millis(5);
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// A store update for `env` entering `state`, written by this worker.
    fn update(&self, env: &Envelope, state: TaskState) -> Update {
        let mut update = Update::new(env.id, env.task.clone(), &*self.queue, state, env.attempt);
        update.worker = Some(self.shared.config.worker_id.to_string());
        update.idempotency_key = env.idempotency_key.clone();
        update.workflow_id = env.workflow.as_ref().map(|w| w.workflow_id.to_string());
        update
    }

    /// Calls the store until it answers; while it does not, the worker is
    /// not ready. `None` when the worker shuts down first.
    async fn store_call<T, F, Fut>(&self, op: &'static str, call: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = celeriac_schema::Result<T>>,
    {
        let stats = &self.shared.stats;
        let mut failures: u32 = 0;
        loop {
            match call().await {
                Ok(value) => {
                    if failures > 0 {
                        stats.store_down.store(false, Ordering::Relaxed);
                        info!(op, "state store reachable again");
                    }
                    return Some(value);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    WorkerStats::bump(&stats.store_errors);
                    stats.store_down.store(true, Ordering::Relaxed);
                    warn!(op, error = %e, attempt = failures, "state store call failed; holding the delivery and retrying");
                    tokio::select! {
                        _ = self.shared.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(reconnect_delay(failures)) => {}
                    }
                }
            }
        }
    }

    /// Stores what became of a delivery; `false` when the worker shut down
    /// before the store could take it.
    async fn store_outcome(
        &self,
        store: &Arc<dyn Store>,
        env: &Envelope,
        outcome: &Outcome,
        disposition: &Disposition,
        run: Option<&(String, String)>,
        RunEnd {
            output,
            unrecorded_start,
        }: RunEnd,
    ) -> bool {
        let mut update = match (outcome, disposition) {
            (Outcome::Succeeded, _) if run.is_some() => {
                let mut update = self.update(env, TaskState::Succeeded);
                if self.shared.registry.stores_result(&env.task) {
                    match output
                        .map(|v| celeriac_schema::store::encode_result(&v))
                        .transpose()
                    {
                        Ok(result) => update.result = result,
                        Err(e) => warn!(error = %e, "could not encode the result; storing none"),
                    }
                }
                update
            }
            (_, Disposition::Retry { .. }) => self.update(env, TaskState::Retrying),
            (Outcome::Expired, _) => {
                let mut update = self.update(env, TaskState::Revoked);
                update.error = Some(failure("Expired", "past its expiry before it could run"));
                update
            }
            (_, Disposition::DeadLetter { .. }) => self.update(env, TaskState::Failed),
            // Deferred, early or suppressed: nothing new to store.
            _ => return true,
        };
        if matches!(
            disposition,
            Disposition::Retry { .. } | Disposition::DeadLetter { .. }
        ) {
            let (error_type, message) = match (outcome, disposition) {
                (Outcome::Failed(err), _) => (err.kind().to_owned(), err.message().to_owned()),
                (Outcome::Panicked(message), _) => (crate::PANIC.to_owned(), message.clone()),
                (Outcome::TimedOut(limit), _) => (
                    crate::TIME_LIMIT.to_owned(),
                    format!("aborted at the hard time limit of {limit:?}"),
                ),
                (
                    _,
                    Disposition::DeadLetter {
                        error_type,
                        message,
                        ..
                    },
                ) => (error_type.clone(), message.clone()),
                _ => ("Unknown".to_owned(), String::new()),
            };
            update.error = Some(failure(&error_type, &message));
        }
        if run.is_some() {
            update.started_at_ms = unrecorded_start;
        }
        let stored = match run {
            Some((key, token)) => {
                self.store_call("finish", || store.finish(key, token, &update))
                    .await
            }
            None => {
                self.store_call("record", || store.record(std::slice::from_ref(&update)))
                    .await
            }
        };
        stored.is_some()
    }

    /// The steps after a success, repeated for a suppressed duplicate so a
    /// crash between them never stalls what comes next: the completion
    /// event.
    async fn follow_up(&self, env: &Envelope, succeeded_as: TaskId) {
        if !self.shared.config.events {
            return;
        }
        let event = TaskEvent {
            id: env.id.to_string(),
            task: env.task.clone(),
            state: TaskState::Succeeded,
            key: env.effective_idempotency_key(),
            succeeded_as: succeeded_as.to_string(),
            worker: self.shared.config.worker_id.to_string(),
            at: now_ms(),
        };
        let body = match rmp_serde::to_vec_named(&event) {
            Ok(body) => body,
            Err(e) => {
                warn!(error = %e, "could not encode the completion event");
                return;
            }
        };
        let exchange = self.shared.config.topology.events_exchange();
        let routing_key = format!("task.succeeded.{}", env.task);
        let props = BasicProperties::default()
            .with_content_type(celeriac_schema::CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_message_id(env.id.to_string().into());
        let sent = async {
            self.publisher
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    lapin::options::BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await?
                .await
        };
        if let Err(e) = sent.await {
            warn!(error = %e, "could not publish the completion event");
        }
    }

    /// Runs the handler under its hard time limit, catching panics, and
    /// swaps the delivery for a lease if it runs long.
    async fn execute(
        &self,
        handler: Arc<dyn crate::registry::ErasedHandler>,
        mut env: Envelope,
        delivery: &Delivery,
        tag: u64,
        store_run: Option<&(String, String)>,
        started_ms: u64,
    ) -> Executed {
        let config = &self.shared.config;
        let input = std::mem::replace(&mut env.input, rmpv::Value::Nil);
        let env = Arc::new(env);
        if env.attempt > 0 || delivery.redelivered {
            debug!(
                attempt = env.attempt,
                redelivered = delivery.redelivered,
                "running again"
            );
        }
        let ctx = TaskContext::new(
            env.clone(),
            self.queue.clone(),
            config.worker_id.clone(),
            Some(self.shared.spawner.clone()),
        );
        let hard_limit = env.hard_time_limit_ms.map(Duration::from_millis);
        let run = AssertUnwindSafe(handler.call(input, ctx)).catch_unwind();
        let run = async move {
            match hard_limit {
                Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| limit),
                None => Ok(run.await),
            }
        };
        tokio::pin!(run);
        let mut lease: Option<Lease> = None;
        let mut next_lease_check = tokio::time::Instant::now() + config.lease_after;
        // The store's run lease is renewed three times per TTL.
        let renew_every = config
            .store
            .as_ref()
            .map(|s| s.settings().lease_ttl / 3)
            .unwrap_or(Duration::from_secs(3600));
        let mut next_renewal = tokio::time::Instant::now() + renew_every;
        // A run of the store past STARTED_AFTER writes `started` on its own.
        let mut record_start = store_run.map(|_| tokio::time::Instant::now() + STARTED_AFTER);
        let mut start_recorded = false;
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                _ = tokio::time::sleep_until(record_start.unwrap_or(next_renewal)), if record_start.is_some() => {
                    record_start = None;
                    if let Some(store) = &config.store {
                        let mut update = self.update(&env, TaskState::Started);
                        update.at_ms = started_ms;
                        match store.started(&update).await {
                            Ok(()) => start_recorded = true,
                            Err(e) => warn!(error = %e, "could not record the start; the outcome will"),
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_renewal), if store_run.is_some() => {
                    if let (Some(store), Some((key, token))) = (&config.store, store_run) {
                        match store.renew(key, token).await {
                            Ok(true) => {}
                            Ok(false) => warn!("the run lease expired; another delivery of this task may run"),
                            Err(e) => warn!(error = %e, "could not renew the run lease"),
                        }
                    }
                    next_renewal = tokio::time::Instant::now() + renew_every;
                }
                _ = tokio::time::sleep_until(next_lease_check) => {
                    match &mut lease {
                        None => match self.start_lease(&env, delivery).await {
                            Ok(held) => {
                                let _ = self.ack.send(AckMsg::Finished(tag));
                                WorkerStats::bump(&self.shared.stats.leased);
                                info!(lease = %held.queue_name(), "long run: delivery swapped for a lease");
                                lease = Some(held);
                            }
                            Err(e) => warn!(error = %e, "could not take a lease for a long run"),
                        },
                        Some(held) => {
                            if let Err(e) = held.renew(&self.shared.publisher).await {
                                warn!(error = %e, "could not renew the lease of a long run");
                            }
                        }
                    }
                    next_lease_check = tokio::time::Instant::now() + config.lease_ttl / 3;
                }
            }
        };
        let mut output = None;
        let outcome = match result {
            Ok(Ok(Ok(value))) => {
                output = Some(value);
                Outcome::Succeeded
            }
            Ok(Ok(Err(err))) => {
                warn!(error = %err, attempt = env.attempt, "task failed");
                Outcome::Failed(err)
            }
            Ok(Err(panic)) => {
                let message = panic_message(panic.as_ref());
                warn!(%message, attempt = env.attempt, "task panicked");
                Outcome::Panicked(message)
            }
            Err(limit) => {
                warn!(
                    ?limit,
                    attempt = env.attempt,
                    "task hit its hard time limit"
                );
                Outcome::TimedOut(limit)
            }
        };
        let env = Arc::try_unwrap(env).unwrap_or_else(|shared| (*shared).clone());
        Executed {
            outcome,
            env,
            lease,
            output,
            start_recorded,
        }
    }

    async fn start_lease(&self, env: &Envelope, delivery: &Delivery) -> Result<Lease> {
        Lease::take(
            &self.publisher,
            &self.shared.config.topology,
            &self.queue,
            env.id,
            self.shared.config.lease_ttl,
            &delivery.data,
            delivery.properties.clone(),
        )
        .await
    }

    /// Makes the disposition durable: publishes the retry, delay or dead
    /// letter copy and waits for its confirm. The caller acks afterwards.
    async fn settle(
        &self,
        publisher: &Channel,
        disposition: &Disposition,
        envelope: Option<&Envelope>,
        delivery: &Delivery,
    ) -> std::result::Result<(), String> {
        let config = &self.shared.config;
        let stats = &self.shared.stats;
        match disposition {
            Disposition::Ack => Ok(()),
            Disposition::Retry { attempt, delay } => {
                // Rebuild from the body: the run took the input.
                let mut next =
                    decode_with(&delivery.data, &config.limits).map_err(|e| e.to_string())?;
                next.attempt = *attempt;
                next.eta = Some(now_ms().saturating_add(delay.as_millis() as u64));
                let body = celeriac_schema::encode(&next).map_err(|e| e.to_string())?;
                let route = publish::route(&config.topology, &self.queue, &next, now_ms())
                    .map_err(|e| e.to_string())?;
                let props =
                    publish::task_properties(&next, &self.queue, &body, config.signing.as_deref())
                        .map_err(|e| e.to_string())?;
                publish::publish_confirmed(publisher, &route, &body, props, &next.id.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
                WorkerStats::bump(&stats.retried);
                info!(attempt, ?delay, "retry scheduled");
                Ok(())
            }
            Disposition::Delay { delay } => {
                let env = envelope.ok_or("an early delivery without an envelope")?;
                // Routed by its ETA, like any delayed task.
                let route = publish::route(&config.topology, &self.queue, env, now_ms())
                    .map_err(|e| e.to_string())?;
                let id = env.id.to_string();
                publish::publish_confirmed(
                    publisher,
                    &route,
                    &delivery.data,
                    delivery.properties.clone(),
                    &id,
                )
                .await
                .map_err(|e| e.to_string())?;
                debug!(?delay, "arrived before its ETA; delayed again");
                Ok(())
            }
            Disposition::DeadLetter {
                reason,
                error_type,
                message,
            } => {
                let attempts = match (reason, envelope) {
                    (celeriac_schema::DeadLetterReason::UnknownTask, _) | (_, None) => 0,
                    (_, Some(env)) => i64::from(env.attempt) + 1,
                };
                let mut table = delivery.properties.headers().clone().unwrap_or_default();
                table.insert(headers::REASON.into(), long_string(reason.as_str()));
                table.insert(headers::ERROR_TYPE.into(), long_string(error_type));
                table.insert(
                    headers::ERROR_MESSAGE.into(),
                    long_string(headers::truncate_error_message(message)),
                );
                table.insert(
                    headers::FAILED_AT.into(),
                    AMQPValue::LongLongInt(now_ms() as i64),
                );
                table.insert(headers::WORKER.into(), long_string(&config.worker_id));
                table.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(attempts));
                table.insert(headers::QUEUE.into(), long_string(&self.queue));
                let props: BasicProperties = delivery.properties.clone().with_headers(table);
                let route = Route {
                    exchange: config.topology.dead_letter_exchange(),
                    routing_key: self.queue.to_string(),
                };
                let id = envelope.map(|e| e.id.to_string()).unwrap_or_default();
                publish::publish_confirmed(publisher, &route, &delivery.data, props, &id)
                    .await
                    .map_err(|e| e.to_string())?;
                WorkerStats::bump(&stats.dead_lettered);
                warn!(reason = reason.as_str(), %error_type, %message, "dead-lettered");
                Ok(())
            }
        }
    }
}

/// A failure as stored, its message truncated like the DLQ header.
fn failure(error_type: &str, message: &str) -> TaskFailure {
    TaskFailure {
        error_type: error_type.to_owned(),
        message: headers::truncate_error_message(message).to_owned(),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "the handler panicked".to_owned()
    }
}

/// A lifecycle event on the events exchange (routing key
/// `task.{state}.{task name}`).
#[derive(Debug, serde::Serialize)]
struct TaskEvent {
    id: String,
    task: String,
    state: TaskState,
    key: String,
    /// The task whose run succeeded with this key (differs from `id` for a
    /// suppressed duplicate sent under another id).
    succeeded_as: String,
    worker: String,
    at: u64,
}

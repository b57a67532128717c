//! The worker runtime: connect, declare, consume, run handlers, settle
//! deliveries, reconnect, shut down gracefully.
//!
//! By stage: [`builder`] checks the settings, [`session`] holds one broker
//! connection and its consumers, [`lane`] feeds one queue's deliveries to
//! jobs and batches their acks, and [`job`] takes one delivery through
//! decode, admission, run and settlement.

mod builder;
mod control;
mod events;
mod fair;
mod job;
mod lane;
mod policy;
mod purge;
mod session;
mod urgency;

pub use builder::WorkerBuilder;
pub use urgency::DEFAULT_URGENT_WEIGHT;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::tls::TlsOptions;
use celeriac_schema::signing::Keyring;
use celeriac_schema::store::Store;
use celeriac_schema::{DecodeLimits, Topology};
use lapin::Channel;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::http::HttpState;
use crate::metrics::WorkerMetrics;
use crate::registry::Registry;
use crate::stats::{StatsSnapshot, WorkerStats};
use session::connect;
/// Longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);
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
    /// Period of the worker's heartbeat.
    heartbeat: Duration,
    /// Urgent-first weighting and wait thresholds.
    urgency: urgency::Settings,
    /// Rate limits and pools set when the worker was built.
    policy: policy::PolicyFlags,
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
    /// What control commands act on.
    control: control::ControlPlane,
    /// Takes task events when they are on.
    events: Option<events::EventSink>,
    /// The purge marks of the store, read on a period.
    purges: Arc<purge::PurgeMarks>,
}

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

impl Worker {
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
                Arc::new(self.http_state()),
                http_stop.clone(),
            ));
        }
        if let Some(store) = &self.config.store {
            // Read once: a changed shard count applies from the next start.
            let topology = self.config.topology.clone();
            let topology = fair::with_store_fairness(&**store, topology).await;
            Arc::make_mut(&mut self.config).topology = topology;
        }
        let (publisher_tx, publisher_rx) = watch::channel(None);
        let events = self.config.events.then(|| {
            events::EventSink::start(
                self.config.topology.events_exchange(),
                publisher_rx.clone(),
                self.stats.clone(),
            )
        });
        let purges = Arc::new(purge::PurgeMarks::default());
        if let Some(store) = &self.config.store {
            // Before the first delivery; kept fresh while the worker runs.
            if let Err(e) = purges.refresh(&**store).await {
                warn!(error = %e, "cannot read the purge marks yet");
            }
            tokio::spawn(purge::keep_fresh(
                purges.clone(),
                store.clone(),
                http_stop.clone(),
            ));
        }
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
            control: control::ControlPlane::new(&self.config),
            events,
            purges,
        });
        let semaphore = shared.control.semaphore();
        // Revocations and limits held in the store apply from the first
        // delivery on.
        let loaded = tokio::time::timeout(Duration::from_secs(5), async {
            policy::start(&shared).await;
            control::heartbeat::sync_from_store(&shared).await
        });
        if loaded.await.is_err() {
            warn!(
                "the store did not answer for revocations and limits; they load on the next beat"
            );
        }
        let heartbeat_stop = CancellationToken::new();
        let _heartbeat_guard = heartbeat_stop.clone().drop_guard();
        {
            let shared = shared.clone();
            let stop = self.shutdown.clone();
            let guard = heartbeat_stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = control::heartbeat::run(shared, stop) => {}
                    _ = guard.cancelled() => {}
                }
            });
        }
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
            match connect(&self.config, &shared.control.queues.list()).await {
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

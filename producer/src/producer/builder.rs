//! Building a producer: connection, topology and defaults.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_schema::signing::Keyring;
use celeriac_schema::store::Store;
use celeriac_schema::topology::{validate_name, DEFAULT_NAMESPACE, DEFAULT_QUEUE};
use celeriac_schema::{DecodeLimits, Topology};

use super::{Inner, Producer};
use crate::error::{redact_url, Error, Result};
use crate::publish;
use crate::tls::TlsOptions;
use crate::topology::declare;

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
    pub(super) url: String,
    pub(super) namespace: String,
    pub(super) default_queue: String,
    pub(super) delivery_limit: Option<u32>,
    pub(super) pool_size: usize,
    pub(super) connect_timeout: Duration,
    pub(super) confirm_timeout: Duration,
    pub(super) max_body_bytes: usize,
    pub(super) store: Option<Arc<dyn Store>>,
    pub(super) signing: Option<Arc<Keyring>>,
    pub(super) tls: TlsOptions,
    pub(super) metrics: Option<Arc<crate::metrics::ProducerMetrics>>,
    pub(super) events: bool,
    pub(super) fair: Vec<(String, u64)>,
    pub(crate) admission: Vec<crate::admission::AdmissionLimit>,
    pub(super) failover: Option<Duration>,
    pub(super) store_retry: Duration,
    pub(super) leader_locator: Option<celeriac_schema::topology::LeaderLocator>,
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

    /// How long a send claims its idempotency keys again when the state
    /// store does not answer, for example while Sentinel promotes a new
    /// Redis primary (default 15 s; zero fails the send at once). A claim
    /// that reached the store before the connection broke is claimed again
    /// by the same task, so nothing is skipped.
    pub fn store_retry(mut self, budget: Duration) -> Self {
        self.store_retry = budget;
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

    /// Queue used when [`SendOptions::queue`](crate::SendOptions::queue) is not set (default `default`).
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
                store_retry: self.store_retry,
            }),
        };
        let channel = producer.channel().await?;
        declare(&channel, &producer.inner.topology.shared_declarations()).await?;
        producer.release(channel);
        producer.ensure_queue(&self.default_queue).await?;
        Ok(producer)
    }
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
            store_retry: crate::failover::DEFAULT_STORE_BUDGET,
            leader_locator: None,
        }
    }
}

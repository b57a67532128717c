//! The producer: a pooled, confirming publisher of typed tasks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_schema::signing::Keyring;
use celeriac_schema::store::{Store, Update};
use celeriac_schema::{now_ms, Envelope, Task, TaskId, TaskState, Topology};
use lapin::Channel;

use crate::error::Result;
use crate::handle::TaskHandle;
use crate::publish::{self, Route};
use crate::topology::declare;

mod builder;
mod channels;
mod fair;
mod prepare;
mod publishing;
mod send;
mod tolerance;
mod workflow;

pub use builder::ProducerBuilder;

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
    /// How long enqueue-key claims are retried while the store is away.
    store_retry: Duration,
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

    /// A handle on a task sent earlier, by id (kept from
    /// [`TaskHandle::id`] or from [`Producer::send_batch`]).
    pub fn handle<T: Task>(&self, id: TaskId) -> TaskHandle<T> {
        TaskHandle::new(id, self.inner.store.clone()).with_producer(self.clone())
    }

    /// The keyring this producer signs with, if any.
    pub fn signing(&self) -> Option<&Keyring> {
        self.inner.signing.as_deref()
    }

    /// The state store, if the producer has one.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.inner.store.as_ref()
    }
}

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

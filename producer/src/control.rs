//! The control plane, client side: broadcast a command to the workers of a
//! namespace and collect their replies, and revoke tasks.
//!
//! A request goes to the fanout exchange `{ns}.control`; every worker
//! answers through the default exchange to an exclusive reply queue this
//! client declares for the call. Collecting ends at the timeout, or as soon
//! as every worker named in the destination answered. With a keyring
//! ([`ProducerBuilder::signing`](crate::ProducerBuilder::signing)) requests
//! are signed, and workers that require signatures ignore unsigned ones.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(producer: celeriac_producer::Producer) -> celeriac_producer::Result<()> {
//! use celeriac_producer::control::ControlOptions;
//! use celeriac_schema::control::Command;
//!
//! let replies = producer.control(Command::Ping, &ControlOptions::new()).await?;
//! for reply in &replies.replies {
//!     println!("{} answered", reply.worker);
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use celeriac_schema::control::{Command, ControlReply, ControlRequest, KillSignal};
use celeriac_schema::signing::SIGNATURE_HEADER;
use celeriac_schema::store::{StoreSettings, Update};
use celeriac_schema::{now_ms, TaskId, TaskState};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::publish::long_string;
use crate::Producer;

/// The default time to wait for replies.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Who a control request is for and how long to wait for answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlOptions {
    /// Worker ids; `None` for every worker.
    pub destination: Option<Vec<String>>,
    /// How long to collect replies.
    pub timeout: Duration,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            destination: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl ControlOptions {
    /// Every worker, [`DEFAULT_TIMEOUT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Only these workers; collecting ends once all of them answered.
    pub fn destination<I, S>(mut self, workers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.destination = Some(workers.into_iter().map(Into::into).collect());
        self
    }

    /// How long to collect replies.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The replies to one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlReplies {
    /// One per worker that answered, in arrival order.
    pub replies: Vec<ControlReply>,
    /// Named destinations that did not answer in time.
    pub missing: Vec<String>,
}

impl ControlReplies {
    /// Whether some worker answered with an error.
    pub fn any_error(&self) -> bool {
        self.replies.iter().any(|r| !r.ok)
    }
}

/// How to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOptions {
    /// Also stop runs in progress.
    pub terminate: bool,
    /// The signal a stopped run gets (default TERM).
    pub signal: KillSignal,
    /// How long the revocation holds (default: the store's result TTL, one
    /// day).
    pub ttl: Duration,
    /// Who hears the broadcast and how long to wait for their answers.
    pub control: ControlOptions,
}

impl Default for RevokeOptions {
    fn default() -> Self {
        RevokeOptions {
            terminate: false,
            signal: KillSignal::Term,
            ttl: StoreSettings::DEFAULT_RESULT_TTL,
            control: ControlOptions::default(),
        }
    }
}

impl RevokeOptions {
    /// Queued tasks only, for a day.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also stop runs in progress, with `signal`.
    pub fn terminate(mut self, signal: KillSignal) -> Self {
        self.terminate = true;
        self.signal = signal;
        self
    }

    /// How long the revocation holds.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long to wait for the workers' acknowledgements.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.control.timeout = timeout;
        self
    }
}

/// What a revocation did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Revoked {
    /// Whether it was written to the store (durable; otherwise only the
    /// workers that heard the broadcast hold it).
    pub stored: bool,
    /// The workers' acknowledgements.
    pub replies: ControlReplies,
}

impl Producer {
    /// Broadcasts `command` and collects the replies (see the
    /// [module documentation](self)).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] / [`Error::Amqp`] when the broker cannot be
    /// used; no reply is not an error (see [`ControlReplies::missing`]).
    pub async fn control(
        &self,
        command: Command,
        options: &ControlOptions,
    ) -> Result<ControlReplies> {
        let mut request = ControlRequest::new(command);
        request.destination = options.destination.clone();
        let body = request.encode()?;
        let connection = self.connection().await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(Error::amqp("opening a control channel"))?;
        let reply_queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(Error::amqp("declaring a reply queue"))?;
        let reply_to = reply_queue.name().as_str().to_owned();
        let mut consumer = channel
            .basic_consume(
                reply_to.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(Error::amqp("consuming the reply queue"))?;
        let mut headers = FieldTable::default();
        if let Some(keyring) = self.signing() {
            let signature =
                celeriac_schema::control::sign_request(keyring, &body, &request.id, &reply_to);
            headers.insert(SIGNATURE_HEADER.into(), long_string(&signature));
        }
        let props = BasicProperties::default()
            .with_content_type(celeriac_schema::CONTENT_TYPE.into())
            .with_correlation_id(request.id.as_str().into())
            .with_reply_to(reply_to.as_str().into())
            .with_message_id(request.id.as_str().into())
            .with_type(request.command.name().into())
            .with_timestamp(now_ms() / 1000)
            .with_headers(headers);
        channel
            .basic_publish(
                self.topology().control_exchange().as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .map_err(Error::amqp("publishing a control request"))?;
        let mut replies = ControlReplies::default();
        let deadline = tokio::time::Instant::now() + options.timeout;
        let mut waiting: Option<Vec<String>> = options.destination.clone();
        loop {
            if waiting.as_ref().is_some_and(Vec::is_empty) {
                break;
            }
            let next = tokio::time::timeout_at(deadline, consumer.next()).await;
            let Ok(Some(Ok(delivery))) = next else {
                break;
            };
            let correlated = delivery
                .properties
                .correlation_id()
                .as_ref()
                .is_some_and(|c| c.as_str() == request.id);
            if !correlated {
                continue;
            }
            match ControlReply::decode(&delivery.data) {
                Ok(reply) => {
                    if replies.replies.iter().any(|r| r.worker == reply.worker) {
                        continue;
                    }
                    if let Some(waiting) = waiting.as_mut() {
                        waiting.retain(|w| *w != reply.worker);
                    }
                    replies.replies.push(reply);
                }
                Err(e) => warn!(error = %e, "an unreadable control reply; ignored"),
            }
        }
        replies.missing = waiting.unwrap_or_default();
        if let Err(e) = channel.close(200, "control call done".into()).await {
            debug!(error = %e, "closing the control channel");
        }
        Ok(replies)
    }

    /// Revokes task ids, workflow ids or idempotency keys: written to the
    /// store with a TTL when the producer has one (so workers started
    /// later, and tasks still waiting in a delay queue, honour it), and
    /// broadcast to every worker. A revoked task that has not started never
    /// runs: it is acked and recorded `revoked`; with
    /// [`RevokeOptions::terminate`] a running one is stopped too. A revoked
    /// workflow node skips its dependents, as a failure does.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for no ids; the store's or the broker's
    /// errors.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(producer: celeriac_producer::Producer, id: celeriac_schema::TaskId) -> celeriac_producer::Result<()> {
    /// use celeriac_producer::control::RevokeOptions;
    /// use celeriac_schema::control::KillSignal;
    ///
    /// let done = producer
    ///     .revoke(&[id.to_string()], &RevokeOptions::new().terminate(KillSignal::Term))
    ///     .await?;
    /// println!("{} workers acknowledged", done.replies.replies.len());
    /// # Ok(()) }
    /// ```
    pub async fn revoke(&self, ids: &[String], options: &RevokeOptions) -> Result<Revoked> {
        if ids.is_empty() || ids.iter().any(String::is_empty) {
            return Err(Error::InvalidOptions(
                "revoke needs task ids, workflow ids or idempotency keys".into(),
            ));
        }
        let expires_at = now_ms().saturating_add(options.ttl.as_millis() as u64);
        let mut stored = false;
        if let Some(store) = self.store() {
            store.revoke(ids, expires_at).await?;
            stored = true;
            self.mark_waiting_revoked(ids).await;
        }
        let replies = self
            .control(
                Command::Revoke {
                    ids: ids.to_vec(),
                    terminate: options.terminate,
                    signal: options.signal,
                    expires_at,
                },
                &options.control,
            )
            .await?;
        Ok(Revoked { stored, replies })
    }

    /// Records `revoked` at once for revoked task ids still waiting in a
    /// queue, so their handles answer now; a worker that picks one up
    /// acks it without running it.
    async fn mark_waiting_revoked(&self, ids: &[String]) {
        let Some(store) = self.store() else { return };
        for id in ids {
            let Ok(task_id) = id.parse::<TaskId>() else {
                continue;
            };
            let record = match store.get(task_id).await {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(e) => {
                    warn!(task_id = %task_id, error = %e, "cannot read a revoked task's record");
                    continue;
                }
            };
            if !matches!(
                record.state,
                TaskState::Created | TaskState::Queued | TaskState::Retrying
            ) {
                continue;
            }
            let mut update = Update::new(
                task_id,
                record.task,
                record.queue,
                TaskState::Revoked,
                record.attempt,
            );
            update.idempotency_key = record.idempotency_key;
            update.workflow_id = record.workflow_id;
            update.error = Some(celeriac_schema::store::TaskFailure {
                error_type: "Revoked".into(),
                message: "revoked before it ran".into(),
            });
            if let Err(e) = store.record(std::slice::from_ref(&update)).await {
                warn!(task_id = %task_id, error = %e, "cannot record a revoked task");
            }
        }
    }
}

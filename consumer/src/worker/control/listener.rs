//! The listener on a worker's control queue: one per session, on a channel
//! of its own. It declares `{ns}.control.{worker id}` (exclusive,
//! auto-delete, bound to the fanout exchange `{ns}.control`), consumes it
//! without acks, and answers each request addressed to this worker through
//! the default exchange to the request's `reply_to`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use celeriac_schema::control::{verify_request, Command, ControlReply, ControlRequest, MAX_SKEW};
use celeriac_schema::now_ms;
use celeriac_schema::signing::SIGNATURE_HEADER;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::inspect;
use crate::worker::Shared;

/// The control queue's channel and consumer.
pub(crate) struct Listener {
    channel: Channel,
    consumer: Consumer,
}

/// The name of a worker's control queue.
pub(crate) fn queue_name(shared: &Shared) -> String {
    format!(
        "{}.{}",
        shared.config.topology.control_exchange(),
        shared.config.worker_id
    )
}

impl Listener {
    /// Declares and binds the control queue and starts consuming it.
    pub(crate) async fn start(connection: &Connection, shared: &Shared) -> lapin::Result<Listener> {
        let channel = connection.create_channel().await?;
        let queue = queue_name(shared);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                shared.config.topology.control_exchange().as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("{}/control", shared.config.worker_id).into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Listener { channel, consumer })
    }

    /// Answers requests until the session ends.
    pub(crate) async fn run(
        mut self,
        shared: Arc<Shared>,
        connection: Arc<Connection>,
        session: CancellationToken,
    ) {
        loop {
            let delivery = tokio::select! {
                _ = session.cancelled() => break,
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(e)) => {
                        warn!(error = %e, "the control queue's consumer failed; control requests wait for the next session");
                        break;
                    }
                    None => break,
                },
            };
            let props = &delivery.properties;
            let reply_to = props.reply_to().as_ref().map(|s| s.as_str().to_owned());
            let correlation = props
                .correlation_id()
                .as_ref()
                .map(|s| s.as_str().to_owned());
            let Some(request) = admit(&shared, &delivery) else {
                continue;
            };
            if !request.is_for(&shared.config.worker_id) {
                continue;
            }
            let name = request.command.name();
            info!(command = name, request = %request.id, "control request");
            let reply = match run_command(&shared, &connection, request.command).await {
                Ok(result) => ControlReply::ok(&shared.config.worker_id, result),
                Err(e) => {
                    warn!(command = name, error = %e, "control command failed");
                    ControlReply::error(&shared.config.worker_id, e)
                }
            };
            if let (Some(reply_to), Some(correlation)) = (reply_to, correlation) {
                self.reply(&reply_to, &correlation, &reply).await;
            }
        }
        let _ = self.channel.close(200, "worker stopping".into()).await;
    }

    async fn reply(&self, reply_to: &str, correlation: &str, reply: &ControlReply) {
        let body = match reply.encode() {
            Ok(body) => body,
            Err(e) => {
                warn!(error = %e, "cannot encode a control reply");
                return;
            }
        };
        let props = BasicProperties::default()
            .with_content_type(celeriac_schema::CONTENT_TYPE.into())
            .with_correlation_id(correlation.into());
        let sent = self
            .channel
            .basic_publish(
                "".into(),
                reply_to.into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await;
        if let Err(e) = sent {
            debug!(error = %e, "cannot send a control reply");
        }
    }
}

/// Decodes a request, and with signing verifies it and refuses replays;
/// `None` (logged and counted) for one not to act on.
fn admit(shared: &Shared, delivery: &lapin::message::Delivery) -> Option<ControlRequest> {
    let props = &delivery.properties;
    let refuse = |why: &str| {
        shared.control.refused.fetch_add(1, Ordering::Relaxed);
        shared.metrics.control_refused.inc();
        warn!(reason = why, "control request refused: not run");
    };
    if let Some(keyring) = shared.config.signing.as_deref() {
        let signature = celeriac_producer::signing::signature_header(props.headers().as_ref())
            .ok()
            .flatten();
        let correlation = props.correlation_id().as_ref().map_or("", |s| s.as_str());
        let reply_to = props.reply_to().as_ref().map_or("", |s| s.as_str());
        if let Err(e) = verify_request(keyring, signature, &delivery.data, correlation, reply_to) {
            refuse(&format!("{SIGNATURE_HEADER}: {e}"));
            return None;
        }
    }
    let request = match ControlRequest::decode(&delivery.data) {
        Ok(request) => request,
        Err(e) => {
            warn!(error = %e, "an unreadable control request; ignored");
            return None;
        }
    };
    if shared.config.signing.is_some() {
        let now = now_ms();
        let skew = now.abs_diff(request.sent_at);
        if skew > MAX_SKEW.as_millis() as u64 {
            refuse("sent too long ago (or in the future): a replay?");
            return None;
        }
        if !shared.control.first_sight(&request.id, now) {
            refuse("seen before: a replay");
            return None;
        }
    }
    Some(request)
}

/// Runs one command; its result, or why it failed.
async fn run_command(
    shared: &Arc<Shared>,
    connection: &Connection,
    command: Command,
) -> Result<rmpv::Value, String> {
    let control = &shared.control;
    match command {
        Command::Ping => Ok(rmpv::Value::from("pong")),
        Command::Inspect { what } => inspect::inspect(shared, connection, what).await,
        Command::Shutdown => {
            info!("shutdown requested by a control command");
            shared.shutdown.cancel();
            Ok(rmpv::Value::from("shutting down"))
        }
        Command::SetConcurrency { concurrency } => {
            if concurrency == 0 {
                return Err("concurrency must be at least 1".into());
            }
            control.pool.set(concurrency as usize);
            info!(concurrency, "concurrency changed");
            to_value(&serde_json::json!({ "concurrency": concurrency }))
        }
        Command::AddConsumer { queue } | Command::CancelConsumer { queue }
            if celeriac_schema::topology::validate_name("queue", &queue).is_err() =>
        {
            Err(format!("invalid queue name {queue:?}"))
        }
        Command::AddConsumer { queue } => {
            let changed = control.queues.change(&queue, true).await?;
            to_value(&serde_json::json!({ "queue": queue, "changed": changed }))
        }
        Command::CancelConsumer { queue } => {
            let changed = control.queues.change(&queue, false).await?;
            to_value(&serde_json::json!({ "queue": queue, "changed": changed }))
        }
        command @ (Command::RateLimit { .. } | Command::TimeLimit { .. }) => {
            control.limits.apply(&command)?;
            info!(?command, "task limit changed");
            Ok(rmpv::Value::from("ok"))
        }
        Command::Revoke {
            ids,
            terminate,
            signal,
            expires_at,
        } => {
            control
                .revoked
                .add(ids.iter().map(|id| (id.as_str(), expires_at)));
            let terminated = if terminate {
                control.jobs.cancel_matching(&ids, signal)
            } else {
                0
            };
            info!(?ids, terminated, "revoked");
            to_value(&serde_json::json!({ "revoked": ids.len(), "terminated": terminated }))
        }
        other => Err(format!(
            "command {} is not supported by this worker",
            other.name()
        )),
    }
}

/// A serialisable value as a MessagePack value with named fields.
pub(super) fn to_value<T: serde::Serialize>(value: &T) -> Result<rmpv::Value, String> {
    celeriac_schema::to_value(value).map_err(|e| e.to_string())
}

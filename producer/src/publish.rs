//! Publishing envelopes: AMQP properties, headers, routing (immediate or
//! through the delay cascade) and publisher confirms.
//!
//! The producer and the worker (for retries and dead letters) publish
//! through these functions, so a task looks the same whoever sent it.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use celeriac_schema::signing::Keyring;
use celeriac_schema::{headers, Envelope, Topology, CONTENT_TYPE};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use lapin::{Confirmation, PublisherConfirm};

use crate::error::{Error, Result};

/// How long to wait for a publisher confirm before giving up.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a message goes: exchange and routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The exchange to publish to.
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
}

/// The route of `envelope` to logical queue `queue` at time `now_ms`: the
/// work exchange when it may run now, else the delay cascade for the time
/// left until its ETA.
///
/// # Errors
///
/// [`Error::Schema`] when the ETA is further away than the longest delay.
///
/// # Examples
///
/// ```
/// use celeriac_producer::publish::route;
/// use celeriac_schema::{Envelope, Topology};
///
/// let topo = Topology::new("demo").unwrap();
/// let mut env = Envelope::new("ping", rmpv::Value::Nil);
/// assert_eq!(route(&topo, "default", &env, 0).unwrap().exchange, "demo.work");
/// env.eta = Some(2_000);
/// assert_eq!(route(&topo, "default", &env, 0).unwrap().exchange, "demo.delay.04");
/// env.eta = None;
/// env.tolerance_ms = Some(60_000);
/// let now = env.created_at;
/// assert_eq!(route(&topo, "default", &env, now).unwrap().routing_key, "default.tol.2");
/// ```
pub fn route(topology: &Topology, queue: &str, envelope: &Envelope, now_ms: u64) -> Result<Route> {
    let wait = envelope.wait_before_run(now_ms);
    // A deferrable task goes to its tolerance class (SPEC.md section 19),
    // an urgent one with a tenant on a fair queue to its shard (section 21).
    let class = envelope
        .tolerance_ms
        .map(|_| topology.urgency_key(queue, envelope, now_ms));
    let target = match class {
        Some(class) if class != queue => std::borrow::Cow::Owned(class),
        _ => topology.route_name(queue, envelope.tenant.as_deref()),
    };
    Ok(match topology.delay_route(&target, wait)? {
        Some(delay) => Route {
            exchange: delay.exchange,
            routing_key: delay.routing_key,
        },
        None => Route {
            exchange: topology.work_exchange(),
            routing_key: target.into_owned(),
        },
    })
}

/// The headers every task message carries.
pub fn envelope_headers(envelope: &Envelope, queue: &str) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(headers::TASK.into(), long_string(&envelope.task));
    table.insert(
        headers::ATTEMPT.into(),
        AMQPValue::LongLongInt(i64::from(envelope.attempt)),
    );
    table.insert(
        headers::IDEMPOTENCY_KEY.into(),
        long_string(&envelope.effective_idempotency_key()),
    );
    table.insert(headers::QUEUE.into(), long_string(queue));
    if let Some(workflow) = &envelope.workflow {
        table.insert(
            headers::WORKFLOW_ID.into(),
            long_string(&workflow.workflow_id.to_string()),
        );
    }
    if let Some(group) = &envelope.continuation.group {
        table.insert(
            headers::GROUP_ID.into(),
            long_string(&group.group_id.to_string()),
        );
    }
    if let Some(chord) = &envelope.continuation.chord {
        table.insert(
            headers::CHORD_ID.into(),
            long_string(&chord.chord_id.to_string()),
        );
    }
    table
}

/// AMQP properties of a task message: `message_id` = task id, MessagePack
/// content type, persistent, `timestamp` (seconds), `type` = task name.
pub fn envelope_properties(envelope: &Envelope, headers: FieldTable) -> BasicProperties {
    properties_with_id(envelope, envelope.id.to_string(), headers)
}

/// The properties and headers of a task message with body `body` (the
/// encoded `envelope`) for logical queue `queue`, signed with the signing
/// key of `signing` when one is given (see [`crate::signing`]).
///
/// # Errors
///
/// [`Error::Schema`] when a header cannot be signed (never for the
/// headers this crate writes).
///
/// # Examples
///
/// ```
/// use celeriac_producer::publish::task_properties;
/// use celeriac_schema::signing::Keyring;
/// use celeriac_schema::{encode, Envelope};
///
/// let env = Envelope::new("ping", rmpv::Value::Nil);
/// let body = encode(&env).unwrap();
/// let ring = Keyring::new("k1", &[5; 32]).unwrap();
/// let props = task_properties(&env, "default", &body, Some(&ring)).unwrap();
/// let headers = props.headers().clone().unwrap();
/// assert!(headers.contains_key("celeriac-signature"));
/// let plain = task_properties(&env, "default", &body, None).unwrap();
/// assert!(!plain.headers().clone().unwrap().contains_key("celeriac-signature"));
/// ```
pub fn task_properties(
    envelope: &Envelope,
    queue: &str,
    body: &[u8],
    signing: Option<&Keyring>,
) -> Result<BasicProperties> {
    let mut headers = envelope_headers(envelope, queue);
    let id = envelope.id.to_string();
    if let Some(keyring) = signing {
        crate::signing::sign_headers(keyring, &id, &mut headers, body)
            .map_err(celeriac_schema::Error::from)?;
    }
    Ok(properties_with_id(envelope, id, headers))
}

fn properties_with_id(envelope: &Envelope, id: String, headers: FieldTable) -> BasicProperties {
    let props = BasicProperties::default()
        .with_message_id(id.into())
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_timestamp(envelope.created_at / 1000)
        .with_type(envelope.task.as_str().into())
        .with_headers(headers);
    if envelope.priority > 0 {
        props.with_priority(envelope.priority)
    } else {
        props
    }
}

/// A string header value.
pub fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// Publishes with the mandatory flag and returns the pending confirm; await
/// it with [`check_confirm`]. The channel must be in confirm mode.
///
/// # Errors
///
/// [`Error::Amqp`] when the channel is closed.
pub async fn publish(
    channel: &Channel,
    route: &Route,
    body: &[u8],
    properties: BasicProperties,
) -> Result<PublisherConfirm> {
    channel
        .basic_publish(
            route.exchange.as_str().into(),
            route.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
        .map_err(Error::amqp("publishing"))
}

/// A publish already queued on its channel (its frames and its confirm's
/// delivery tag taken, in call order) whose frames the connection may not
/// have written yet; it resolves to the confirm to wait for.
pub(crate) type Queued = Pin<Box<dyn Future<Output = Result<PublisherConfirm>> + Send>>;

/// Queues a publish on `channel` and returns without waiting for the
/// connection to write it, so the publishes of a batch go out together
/// instead of one hand-over to the connection's thread each.
///
/// The first poll of lapin's publish takes the delivery tag and queues the
/// frames before it waits for the write, so publishes started one after
/// another keep their order on the channel.
///
/// # Errors
///
/// [`Error::Amqp`] when the channel is closed.
pub(crate) async fn queue_publish(
    channel: &Channel,
    route: &Route,
    body: Vec<u8>,
    properties: BasicProperties,
) -> Result<Queued> {
    let channel = channel.clone();
    let exchange = route.exchange.as_str().into();
    let routing_key = route.routing_key.as_str().into();
    let mut publish: Queued = Box::pin(async move {
        channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                properties,
            )
            .await
            .map_err(Error::amqp("publishing"))
    });
    match futures_util::poll!(publish.as_mut()) {
        Poll::Pending => Ok(publish),
        Poll::Ready(done) => {
            done.map(|confirm| Box::pin(std::future::ready(Ok(confirm))) as Queued)
        }
    }
}

/// Waits for a confirm and turns a returned or nacked message into an error.
///
/// # Errors
///
/// [`Error::Unroutable`], [`Error::Nacked`], [`Error::ConfirmTimeout`] or
/// [`Error::Amqp`].
pub async fn check_confirm(
    pending: PublisherConfirm,
    task_id: &str,
    route: &Route,
    timeout: Duration,
) -> Result<()> {
    let confirmation = tokio::time::timeout(timeout, pending)
        .await
        .map_err(|_| Error::ConfirmTimeout { after: timeout })?
        .map_err(Error::amqp("waiting for a publisher confirm"))?;
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(Error::Unroutable {
                task_id: task_id.to_owned(),
                exchange: route.exchange.clone(),
                routing_key: route.routing_key.clone(),
                reply: format!("{} {}", returned.reply_code, returned.reply_text),
            })
        }
        Confirmation::Nack(None) => Err(Error::Nacked {
            task_id: task_id.to_owned(),
        }),
    }
}

/// Publishes and waits for the broker's confirm.
///
/// # Errors
///
/// See [`publish`] and [`check_confirm`].
pub async fn publish_confirmed(
    channel: &Channel,
    route: &Route,
    body: &[u8],
    properties: BasicProperties,
    task_id: &str,
) -> Result<()> {
    let pending = publish(channel, route, body, properties).await?;
    check_confirm(pending, task_id, route, DEFAULT_CONFIRM_TIMEOUT).await
}

//! Looking into queues and at the headers of the messages taken from them.

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

/// Ready messages and consumers of a queue, from a passive declare. A
/// missing queue is an error, and closes `channel`.
///
/// # Errors
///
/// The broker's refusal, typically `NOT_FOUND`.
pub async fn queue_stats(channel: &Channel, queue: &str) -> lapin::Result<(u32, u32)> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((q.message_count(), q.consumer_count()))
}

/// Messages ready in a queue (0 when it does not exist).
pub async fn queue_len(channel: &Channel, queue: &str) -> u32 {
    queue_stats(channel, queue)
        .await
        .map_or(0, |(ready, _)| ready)
}

/// Takes every message out of a queue (acked).
///
/// # Panics
///
/// When the broker refuses.
pub async fn drain(channel: &Channel, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let mut out = Vec::new();
    while let Some(msg) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap_or_else(|e| panic!("basic.get on {queue}: {e}"))
    {
        out.push(msg);
    }
    out
}

/// A header of a message taken with `basic.get`.
///
/// # Panics
///
/// When the message has no header `name`.
pub fn header<'a>(msg: &'a lapin::message::BasicGetMessage, name: &str) -> &'a AMQPValue {
    msg.delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|table| table.inner().get(name))
        .unwrap_or_else(|| panic!("the message carries no {name} header"))
}

/// A string header (long or short) of a message taken with `basic.get`.
///
/// # Panics
///
/// When the header is missing or not a string.
pub fn header_str(msg: &lapin::message::BasicGetMessage, name: &str) -> String {
    match header(msg, name) {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => panic!("header {name} is not a string: {other:?}"),
    }
}

/// An integer header, of any AMQP integer type, of a message taken with
/// `basic.get`.
///
/// # Panics
///
/// When the header is missing or not an integer.
pub fn header_int(msg: &lapin::message::BasicGetMessage, name: &str) -> i64 {
    match header(msg, name) {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        other => panic!("header {name} is not an integer: {other:?}"),
    }
}

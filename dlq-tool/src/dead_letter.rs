//! A dead letter as read from a dead-letter queue: its body, properties and
//! headers, and the failure details found in them.
//!
//! Dead letters arrive two ways (see `broker-schema/SPEC.md`, section 6):
//!
//! - published by a worker, with `celeriac-reason`, `celeriac-error-type`,
//!   `celeriac-failed-at` and friends, and `celeriac-queue`;
//! - dead-lettered by the broker itself when a work queue's delivery limit
//!   is reached: then there is no `celeriac-reason`, but the broker's
//!   `x-death` table (reason `delivery_limit`, the queue, the time) and
//!   `x-first-death-reason`.
//!
//! [`DeadLetter`] reads both into the same fields.

use celeriac_schema::{headers, DecodeLimits, Envelope};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

/// The tool's own header: when the message was last replayed, Unix ms.
pub const REPLAYED_AT: &str = "celeriac-replayed-at";
/// The tool's own header: how many times the message has been replayed.
pub const REPLAY_COUNT: &str = "celeriac-replay-count";

/// The reason given to a broker dead letter whose `x-death` reason is
/// `delivery_limit`.
pub const DELIVERY_LIMIT: &str = "delivery-limit";

/// One dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The logical queue whose dead-letter queue held it.
    pub dlq_queue: String,
    /// The logical work queue it failed on: `celeriac-queue`, else the
    /// queue named by `x-death`, else `dlq_queue`.
    pub queue: String,
    /// The task id: the `message_id` property (the body's `id` otherwise).
    pub task_id: Option<String>,
    /// The task name: `celeriac-task`, else the `type` property.
    pub task: Option<String>,
    /// The dead-letter reason: `celeriac-reason`, else `delivery-limit` (or
    /// the broker's own reason) from `x-death`.
    pub reason: Option<String>,
    /// `celeriac-error-type`.
    pub error_type: Option<String>,
    /// `celeriac-error-message`.
    pub error_message: Option<String>,
    /// When it was dead-lettered, Unix ms: `celeriac-failed-at`, else the
    /// `x-death` time.
    pub failed_at: Option<u64>,
    /// `celeriac-worker`.
    pub worker: Option<String>,
    /// `celeriac-attempts`: runs before it was dead-lettered.
    pub attempts: Option<i64>,
    /// `celeriac-replay-count`: replays so far (0 when never replayed).
    pub replay_count: i64,
    /// The `count` of the first `x-death` entry, for broker dead letters.
    pub death_count: Option<i64>,
    /// The message's AMQP properties, headers included.
    pub properties: BasicProperties,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

impl DeadLetter {
    /// Reads a message taken from the dead-letter queue of `dlq_queue`.
    ///
    /// `namespace` is used to turn an `x-death` queue name (`{ns}.q.{queue}`)
    /// back into a logical queue name.
    pub fn new(
        dlq_queue: &str,
        namespace: &str,
        properties: BasicProperties,
        body: Vec<u8>,
    ) -> DeadLetter {
        let empty = FieldTable::default();
        let table = properties.headers().as_ref().unwrap_or(&empty);
        let death = first_death(table);
        let death_str = |key: &str| death.and_then(|d| get_str(d, key));

        let work_prefix = format!("{namespace}.q.");
        let queue = get_str(table, headers::QUEUE)
            .or_else(|| {
                death_str("queue").and_then(|q| q.strip_prefix(&work_prefix).map(str::to_owned))
            })
            .or_else(|| {
                get_str(table, "x-first-death-queue")
                    .and_then(|q| q.strip_prefix(&work_prefix).map(str::to_owned))
            })
            .unwrap_or_else(|| dlq_queue.to_owned());

        let reason = get_str(table, headers::REASON).or_else(|| {
            death_str("reason")
                .or_else(|| get_str(table, "x-first-death-reason"))
                .map(|r| broker_reason(&r))
        });
        let failed_at = get_int(table, headers::FAILED_AT)
            .and_then(|ms| u64::try_from(ms).ok())
            .or_else(|| {
                death
                    .and_then(|d| d.inner().get("time"))
                    .and_then(int_value)
                    .and_then(|s| u64::try_from(s).ok())
                    .map(|s| s.saturating_mul(1000))
            });
        let task = get_str(table, headers::TASK)
            .or_else(|| properties.kind().as_ref().map(|t| t.as_str().to_owned()));
        let task_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned());

        DeadLetter {
            dlq_queue: dlq_queue.to_owned(),
            queue,
            task_id,
            task,
            reason,
            error_type: get_str(table, headers::ERROR_TYPE),
            error_message: get_str(table, headers::ERROR_MESSAGE),
            failed_at,
            worker: get_str(table, headers::WORKER),
            attempts: get_int(table, headers::ATTEMPTS),
            replay_count: get_int(table, REPLAY_COUNT).unwrap_or(0),
            death_count: death
                .and_then(|d| d.inner().get("count"))
                .and_then(int_value),
            properties,
            body,
        }
    }

    /// Fills what the headers left out (task id, task name) from the body,
    /// when it decodes.
    pub fn fill_from_body(&mut self) {
        if self.task_id.is_some() && self.task.is_some() {
            return;
        }
        if let Ok(env) = self.envelope() {
            self.task_id.get_or_insert_with(|| env.id.to_string());
            self.task.get_or_insert(env.task);
        }
    }

    /// Decodes the body with the workers' limits.
    ///
    /// # Errors
    ///
    /// The decode error, which names the field at fault.
    pub fn envelope(&self) -> celeriac_schema::Result<Envelope> {
        celeriac_schema::decode_with(&self.body, &DecodeLimits::default())
    }

    /// The headers (empty when the message has none).
    pub fn headers(&self) -> FieldTable {
        self.properties.headers().clone().unwrap_or_default()
    }
}

/// The first (most recent) entry of the broker's `x-death` array.
fn first_death(table: &FieldTable) -> Option<&FieldTable> {
    match table.inner().get("x-death")? {
        AMQPValue::FieldArray(entries) => entries.as_slice().iter().find_map(|v| match v {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

/// Our name for a broker dead-letter reason: `delivery_limit` is
/// `delivery-limit`; others (`expired`, `maxlen`, `rejected`) are prefixed
/// `broker-` so they are not mistaken for a worker's reason.
fn broker_reason(reason: &str) -> String {
    match reason {
        "delivery_limit" => DELIVERY_LIMIT.to_owned(),
        other => format!("broker-{other}"),
    }
}

/// A string header (long or short string, UTF-8, lossily).
pub fn get_str(table: &FieldTable, key: &str) -> Option<String> {
    match table.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// An integer header in any AMQP integer type.
pub fn get_int(table: &FieldTable, key: &str) -> Option<i64> {
    table.inner().get(key).and_then(int_value)
}

/// An AMQP integer (of any width) or timestamp as `i64`.
pub fn int_value(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    fn props(table: FieldTable) -> BasicProperties {
        BasicProperties::default().with_headers(table)
    }

    #[test]
    fn worker_dead_letter() {
        let mut t = FieldTable::default();
        t.insert(
            headers::REASON.into(),
            AMQPValue::LongString("rejected".into()),
        );
        t.insert(
            headers::QUEUE.into(),
            AMQPValue::LongString("emails".into()),
        );
        t.insert(headers::FAILED_AT.into(), AMQPValue::LongUInt(1234));
        t.insert(headers::ATTEMPTS.into(), AMQPValue::ShortShortUInt(3));
        let dl = DeadLetter::new("emails", "ns", props(t), vec![1]);
        assert_eq!(dl.reason.as_deref(), Some("rejected"));
        assert_eq!(dl.queue, "emails");
        assert_eq!(dl.failed_at, Some(1234));
        assert_eq!(dl.attempts, Some(3));
    }

    #[test]
    fn broker_dead_letter() {
        let mut death = FieldTable::default();
        death.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        death.insert("queue".into(), AMQPValue::LongString("ns.q.work".into()));
        death.insert("time".into(), AMQPValue::Timestamp(10));
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        let mut t = FieldTable::default();
        t.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        let dl = DeadLetter::new("other", "ns", props(t), vec![]);
        assert_eq!(dl.reason.as_deref(), Some(DELIVERY_LIMIT));
        assert_eq!(dl.queue, "work");
        assert_eq!(dl.failed_at, Some(10_000));
        assert_eq!(dl.death_count, Some(1));
    }

    #[test]
    fn no_headers() {
        let dl = DeadLetter::new("q", "ns", BasicProperties::default(), vec![]);
        assert_eq!(dl.queue, "q");
        assert_eq!(dl.reason, None);
        assert_eq!(dl.replay_count, 0);
    }
}

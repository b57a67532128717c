//! The event stream: what producers and workers announce on the events
//! exchange `{ns}.events` (SPEC.md section 17).
//!
//! Two families share the exchange, told apart by the routing key and by
//! the body's `kind`:
//!
//! - **Task events** ([`TaskEvent`]), routing key `task.{kind}.{task name}`
//!   with `kind` an [`EventKind`]: `sent` (by a producer), `received`,
//!   `started`, `succeeded`, `failed`, `retried`, `revoked`, `expired` and
//!   `dead-lettered` (by a worker). Published only when enabled (the
//!   worker's `--events`, the producer's `events(true)`).
//! - **Worker events** ([`WorkerEvent`]), routing key
//!   `worker.{online|heartbeat|offline}` ([`WorkerEventKind`]), published by
//!   every worker. A worker builds the body with [`WorkerEvent`] and
//!   [`WorkerEvent::encode`], and publishes it under
//!   [`WorkerEventKind::routing_key`].
//!
//! Bodies are MessagePack maps with named fields; fields that do not apply
//! to a kind are absent, and a reader ignores fields it does not know.
//! Events are published without publisher confirms: at most once, and one
//! may be lost. A client that counts completions should read the state
//! store as well.
//!
//! # Examples
//!
//! ```
//! use celeriac_schema::events::{decode_event, Event, EventKind, TaskEvent};
//! use celeriac_schema::TaskId;
//!
//! let mut event = TaskEvent::new(EventKind::Succeeded, TaskId::new(), "math.add", "default", 3);
//! event.worker = Some("host-1".into());
//! event.runtime_ms = Some(12);
//! assert_eq!(event.routing_key(), "task.succeeded.math.add");
//! let body = event.encode()?;
//! match decode_event(&body)? {
//!     Event::Task(back) => assert_eq!(back, event),
//!     Event::Worker(_) => unreachable!(),
//! }
//! # Ok::<_, celeriac_schema::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::{check_limits, from_slice_checked};
use crate::{DecodeLimits, Error, Result, TaskId};

/// The kind of a task event: the middle word of its routing key
/// `task.{kind}.{task}` and the body's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A producer published the task and the broker confirmed it.
    Sent,
    /// A worker received a delivery of the task and is about to handle it.
    Received,
    /// A worker started the task's handler.
    Started,
    /// The handler returned a value (or the task's idempotency key had
    /// succeeded before: `succeeded_as` names that run's task).
    Succeeded,
    /// A run ended in an error; `retried` or `dead-lettered` follows.
    Failed,
    /// The task was published again to run after `delay_ms`.
    Retried,
    /// The task was dropped without running: revoked by an operator, or its
    /// queue was purged (`reason`).
    Revoked,
    /// The task was past its expiry and was dropped without running.
    Expired,
    /// The task went to its dead-letter queue (`reason`).
    DeadLettered,
}

impl EventKind {
    /// Every task event kind, in lifecycle order.
    pub const ALL: [EventKind; 9] = [
        EventKind::Sent,
        EventKind::Received,
        EventKind::Started,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Retried,
        EventKind::Revoked,
        EventKind::Expired,
        EventKind::DeadLettered,
    ];

    /// The wire name (`dead-lettered` for [`EventKind::DeadLettered`]).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sent => "sent",
            EventKind::Received => "received",
            EventKind::Started => "started",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Retried => "retried",
            EventKind::Revoked => "revoked",
            EventKind::Expired => "expired",
            EventKind::DeadLettered => "dead-lettered",
        }
    }

    /// The kind of a wire name.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<EventKind> {
        EventKind::parse(s).ok_or_else(|| Error::Field {
            field: "kind".into(),
            message: format!("unknown task event kind {s:?}"),
        })
    }
}

/// A task event, as published on `{ns}.events` under
/// [`TaskEvent::routing_key`].
///
/// The fields every kind carries come first; the rest are set only for
/// the kinds named on each and are absent from the body otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// What happened.
    pub kind: EventKind,
    /// The task id.
    pub id: TaskId,
    /// The task name.
    pub task: String,
    /// The logical queue.
    pub queue: String,
    /// When, in milliseconds since the Unix epoch.
    pub at: u64,
    /// The worker id; absent for `sent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The attempt of the delivery the event is about (0 for the first
    /// run; a `retried` event carries the attempt that failed).
    pub attempt: u32,
    /// The effective idempotency key (the given one, else the task id).
    pub key: String,
    /// `succeeded`: the task whose run succeeded with this key (the task's
    /// own id, or the first task's for a suppressed duplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded_as: Option<TaskId>,
    /// `succeeded` and `failed`: how long the handler ran, in milliseconds
    /// (absent for a suppressed duplicate, which did not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_ms: Option<u64>,
    /// `failed`, `retried`, `dead-lettered`: the error's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// `failed`, `retried`, `dead-lettered`: the error's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `retried`: how long the task waits before it runs again, in
    /// milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// `dead-lettered`: the dead-letter reason (the `celeriac-reason`
    /// header); `revoked`: why (`purged` for a purged queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `sent`: the task's ETA, in milliseconds since the Unix epoch, when
    /// it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<u64>,
    /// `sent`: the workflow the task is a node of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<TaskId>,
    /// `started`: how long the task waited from when it became due (its
    /// ETA, else its creation) to this start, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
    /// `started`: `true` when the wait exceeded the queue's wait
    /// threshold (SPEC.md section 19); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_exceeded: Option<bool>,
}

impl TaskEvent {
    /// An event of `kind` about task `id`, with the per-kind fields unset,
    /// `at` now and the key derived from the id (set [`TaskEvent::key`]
    /// for a task sent with an idempotency key).
    pub fn new(
        kind: EventKind,
        id: TaskId,
        task: impl Into<String>,
        queue: impl Into<String>,
        attempt: u32,
    ) -> TaskEvent {
        TaskEvent {
            kind,
            id,
            task: task.into(),
            queue: queue.into(),
            at: crate::now_ms(),
            worker: None,
            attempt,
            key: id.to_string(),
            succeeded_as: None,
            runtime_ms: None,
            error_type: None,
            error: None,
            delay_ms: None,
            reason: None,
            eta: None,
            workflow_id: None,
            waited_ms: None,
            wait_exceeded: None,
        }
    }

    /// The routing key: `task.{kind}.{task}`.
    pub fn routing_key(&self) -> String {
        task_routing_key(self.kind, &self.task)
    }

    /// The body: a MessagePack map with named fields.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] (never for the types here).
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode_named(self, "task event")
    }
}

/// The routing key of a task event: `task.{kind}.{task}`.
///
/// # Examples
///
/// ```
/// use celeriac_schema::events::{task_routing_key, EventKind};
///
/// assert_eq!(task_routing_key(EventKind::DeadLettered, "a.b"), "task.dead-lettered.a.b");
/// ```
pub fn task_routing_key(kind: EventKind, task: &str) -> String {
    format!("task.{}.{task}", kind.as_str())
}

/// The kind of a worker event: the last word of its routing key
/// `worker.{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerEventKind {
    /// The worker connected and consumes its queues.
    Online,
    /// The worker is alive; sent every `heartbeat_ms`.
    Heartbeat,
    /// The worker stopped cleanly.
    Offline,
    /// Never published: the kind of a worker's record in the store's
    /// worker hash once it missed three heartbeats (section 16).
    Lost,
}

impl WorkerEventKind {
    /// Every kind a worker publishes (not [`WorkerEventKind::Lost`]).
    pub const ALL: [WorkerEventKind; 3] = [
        WorkerEventKind::Online,
        WorkerEventKind::Heartbeat,
        WorkerEventKind::Offline,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerEventKind::Online => "online",
            WorkerEventKind::Heartbeat => "heartbeat",
            WorkerEventKind::Offline => "offline",
            WorkerEventKind::Lost => "lost",
        }
    }

    /// The kind of a wire name.
    pub fn parse(name: &str) -> Option<WorkerEventKind> {
        WorkerEventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
    }

    /// The routing key: `worker.{kind}`.
    pub fn routing_key(self) -> String {
        format!("worker.{}", self.as_str())
    }
}

impl fmt::Display for WorkerEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker event, as published on `{ns}.events` under
/// `worker.{kind}` ([`WorkerEvent::routing_key`]).
///
/// # Examples
///
/// ```
/// use celeriac_schema::events::{decode_event, Event, WorkerEvent, WorkerEventKind};
///
/// let event = WorkerEvent {
///     kind: WorkerEventKind::Heartbeat,
///     worker: "host-1".into(),
///     hostname: "host".into(),
///     pid: 42,
///     queues: vec!["default".into()],
///     concurrency: 16,
///     in_flight: 3,
///     processed: 1200,
///     started_at: 1_700_000_000_000,
///     at: 1_700_000_060_000,
///     version: "0.1.0".into(),
///     heartbeat_ms: 2000,
/// };
/// assert_eq!(event.routing_key(), "worker.heartbeat");
/// assert!(matches!(decode_event(&event.encode()?)?, Event::Worker(w) if w == event));
/// # Ok::<_, celeriac_schema::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEvent {
    /// What happened.
    pub kind: WorkerEventKind,
    /// The worker id.
    pub worker: String,
    /// The host it runs on.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// The logical queues it consumes.
    pub queues: Vec<String>,
    /// Most tasks it runs at once.
    pub concurrency: u32,
    /// Tasks running now.
    pub in_flight: u32,
    /// Deliveries handled since it started.
    pub processed: u64,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: u64,
    /// When the event was sent, in milliseconds since the Unix epoch.
    pub at: u64,
    /// The worker's version.
    pub version: String,
    /// The period of its heartbeats, in milliseconds.
    pub heartbeat_ms: u64,
}

impl WorkerEvent {
    /// The routing key: `worker.{kind}`.
    pub fn routing_key(&self) -> String {
        self.kind.routing_key()
    }

    /// The body: a MessagePack map with named fields.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] (never for the types here).
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode_named(self, "worker event")
    }

    /// Decodes a worker event body, or a worker's record in the store
    /// (which may be of kind `lost`).
    ///
    /// # Errors
    ///
    /// As [`decode_event`], for a body that is not a worker event.
    pub fn decode(body: &[u8]) -> Result<WorkerEvent> {
        check_limits(
            body,
            &DecodeLimits {
                max_bytes: MAX_EVENT_BYTES,
                ..DecodeLimits::default()
            },
        )?;
        from_slice_checked(body)
    }

    /// Whether a worker last heard of at `self.at` counts as lost at `now`:
    /// more than three heartbeat periods ago.
    pub fn is_lost_at(&self, now: u64) -> bool {
        now.saturating_sub(self.at) > self.heartbeat_ms.saturating_mul(3)
    }
}

/// Any event of the events exchange.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A task event.
    Task(TaskEvent),
    /// A worker event.
    Worker(WorkerEvent),
}

impl Event {
    /// When it happened, in milliseconds since the Unix epoch.
    pub fn at(&self) -> u64 {
        match self {
            Event::Task(e) => e.at,
            Event::Worker(e) => e.at,
        }
    }

    /// The body's `kind`, as on the wire.
    pub fn kind_str(&self) -> &'static str {
        match self {
            Event::Task(e) => e.kind.as_str(),
            Event::Worker(e) => e.kind.as_str(),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Event::Task(e) => e.serialize(s),
            Event::Worker(e) => e.serialize(s),
        }
    }
}

/// The largest event body [`decode_event`] reads.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Decodes an event body, a task event or a worker event by its `kind`.
///
/// # Errors
///
/// [`Error::Malformed`], [`Error::TooLarge`] or [`Error::TooDeep`] for a
/// body that is not one bounded MessagePack value; [`Error::Field`] naming
/// the field for a missing or mistyped field or an unknown `kind`.
pub fn decode_event(body: &[u8]) -> Result<Event> {
    #[derive(Deserialize)]
    struct Kind {
        kind: String,
    }
    check_limits(
        body,
        &DecodeLimits {
            max_bytes: MAX_EVENT_BYTES,
            ..DecodeLimits::default()
        },
    )?;
    let Kind { kind } = from_slice_checked(body)?;
    if EventKind::parse(&kind).is_some() {
        from_slice_checked(body).map(Event::Task)
    } else if WorkerEventKind::parse(&kind).is_some() {
        from_slice_checked(body).map(Event::Worker)
    } else {
        Err(Error::Field {
            field: "kind".into(),
            message: format!("unknown event kind {kind:?}"),
        })
    }
}

fn encode_named<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Encode {
        what,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            let body = rmp_serde::to_vec_named(&kind).expect("encode");
            let name: String = rmp_serde::from_slice(&body).expect("a string");
            assert_eq!(name, kind.as_str());
        }
        for kind in WorkerEventKind::ALL {
            assert_eq!(WorkerEventKind::parse(kind.as_str()), Some(kind));
        }
        assert!("nope".parse::<EventKind>().is_err());
    }

    #[test]
    fn absent_fields_are_left_out_and_unknown_ones_ignored() {
        let event = TaskEvent::new(EventKind::Started, TaskId::new(), "t", "q", 0);
        let value: rmpv::Value =
            rmp_serde::from_slice(&event.encode().expect("encode")).expect("msgpack");
        let keys: Vec<&str> = value
            .as_map()
            .expect("a map")
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            keys,
            ["kind", "id", "task", "queue", "at", "attempt", "key"]
        );

        let mut map = value.as_map().expect("a map").clone();
        map.push(("later".into(), rmpv::Value::from(1)));
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &rmpv::Value::Map(map)).expect("write");
        assert_eq!(decode_event(&body).expect("decodes"), Event::Task(event));
    }

    #[test]
    fn bad_bodies_are_named_errors() {
        let unknown =
            rmp_serde::to_vec_named(&serde_json::json!({"kind": "exploded"})).expect("encode");
        assert!(
            matches!(decode_event(&unknown), Err(Error::Field { field, .. }) if field == "kind")
        );
        let missing = rmp_serde::to_vec_named(&serde_json::json!({"kind": "sent", "task": "t"}))
            .expect("encode");
        assert!(matches!(decode_event(&missing), Err(Error::Field { .. })));
        assert!(matches!(
            decode_event(&[0xc1]),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            decode_event(&vec![0u8; MAX_EVENT_BYTES + 1]),
            Err(Error::TooLarge { .. })
        ));
    }
}

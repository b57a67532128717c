//! A tap on the events exchange and the settings the tests share.

use std::time::{Duration, Instant};

use celeriac_consumer::Registry;
use celeriac_producer::Producer;
use celeriac_schema::events::{decode_event, Event, EventKind, TaskEvent};
use celeriac_schema::TaskId;
use celeriac_tests::{broker, TestNamespace};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

/// A queue of the test's own bound to `{ns}.events` (with `#` by default):
/// everything published under its keys from the moment it exists.
pub struct Tap {
    _conn: Connection,
    channel: Channel,
    queue: String,
    /// Every event read so far, in order.
    pub seen: Vec<Event>,
    /// The routing key and body of each of [`Tap::seen`], as published.
    pub raw: Vec<(String, Vec<u8>)>,
}

impl Tap {
    /// Binds the tap, declaring the events exchange first (as workers do).
    pub async fn bind(ns: &TestNamespace) -> Tap {
        Tap::bind_to(ns, &["#"]).await
    }

    /// [`Tap::bind`] with these routing keys only (`worker.#`, ...).
    pub async fn bind_to(ns: &TestNamespace, keys: &[&str]) -> Tap {
        let (conn, channel) = broker().await.channel().await;
        celeriac_producer::topology::declare(&channel, &ns.topology().shared_declarations())
            .await
            .unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        for key in keys {
            channel
                .queue_bind(
                    queue.name().clone(),
                    ns.topology().events_exchange().as_str().into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        Tap {
            _conn: conn,
            channel,
            queue: queue.name().to_string(),
            seen: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// Reads events until `done` says so or `timeout` passes; returns
    /// whether `done` was met. Every body must decode, under the routing
    /// key its kind names.
    pub async fn until(&mut self, timeout: Duration, done: impl Fn(&[Event]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.seen) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            match self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                Some(msg) => {
                    let event = decode_event(&msg.delivery.data)
                        .unwrap_or_else(|e| panic!("an undecodable event: {e}"));
                    let key = msg.delivery.routing_key.as_str();
                    match &event {
                        Event::Task(t) => assert_eq!(key, t.routing_key()),
                        Event::Worker(w) => assert_eq!(key, w.routing_key()),
                    }
                    self.seen.push(event);
                    self.raw.push((key.to_owned(), msg.delivery.data.clone()));
                }
                None => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// The task events of task `id`, in order.
    pub fn of(&self, id: TaskId) -> Vec<&TaskEvent> {
        task_events(&self.seen, id)
    }

    /// The kinds of the events of task `id`, in order.
    pub fn kinds(&self, id: TaskId) -> Vec<EventKind> {
        self.of(id).iter().map(|e| e.kind).collect()
    }

    /// The kinds of the workers' events of task `id` (all but `sent`), in
    /// order.
    pub fn worker_kinds(&self, id: TaskId) -> Vec<EventKind> {
        self.kinds(id)
            .into_iter()
            .filter(|k| *k != EventKind::Sent)
            .collect()
    }

    /// The `sent` event of task `id`.
    pub fn sent(&self, id: TaskId) -> TaskEvent {
        self.of(id)
            .into_iter()
            .find(|e| e.kind == EventKind::Sent)
            .unwrap_or_else(|| panic!("no sent event for {id}: {:?}", self.seen))
            .clone()
    }
}

/// The task events of `id` among `events`.
pub fn task_events(events: &[Event], id: TaskId) -> Vec<&TaskEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Task(t) if t.id == id => Some(t),
            _ => None,
        })
        .collect()
}

/// Whether `events` holds an event of `kind` about `id`.
pub fn has(events: &[Event], id: TaskId, kind: EventKind) -> bool {
    task_events(events, id).iter().any(|e| e.kind == kind)
}

/// A producer on `ns` with `task.sent` events on.
pub async fn producer(ns: &TestNamespace) -> Producer {
    Producer::builder(&broker().await.url)
        .namespace(ns.name())
        .events(true)
        .connect()
        .await
        .unwrap()
}

/// A registry with the built-in tasks.
pub fn builtins() -> Registry {
    let mut registry = Registry::new();
    celeriac_consumer::builtin::register(&mut registry);
    registry
}

//! The worker's task events (SPEC.md section 17): jobs hand them to an
//! [`EventSink`] without waiting, and one task publishes them in order on
//! the session's publisher channel, without awaiting confirms.
//!
//! A job never blocks or fails on an event: when the sink is full (the
//! broker is slow or blocked) or there is no connection, the event is
//! dropped and counted (`events_dropped`). Events are at most once.

use std::sync::Arc;

use celeriac_schema::events::TaskEvent;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::stats::WorkerStats;

/// Events waiting to be published at most; past it they are dropped.
const SINK_CAPACITY: usize = 16 * 1024;

/// Events taken off the sink at once.
const BATCH: usize = 256;

/// Where jobs leave their events; cheap to share.
#[derive(Debug)]
pub(crate) struct EventSink {
    tx: mpsc::Sender<TaskEvent>,
    stats: Arc<WorkerStats>,
}

impl EventSink {
    /// A sink and the task that publishes what it takes to `exchange` on
    /// whichever publisher channel `publisher` holds; the task ends when
    /// the sink is dropped.
    pub(crate) fn start(
        exchange: String,
        publisher: watch::Receiver<Option<Channel>>,
        stats: Arc<WorkerStats>,
    ) -> EventSink {
        let (tx, rx) = mpsc::channel(SINK_CAPACITY);
        tokio::spawn(publish_all(rx, exchange, publisher, stats.clone()));
        EventSink { tx, stats }
    }

    /// Queues `event` for publication; never waits.
    pub(crate) fn emit(&self, event: TaskEvent) {
        if let Err(e) = self.tx.try_send(event) {
            let dropped = self
                .stats
                .events_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Said once, then every 1024th: a slow broker drops many.
            if dropped.is_multiple_of(1024) {
                warn!(dropped = dropped + 1, reason = %e, "task events are being dropped");
            }
        }
    }
}

async fn publish_all(
    mut rx: mpsc::Receiver<TaskEvent>,
    exchange: String,
    publisher: watch::Receiver<Option<Channel>>,
    stats: Arc<WorkerStats>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let channel = publisher.borrow().clone();
        for event in batch.drain(..) {
            let published = match &channel {
                Some(channel) => publish(channel, &exchange, &event).await,
                None => Err("no broker connection".to_owned()),
            };
            if let Err(e) = published {
                WorkerStats::bump(&stats.events_dropped);
                debug!(task_id = %event.id, kind = %event.kind, error = %e, "task event not published");
            }
        }
    }
}

async fn publish(channel: &Channel, exchange: &str, event: &TaskEvent) -> Result<(), String> {
    let body = event.encode().map_err(|e| e.to_string())?;
    let props = BasicProperties::default()
        .with_content_type(celeriac_schema::CONTENT_TYPE.into())
        .with_message_id(event.id.to_string().into());
    channel
        .basic_publish(
            exchange.into(),
            event.routing_key().as_str().into(),
            BasicPublishOptions::default(),
            &body,
            props,
        )
        .await
        // The confirm is dropped unread: events are at most once.
        .map(|_confirm| ())
        .map_err(|e| e.to_string())
}

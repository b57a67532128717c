//! The producer's `task.sent` events (SPEC.md section 17), published on
//! the events exchange once the broker confirmed the task, without waiting
//! for a confirm of their own.

use celeriac_schema::events::{EventKind, TaskEvent};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};
use tracing::{debug, warn};

use crate::producer::PreparedTask;

/// A `sent` event ready to publish: its routing key and body.
pub(crate) struct Pending {
    routing_key: String,
    body: Vec<u8>,
    id: String,
}

/// The `sent` event of `task`, encoded; `None` (logged) if it cannot be.
pub(crate) fn sent(task: &PreparedTask) -> Option<Pending> {
    let env = &task.envelope;
    let mut event = TaskEvent::new(
        EventKind::Sent,
        env.id,
        env.task.clone(),
        task.queue.clone(),
        env.attempt,
    );
    event.key = env.effective_idempotency_key();
    event.eta = env.eta;
    event.workflow_id = env.workflow.as_ref().map(|w| w.workflow_id);
    match event.encode() {
        Ok(body) => Some(Pending {
            routing_key: event.routing_key(),
            body,
            id: env.id.to_string(),
        }),
        Err(e) => {
            warn!(task_id = %env.id, error = %e, "cannot encode the sent event");
            None
        }
    }
}

/// Publishes `event` to `exchange` on `channel`: not mandatory (nobody
/// listening is fine) and its confirm is not awaited. A failure is logged,
/// never returned: events are at most once.
pub(crate) async fn publish(channel: &Channel, exchange: &str, event: Pending) {
    let props = BasicProperties::default()
        .with_content_type(celeriac_schema::CONTENT_TYPE.into())
        .with_message_id(event.id.as_str().into());
    let sent = channel
        .basic_publish(
            exchange.into(),
            event.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &event.body,
            props,
        )
        .await;
    match sent {
        // The confirm is dropped unread.
        Ok(_confirm) => {}
        Err(e) => debug!(task_id = %event.id, error = %e, "could not publish the sent event"),
    }
}

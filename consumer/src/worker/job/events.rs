//! Events a job publishes on the events exchange.

use celeriac_schema::{now_ms, Envelope, TaskId, TaskState};
use lapin::BasicProperties;
use tracing::warn;

use super::Job;

impl Job {
    /// The steps after a success, repeated for a suppressed duplicate so a
    /// crash between them never stalls what comes next: the completion
    /// event.
    pub(super) async fn follow_up(&self, env: &Envelope, succeeded_as: TaskId) {
        if !self.shared.config.events {
            return;
        }
        let event = TaskEvent {
            id: env.id.to_string(),
            task: env.task.clone(),
            state: TaskState::Succeeded,
            key: env.effective_idempotency_key(),
            succeeded_as: succeeded_as.to_string(),
            worker: self.shared.config.worker_id.to_string(),
            at: now_ms(),
        };
        let body = match rmp_serde::to_vec_named(&event) {
            Ok(body) => body,
            Err(e) => {
                warn!(error = %e, "could not encode the completion event");
                return;
            }
        };
        let exchange = self.shared.config.topology.events_exchange();
        let routing_key = format!("task.succeeded.{}", env.task);
        let props = BasicProperties::default()
            .with_content_type(celeriac_schema::CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_message_id(env.id.to_string().into());
        let sent = async {
            self.publisher
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    lapin::options::BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await?
                .await
        };
        if let Err(e) = sent.await {
            warn!(error = %e, "could not publish the completion event");
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct TaskEvent {
    id: String,
    task: String,
    state: TaskState,
    key: String,
    /// The task whose run succeeded with this key (differs from `id` for a
    /// suppressed duplicate sent under another id).
    succeeded_as: String,
    worker: String,
    at: u64,
}

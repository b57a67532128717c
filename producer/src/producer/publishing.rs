//! Publishing prepared tasks with pipelined publishes and publisher
//! confirms, and failover onto new connections.

use celeriac_schema::{encode, now_ms, TaskId};
use lapin::Channel;
use tracing::debug;

use super::{PreparedTask, Producer};
use crate::error::{Error, Result};
use crate::publish::{self, Route};

/// Confirms outstanding at once in a batch send; bounds memory while keeping
/// the pipeline full.
const BATCH_WINDOW: usize = 2048;

impl Producer {
    pub(super) async fn publish_all(&self, tasks: &[PreparedTask]) -> Result<Vec<TaskId>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut retry = crate::failover::Retry::new(self.inner.failover);
        // Tasks before `done` are confirmed; after a lost connection only
        // the rest goes out again, on a new one.
        let mut done = 0;
        let result = loop {
            let mut confirmed = 0;
            let attempt = match self.channel().await {
                Ok(channel) => {
                    self.publish_on(&channel, &tasks[done..], &mut confirmed)
                        .await
                }
                Err(e) => Err(e),
            };
            done += confirmed;
            match attempt {
                Ok(_) => break Ok(tasks.iter().map(|t| t.envelope.id).collect()),
                Err(e) => match retry.after(&e, tasks.len() - done).await {
                    true => continue,
                    false => break Err(e),
                },
            }
        };
        if let Some(metrics) = &self.inner.metrics {
            for task in tasks {
                match &result {
                    Ok(_) => metrics.sent(&task.queue, &task.envelope.task),
                    Err(_) => metrics.failed(&task.queue),
                }
            }
        }
        result
    }

    async fn publish_on(
        &self,
        channel: &Channel,
        tasks: &[PreparedTask],
        confirmed: &mut usize,
    ) -> Result<Vec<TaskId>> {
        let mut ids = Vec::with_capacity(tasks.len());
        let mut pending = std::collections::VecDeque::with_capacity(BATCH_WINDOW.min(tasks.len()));
        let now = now_ms();
        for task in tasks {
            let env = &task.envelope;
            let body = encode(env)?;
            if body.len() > self.inner.max_body_bytes {
                return Err(Error::TooLarge {
                    task_id: env.id,
                    size: body.len(),
                    limit: self.inner.max_body_bytes,
                });
            }
            let route = publish::route(&self.inner.topology, &task.queue, env, now)?;
            let props =
                publish::task_properties(env, &task.queue, &body, self.inner.signing.as_deref())?;
            let queued = publish::queue_publish(channel, &route, body, props).await?;
            debug!(task_id = %env.id, task = %env.task, exchange = %route.exchange, "published");
            let event = self
                .inner
                .events
                .as_ref()
                .and_then(|_| crate::events::sent(task));
            pending.push_back((queued, env.id, route, event, std::time::Instant::now()));
            ids.push(env.id);
            if pending.len() >= BATCH_WINDOW {
                self.await_one(channel, &mut pending).await?;
                *confirmed += 1;
            }
        }
        // Every publish is queued on the channel: other sends may use it
        // while these wait for their confirms (a channel that fails is not
        // handed out again).
        self.release(channel.clone());
        while !pending.is_empty() {
            self.await_one(channel, &mut pending).await?;
            *confirmed += 1;
        }
        Ok(ids)
    }

    /// Waits for the oldest confirm; then, with events on, announces the
    /// task as sent.
    async fn await_one(
        &self,
        channel: &Channel,
        pending: &mut std::collections::VecDeque<Unconfirmed>,
    ) -> Result<()> {
        if let Some((queued, id, route, event, published)) = pending.pop_front() {
            let confirm = queued.await?;
            publish::check_confirm(confirm, &id.to_string(), &route, self.inner.confirm_timeout)
                .await?;
            if let Some(metrics) = &self.inner.metrics {
                metrics.confirmed_after(published.elapsed());
            }
            if let (Some(exchange), Some(event)) = (&self.inner.events, event) {
                crate::events::publish(channel, exchange, event).await;
            }
        }
        Ok(())
    }
}

/// A published task waiting for its confirm, with its `sent` event.
type Unconfirmed = (
    publish::Queued,
    TaskId,
    Route,
    Option<crate::events::Pending>,
    std::time::Instant,
);

//! Leases for runs longer than the broker's consumer timeout.
//!
//! RabbitMQ closes a channel whose delivery stays unacked past its consumer
//! timeout, and hands the delivery to another consumer: the task would run
//! twice. So a run that gets long parks a copy of its message in a queue of
//! its own (`{ns}.lease.{task_id}`), acks the original, and keeps renewing
//! the copy. The lease queue has a TTL and dead-letters into the work queue:
//! if the worker dies, the copy returns to the queue when the lease runs out
//! and the task is not lost; when the run ends and its outcome is durable,
//! the worker deletes the lease queue.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use celeriac_producer::publish::{self, Route};
use celeriac_producer::topology::declare;
use celeriac_schema::topology::Declaration;
use celeriac_schema::{headers, TaskId, Topology};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::error::{Error, Result};

/// A parked copy of a running task's message.
#[derive(Debug)]
pub(crate) struct Lease {
    queue: String,
    task_id: String,
    body: Vec<u8>,
    properties: BasicProperties,
    /// Sequence number of the newest parked copy.
    sequence: AtomicI64,
}

impl Lease {
    /// Declares the lease queue and parks the first copy (confirmed). The
    /// caller acks the original delivery afterwards.
    pub(crate) async fn take(
        channel: &Channel,
        topology: &Topology,
        work_queue: &str,
        task_id: TaskId,
        ttl: Duration,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Lease> {
        let queue = topology.lease_queue(&task_id);
        declare(
            channel,
            &[Declaration::Queue {
                name: queue.clone(),
                arguments: topology.lease_queue_arguments(work_queue, ttl),
            }],
        )
        .await?;
        let lease = Lease {
            queue,
            task_id: task_id.to_string(),
            body: body.to_vec(),
            properties,
            sequence: AtomicI64::new(0),
        };
        lease.park(channel, 0).await?;
        Ok(lease)
    }

    pub(crate) fn queue_name(&self) -> &str {
        &self.queue
    }

    async fn park(&self, channel: &Channel, sequence: i64) -> Result<()> {
        let mut table = self.properties.headers().clone().unwrap_or_default();
        table.insert(headers::LEASE.into(), AMQPValue::LongLongInt(sequence));
        let props = self.properties.clone().with_headers(table);
        let route = Route {
            exchange: String::new(),
            routing_key: self.queue.clone(),
        };
        publish::publish_confirmed(channel, &route, &self.body, props, &self.task_id).await?;
        Ok(())
    }

    /// Parks a fresh copy, then drops the oldest one, so a copy always
    /// waits with close to a full TTL ahead of it.
    pub(crate) async fn renew(&self, publisher: &watch::Receiver<Option<Channel>>) -> Result<()> {
        let channel = live(publisher)?;
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        self.park(&channel, sequence).await?;
        let oldest = channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .map_err(Error::amqp("renewing a lease"))?;
        if let Some(message) = oldest {
            let taken = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(headers::LEASE).cloned());
            if taken == Some(AMQPValue::LongLongInt(sequence)) {
                // The older copy had already expired back into the queue:
                // keep this one parked.
                warn!(lease = %self.queue, "lease renewed late; the task may run twice");
                self.park(&channel, sequence).await?;
            }
        }
        debug!(lease = %self.queue, sequence, "lease renewed");
        Ok(())
    }

    /// Deletes the lease queue and its copy once the run's outcome is
    /// durable.
    pub(crate) async fn release(self, publisher: &watch::Receiver<Option<Channel>>) {
        let result = match live(publisher) {
            Ok(channel) => channel
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map(|_| ())
                .map_err(Error::amqp("releasing a lease")),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            warn!(lease = %self.queue, error = %e, "could not release a lease; the task will run again when it expires");
        }
    }
}

fn live(publisher: &watch::Receiver<Option<Channel>>) -> Result<Channel> {
    publisher
        .borrow()
        .clone()
        .filter(|c| c.status().connected())
        .ok_or(Error::Disconnected)
}

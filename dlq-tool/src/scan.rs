//! Reading a dead-letter queue one message at a time without losing,
//! duplicating or reordering anything.
//!
//! # How a scan works
//!
//! A scan consumes the dead-letter queue with manual acknowledgements and a
//! per-consumer prefetch of [`PREFETCH`], taking at most as many messages as
//! the queue held when the scan started (counted with a passive declare), so
//! it ends even while dead letters keep arriving, and never sees a message
//! twice: a message delivered and not yet acknowledged is not delivered
//! again while the channel is open.
//!
//! Each message is then either *done* (acknowledged: deleted from the DLQ,
//! after its copy was confirmed for `replay`) or *held*. Held messages stay
//! unacknowledged until the scan ends. A consumer stops receiving once it
//! holds [`PREFETCH`] unacknowledged messages, so when every consumer of the
//! scan is full the scan adds another one on the same channel: the held
//! messages stay with the broker, and the client only ever buffers about one
//! prefetch window of deliveries. At the end the scan cancels its consumers
//! and returns every message it did not acknowledge with one `basic.nack`
//! (`multiple`, `requeue`, delivery tag 0: all outstanding), in their
//! original order. So a read-only command (`list`, `show`, `stats`,
//! `export`) leaves the DLQ as it found it, and a filtered `replay` or
//! `purge` leaves the non-matching ones in place.
//!
//! (Returning held messages in batches during the scan would not work: a
//! quorum queue delivers returned messages first, so the scan would meet
//! them again. `basic.get` would, but costs one consensus round trip per
//! message, a few hundred messages per second.)
//!
//! Memory stays bounded: a message's body is dropped as soon as it has been
//! looked at; the client keeps a few counters per scan, and the broker keeps
//! the held messages (they are in the queue anyway). If the process dies,
//! the broker returns every unacknowledged message to the queue by itself.

use std::time::Duration;

use celeriac_schema::Topology;
use futures_util::stream::{SelectAll, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};

/// Unacknowledged deliveries per consumer of a scan.
pub const PREFETCH: u16 = 1000;

/// How long a scan waits for a delivery before it looks whether the queue
/// still has ready messages (and adds a consumer for them) or is done.
pub const IDLE: Duration = Duration::from_secs(2);

/// How long [`DlqScan::finish`] waits for the returned messages to be
/// counted as ready again.
pub const RETURN_WAIT: Duration = Duration::from_secs(3);

/// Number of messages ready in a broker queue.
///
/// # Errors
///
/// [`Error::Amqp`]; a missing queue closes the channel (`NOT_FOUND`).
pub async fn queue_length(channel: &Channel, queue: &str) -> Result<u32> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(Error::amqp("counting a queue"))?;
    Ok(q.message_count())
}

/// One pass over one dead-letter queue. See the module documentation.
pub struct DlqScan<'c> {
    channel: &'c Channel,
    namespace: String,
    queue: String,
    dlq: String,
    remaining: u32,
    consumers: SelectAll<Consumer>,
    tags: Vec<String>,
    unacked: u64,
    held: u64,
    done: u64,
}

impl std::fmt::Debug for DlqScan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqScan")
            .field("dlq", &self.dlq)
            .field("remaining", &self.remaining)
            .field("consumers", &self.tags.len())
            .field("held", &self.held)
            .field("done", &self.done)
            .finish()
    }
}

impl<'c> DlqScan<'c> {
    /// Starts a scan of the DLQ of logical queue `queue`, bounded by its
    /// current length. The channel must not be used by another scan at the
    /// same time.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] when the queue cannot be counted.
    pub async fn start(channel: &'c Channel, topology: &Topology, queue: &str) -> Result<Self> {
        let dlq = topology.dead_letter_queue(queue);
        let remaining = queue_length(channel, &dlq).await?;
        // Per consumer, never global: quorum queues refuse global QoS.
        channel
            .basic_qos(PREFETCH, BasicQosOptions { global: false })
            .await
            .map_err(Error::amqp("setting the prefetch"))?;
        Ok(DlqScan {
            channel,
            namespace: topology.namespace().to_owned(),
            queue: queue.to_owned(),
            dlq,
            remaining,
            consumers: SelectAll::new(),
            tags: Vec::new(),
            unacked: 0,
            held: 0,
            done: 0,
        })
    }

    /// The broker name of the DLQ.
    pub fn dlq(&self) -> &str {
        &self.dlq
    }

    /// Messages held so far (to be returned to the queue at the end).
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Messages done (acknowledged) so far.
    pub fn done_count(&self) -> u64 {
        self.done
    }

    async fn add_consumer(&mut self) -> Result<()> {
        let tag = format!("celeriac-dlq-{}-{}", std::process::id(), self.tags.len());
        let consumer = self
            .channel
            .basic_consume(
                self.dlq.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::amqp("consuming a dead-letter queue"))?;
        self.tags.push(tag);
        self.consumers.push(consumer);
        Ok(())
    }

    /// The next message with its delivery tag, or `None` once as many
    /// messages as the queue held at the start were taken, or it has no
    /// more.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] when the channel fails.
    pub async fn next(&mut self) -> Result<Option<(u64, DeadLetter)>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        // Every consumer full (or none yet): the broker sends nothing more
        // until another one has room.
        if self.unacked >= u64::from(PREFETCH) * self.tags.len() as u64 {
            self.add_consumer().await?;
        }
        let delivery = loop {
            match tokio::time::timeout(IDLE, self.consumers.next()).await {
                Ok(Some(delivery)) => {
                    break delivery.map_err(Error::amqp("reading a dead-letter queue"))?;
                }
                Ok(None) => {
                    self.remaining = 0;
                    return Ok(None);
                }
                Err(_) => {
                    // Nothing came. Either the queue has no more ready
                    // messages, or the broker has not applied our acks yet
                    // and counts every consumer as full: then another
                    // consumer gets them.
                    if queue_length(self.channel, &self.dlq).await? == 0 {
                        self.remaining = 0;
                        return Ok(None);
                    }
                    self.add_consumer().await?;
                }
            }
        };
        self.remaining -= 1;
        self.unacked += 1;
        let tag = delivery.delivery_tag;
        let dl = DeadLetter::new(
            &self.queue,
            &self.namespace,
            delivery.properties,
            delivery.data,
        );
        Ok(Some((tag, dl)))
    }

    /// Leaves message `tag` in the queue: it is returned at [`finish`](Self::finish).
    pub fn hold(&mut self, _tag: u64) {
        self.held += 1;
    }

    /// Deletes message `tag` from the queue.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] when the channel fails.
    pub async fn done(&mut self, tag: u64) -> Result<()> {
        self.done += 1;
        self.unacked = self.unacked.saturating_sub(1);
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple: false })
            .await
            .map_err(Error::amqp("acknowledging a dead letter"))
    }

    /// Kept for callers that batch; acknowledgements are sent at once.
    ///
    /// # Errors
    ///
    /// None today.
    pub async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Cancels the scan's consumers, then returns every message it did not
    /// acknowledge to the queue in one `nack`.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] when the channel fails (the broker then returns the
    /// held messages by itself when the connection closes).
    pub async fn finish(self) -> Result<()> {
        for tag in &self.tags {
            self.channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await
                .map_err(Error::amqp("cancelling a consumer"))?;
        }
        if !self.tags.is_empty() {
            self.channel
                .basic_nack(
                    0,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await
                .map_err(Error::amqp("returning dead letters to their queue"))?;
            self.settle_returned().await?;
        }
        Ok(())
    }

    /// Waits (at most [`RETURN_WAIT`]) until the broker counts the returned
    /// messages as ready again. A quorum queue applies a `nack` through its
    /// log after the channel took it, so without this a scan started right
    /// after another one (`list` then `show`) could count an empty queue.
    async fn settle_returned(&self) -> Result<()> {
        let returned = u32::try_from(self.unacked).unwrap_or(u32::MAX);
        let deadline = tokio::time::Instant::now() + RETURN_WAIT;
        while queue_length(self.channel, &self.dlq).await? < returned
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

//! Reading a dead-letter queue one message at a time without losing,
//! duplicating or reordering anything.
//!
//! # How a scan works
//!
//! A scan takes messages with `basic.get` and manual acknowledgements, at
//! most as many as the queue held when the scan started (a passive declare
//! counts them), so it ends even while new dead letters keep arriving and
//! never sees one message twice: a message taken and not yet acknowledged
//! is not delivered again while the channel is open.
//!
//! Each message is then either *done* (acknowledged: deleted from the DLQ,
//! after its copy was confirmed for `replay`) or *held*. Held messages stay
//! unacknowledged until the scan ends, then go back to the queue with a
//! single `basic.nack` (`multiple`, `requeue`) on the highest held tag. So a
//! read-only command (`list`, `show`, `stats`, `export`) leaves the DLQ as
//! it found it, in the same order, and a filtered `replay` or `purge` leaves
//! the non-matching ones in place.
//!
//! Memory stays bounded: a message's body is dropped as soon as it has been
//! looked at; the client keeps a few integers per scan, and the broker keeps
//! the held messages (they are in the queue anyway). If the process dies,
//! the broker returns every unacknowledged message to the queue by itself.
//!
//! Acknowledgements of done messages are batched with `multiple = true`
//! while no held message lies below them, and sent one by one after that.

use celeriac_schema::Topology;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Channel;

use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};

/// Done messages acknowledged in one `multiple` ack, at most.
pub const ACK_BATCH: u64 = 64;

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
#[derive(Debug)]
pub struct DlqScan<'c> {
    channel: &'c Channel,
    namespace: String,
    queue: String,
    dlq: String,
    remaining: u32,
    held_min: Option<u64>,
    held_max: Option<u64>,
    held: u64,
    pending_ack: Option<u64>,
    pending_count: u64,
    done: u64,
}

impl<'c> DlqScan<'c> {
    /// Starts a scan of the DLQ of logical queue `queue`, bounded by its
    /// current length.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] when the queue cannot be counted.
    pub async fn start(channel: &'c Channel, topology: &Topology, queue: &str) -> Result<Self> {
        let dlq = topology.dead_letter_queue(queue);
        let remaining = queue_length(channel, &dlq).await?;
        Ok(DlqScan {
            channel,
            namespace: topology.namespace().to_owned(),
            queue: queue.to_owned(),
            dlq,
            remaining,
            held_min: None,
            held_max: None,
            held: 0,
            pending_ack: None,
            pending_count: 0,
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

    /// The next message with its delivery tag, or `None` once as many
    /// messages as the queue held at the start were taken, or it is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] when the channel fails.
    pub async fn next(&mut self) -> Result<Option<(u64, DeadLetter)>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let got = self
            .channel
            .basic_get(self.dlq.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(Error::amqp("reading a dead-letter queue"))?;
        let Some(msg) = got else {
            self.remaining = 0;
            return Ok(None);
        };
        self.remaining -= 1;
        let delivery = msg.delivery;
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
    pub fn hold(&mut self, tag: u64) {
        self.held += 1;
        self.held_min = Some(self.held_min.map_or(tag, |m| m.min(tag)));
        self.held_max = Some(self.held_max.map_or(tag, |m| m.max(tag)));
    }

    /// Deletes message `tag` from the queue. Call it in delivery-tag order
    /// (with [`hold`](Self::hold) for the others), so that batched
    /// acknowledgements never cover a message still in flight.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] when the channel fails.
    pub async fn done(&mut self, tag: u64) -> Result<()> {
        self.done += 1;
        if self.held_min.is_none_or(|h| tag < h) {
            self.pending_ack = Some(tag);
            self.pending_count += 1;
            if self.pending_count >= ACK_BATCH {
                self.flush().await?;
            }
            Ok(())
        } else {
            self.ack(tag, false).await
        }
    }

    /// Sends the batched acknowledgement, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] when the channel fails.
    pub async fn flush(&mut self) -> Result<()> {
        if let Some(tag) = self.pending_ack.take() {
            self.pending_count = 0;
            self.ack(tag, true).await?;
        }
        Ok(())
    }

    async fn ack(&self, tag: u64, multiple: bool) -> Result<()> {
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple })
            .await
            .map_err(Error::amqp("acknowledging a dead letter"))
    }

    /// Sends pending acknowledgements, then returns every held message to
    /// the queue in one `nack`.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] when the channel fails (the broker then returns the
    /// held messages by itself when the connection closes).
    pub async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        if let Some(tag) = self.held_max.take() {
            self.channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await
                .map_err(Error::amqp("returning dead letters to their queue"))?;
        }
        Ok(())
    }
}

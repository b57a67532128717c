//! One queue's consumer: deliveries become jobs, and their acks are
//! batched on the queue's channel.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use lapin::{Channel, Consumer};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::fair::Slots;
use super::job::Job;
use super::{SessionEnd, Shared};
use crate::ack_tracker::{AckAction, AckTracker};
use crate::metrics::QueueMetrics;
use crate::stats::WorkerStats;
/// How often stragglers are acked on their own.
const ACK_TICK: Duration = Duration::from_millis(20);

/// One queue's consumer, its channel and its acknowledgements.
pub(super) struct Lane {
    pub(super) shared: Arc<Shared>,
    pub(super) metrics: Arc<QueueMetrics>,
    pub(super) queue: Arc<str>,
    pub(super) channel: Channel,
    pub(super) publisher: Channel,
    pub(super) semaphore: Arc<Semaphore>,
    /// Where the lane's jobs take their slots: the semaphore, or a group.
    pub(super) slots: Slots,
}

/// Messages to a lane's acker.
#[derive(Debug)]
pub(super) enum AckMsg {
    Delivered(u64),
    Finished(u64),
    Requeue(u64),
}

impl Lane {
    pub(super) async fn run(
        self,
        mut consumer: Consumer,
        session: CancellationToken,
        shutdown: CancellationToken,
        stop: CancellationToken,
    ) -> SessionEnd {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let acker = tokio::spawn(run_acker(self.channel.clone(), ack_rx));
        let mut tasks = JoinSet::new();
        let shared = &self.shared;
        let end = loop {
            tokio::select! {
                biased;
                _ = session.cancelled() => {
                    break if shutdown.is_cancelled() {
                        SessionEnd::Shutdown
                    } else {
                        SessionEnd::Lost("another channel of the session closed".into())
                    };
                }
                // Cancelled at run time: ends like a shutdown, this lane
                // alone.
                _ = stop.cancelled() => break SessionEnd::Shutdown,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let tag = delivery.delivery_tag;
                        let _ = ack_tx.send(AckMsg::Delivered(tag));
                        let permit = match self.slots.try_acquire() {
                            Some(permit) => Some(permit),
                            None => {
                                // Shown by `inspect reserved` while it waits.
                                let _waiting = shared
                                    .control
                                    .jobs
                                    .waiting(&delivery.properties, &self.queue);
                                let acquiring = self.slots.acquire();
                                tokio::select! {
                                    permit = acquiring => permit,
                                    _ = session.cancelled() => {
                                        let _ = ack_tx.send(AckMsg::Requeue(tag));
                                        WorkerStats::bump(&shared.stats.requeued);
                                        continue;
                                    }
                                }
                            }
                        };
                        let Some(permit) = permit else {
                            if session.is_cancelled() {
                                // The lane group stopped with the session.
                                let _ = ack_tx.send(AckMsg::Requeue(tag));
                                WorkerStats::bump(&shared.stats.requeued);
                                continue;
                            }
                            break SessionEnd::Shutdown;
                        };
                        let job = Job {
                            shared: shared.clone(),
                            metrics: self.metrics.clone(),
                            queue: self.queue.clone(),
                            publisher: self.publisher.clone(),
                            ack: ack_tx.clone(),
                            permit: std::sync::Mutex::new(Some(permit)),
                            semaphore: self.semaphore.clone(),
                            throttled: Default::default(),
                        };
                        // Boxed: the job's future is large, and the runtime would copy it
                        // several times on its way to a thread.
                        tasks.spawn(Box::pin(job.run(delivery)));
                    }
                    Some(Err(e)) => break SessionEnd::Lost(e.to_string()),
                    None => break SessionEnd::Lost("the broker cancelled the consumer".into()),
                }
            }
        };
        match end {
            SessionEnd::Shutdown => {
                let _ = self
                    .channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
                let in_flight = tasks.len();
                if in_flight > 0 {
                    info!(queue = %self.queue, in_flight, grace = ?shared.config.grace, "waiting for in-flight tasks");
                }
                let drained = tokio::time::timeout(shared.config.grace, async {
                    while tasks.join_next().await.is_some() {}
                })
                .await;
                if drained.is_err() {
                    let abandoned = tasks.len();
                    warn!(queue = %self.queue, abandoned, "grace period over; handing unfinished tasks back to the queue");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    shared
                        .stats
                        .requeued
                        .fetch_add(abandoned as u64, Ordering::Relaxed);
                }
                drop(ack_tx);
                let _ = acker.await;
                // Closing the channel hands every unacked delivery back.
                let _ = self.channel.close(200, "worker stopping".into()).await;
            }
            SessionEnd::Lost(_) => {
                // Their deliveries went back to the queue with the channel;
                // leased runs still finish and settle through the next session.
                tasks.detach_all();
                drop(ack_tx);
                acker.abort();
            }
        }
        end
    }
}

async fn run_acker(channel: Channel, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let mut tracker = AckTracker::default();
    let mut tick = tokio::time::interval(ACK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                apply(&channel, &mut tracker, msg).await;
                while let Ok(msg) = rx.try_recv() {
                    apply(&channel, &mut tracker, msg).await;
                }
                if let Some(action) = tracker.take_prefix() {
                    send_ack(&channel, action).await;
                }
            }
            _ = tick.tick() => {
                for action in tracker.on_tick() {
                    send_ack(&channel, action).await;
                }
            }
        }
    }
    for action in tracker.drain() {
        send_ack(&channel, action).await;
    }
}

async fn apply(channel: &Channel, tracker: &mut AckTracker, msg: AckMsg) {
    match msg {
        AckMsg::Delivered(tag) => tracker.delivered(tag),
        AckMsg::Finished(tag) => tracker.finished(tag),
        AckMsg::Requeue(tag) => {
            tracker.forget(tag);
            let options = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            if let Err(e) = channel.basic_nack(tag, options).await {
                debug!(tag, error = %e, "nack failed; the channel hands the delivery back anyway");
            }
        }
    }
}

async fn send_ack(channel: &Channel, action: AckAction) {
    let (tag, multiple) = match action {
        AckAction::AckUpTo(tag) => (tag, true),
        AckAction::AckOne(tag) => (tag, false),
    };
    if let Err(e) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
        debug!(tag, error = %e, "ack failed; the delivery will be redelivered");
    }
}

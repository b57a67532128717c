//! One delivery, from decode to settlement: [`admit`] asks the store
//! whether to run, [`execute`] runs the handler, [`settle`] makes the
//! outcome durable, [`events`] announces it.

mod admit;
mod events;
mod execute;
mod purge;
mod settle;
mod throttle;
mod urgency;

pub(crate) use throttle::{tenant_rates, Tokens};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use celeriac_schema::events::EventKind;
use celeriac_schema::store::Begin;
use celeriac_schema::{now_ms, Envelope, TaskId};
use lapin::message::Delivery;
use lapin::Channel;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, info_span, warn, Instrument};

use super::lane::AckMsg;
use super::Shared;
use crate::coordinator;
use crate::disposition::{decide, Outcome};
use crate::metrics::{QueueMetrics, TaskMetrics};
use crate::stats::WorkerStats;
use settle::RunEnd;
/// One delivery being handled.
pub(super) struct Job {
    pub(super) shared: Arc<Shared>,
    pub(super) metrics: Arc<QueueMetrics>,
    pub(super) queue: Arc<str>,
    pub(super) publisher: Channel,
    pub(super) ack: mpsc::UnboundedSender<AckMsg>,
    /// The concurrency slot, given back while the task waits for its rate.
    pub(super) permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
    pub(super) semaphore: Arc<Semaphore>,
    /// Set when a rate limit or pool sends the delivery back.
    pub(super) throttled: std::sync::OnceLock<crate::metrics_policy::Throttle>,
}

/// Decrements the in-flight gauges when a job ends, however it ends.
struct InFlight<'a>(&'a WorkerStats, &'a QueueMetrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.1.in_flight.dec();
    }
}

impl Job {
    pub(super) async fn run(self, delivery: Delivery) {
        let stats = &self.shared.stats;
        WorkerStats::bump(&stats.received);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.inc();
        let _in_flight = InFlight(stats, &self.metrics);
        let tag = delivery.delivery_tag;
        let config = &self.shared.config;
        let decoded = crate::signing::admit(config.signing.as_deref(), &delivery, &config.limits);
        let metrics = self
            .metrics
            .task(decoded.as_ref().ok().map(|env| env.task.as_str()));
        metrics.received.inc();
        // Fields are formatted only if the span is recorded.
        let span = match &decoded {
            Ok(env) => info_span!("task", task_id = %env.id, task = %env.task, queue = %self.queue),
            Err(_) => info_span!(
                "task",
                message_id = ?delivery.properties.message_id(),
                queue = %self.queue
            ),
        };
        self.handle(delivery, decoded, tag, metrics)
            .instrument(span)
            .await;
    }

    async fn handle(
        &self,
        delivery: Delivery,
        decoded: std::result::Result<Envelope, Outcome>,
        tag: u64,
        metrics: &TaskMetrics,
    ) {
        let stats = &self.shared.stats;
        let store = self.shared.config.store.clone();
        let mut lease = None;
        // The run this delivery started in the store: (key, token).
        let mut run: Option<(String, String)> = None;
        let mut output = None;
        let mut suppressed = None;
        // When a run started, while its `started` state is not yet stored.
        let mut unrecorded_start = None;
        // Its place in the worker's list of jobs, for inspect and revoke.
        let mut slot = None;
        // Resource pool units held while the task runs.
        let mut pools = None;
        let mut runtime_ms = None;
        if let Ok(env) = &decoded {
            if self.is_purged(env) {
                self.drop_purged(env, tag, metrics).await;
                return;
            }
        }
        let (outcome, envelope) = match decoded {
            Err(refused) => {
                crate::signing::log_refused(&refused);
                (refused, None)
            }
            Ok(mut env) => {
                let now = now_ms();
                let wait = env.wait_before_run(now);
                if wait.is_zero() {
                    self.emit(self.event(EventKind::Received, &env));
                }
                let mut stopped = None;
                let runnable = wait.is_zero() && !env.is_expired_at(now);
                if runnable && self.shared.registry.get(&env.task).is_some() {
                    match self.gate(&mut env).await {
                        throttle::Gate::Go(hold) => pools = hold,
                        throttle::Gate::Stop(outcome) => stopped = Some(outcome),
                        throttle::Gate::Shutdown => {
                            let _ = self.ack.send(AckMsg::Requeue(tag));
                            return;
                        }
                    }
                }
                if env.is_expired_at(now) {
                    WorkerStats::bump(&stats.expired);
                    metrics.expired.inc();
                    info!("task expired before it could run; dropping it");
                    (Outcome::Expired, Some(env))
                } else if !wait.is_zero() {
                    (Outcome::Early(wait), Some(env))
                } else if let Some(outcome) = stopped {
                    (outcome, Some(env))
                } else if let Some(handler) = self.shared.registry.get(&env.task).cloned() {
                    let control = &self.shared.control;
                    let held = slot.insert(control.jobs.reserve(&env, &self.queue));
                    let cancel = held.cancel.clone();
                    let revoked = control.revoked.matching(&env);
                    let begin = match (&store, revoked) {
                        (_, Some(id)) => Some(Begin::Revoked { id }),
                        (None, None) => Some(Begin::Run),
                        (Some(store), None) => {
                            let key = env.effective_idempotency_key();
                            let token =
                                format!("{}/{}", self.shared.config.worker_id, TaskId::new());
                            let id = env.id.to_string();
                            let workflow = env.workflow.as_ref().map(|w| w.workflow_id.to_string());
                            let mut revocable = vec![id.as_str(), key.as_str()];
                            revocable.extend(workflow.as_deref());
                            let begun = self.begin(store, &key, &token, &revocable).await;
                            if matches!(begun, Some(Begin::Run | Begin::Revoked { .. })) {
                                run = Some((key, token));
                            }
                            begun
                        }
                    };
                    match begin {
                        // Shutting down while the store is unreachable.
                        None => {
                            let _ = self.ack.send(AckMsg::Requeue(tag));
                            return;
                        }
                        Some(Begin::Revoked { id }) => {
                            WorkerStats::bump(&stats.revoked);
                            metrics.revoked.inc();
                            info!(revoked = %id, "revoked; acked without running");
                            (Outcome::Revoked(format!("{id} is revoked")), Some(env))
                        }
                        Some(Begin::Run) => {
                            held.start();
                            let started = std::time::Instant::now();
                            let started_ms = now_ms();
                            metrics.observe_wait(env.created_at, env.eta, started_ms);
                            metrics.started.inc();
                            let _running = self.metrics.running(started_ms);
                            self.started(&env, started_ms);
                            let done = self
                                .execute(
                                    handler,
                                    env,
                                    &delivery,
                                    tag,
                                    run.as_ref(),
                                    execute::Start { started_ms, cancel },
                                )
                                .await;
                            if let Outcome::Revoked(_) = &done.outcome {
                                WorkerStats::bump(&stats.revoked);
                                metrics.revoked.inc();
                            }
                            if run.is_some() && !done.start_recorded {
                                unrecorded_start = Some(started_ms);
                            }
                            metrics.run_seconds.observe(started.elapsed().as_secs_f64());
                            runtime_ms = Some(started.elapsed().as_millis() as u64);
                            lease = done.lease;
                            output = done.output;
                            (done.outcome, Some(done.env))
                        }
                        Some(Begin::Succeeded { task_id }) => {
                            WorkerStats::bump(&stats.duplicates_suppressed);
                            metrics.duplicates_suppressed.inc();
                            info!(first = %task_id, "idempotency key already succeeded; not running again");
                            suppressed = Some(task_id);
                            (Outcome::Succeeded, Some(env))
                        }
                        Some(Begin::Busy { retry_after }) => {
                            WorkerStats::bump(&stats.deferred);
                            debug!(
                                ?retry_after,
                                "running elsewhere; trying again when its lease ends"
                            );
                            env.eta = Some(now.saturating_add(retry_after.as_millis() as u64));
                            (Outcome::Early(retry_after), Some(env))
                        }
                    }
                } else {
                    warn!("no handler registered for this task");
                    (Outcome::UnknownTask, Some(env))
                }
            }
        };
        if let Some(hold) = pools.take() {
            throttle::PoolHold::release(hold).await;
        }
        match &outcome {
            Outcome::Succeeded if suppressed.is_none() => {
                WorkerStats::bump(&stats.succeeded);
                metrics.succeeded.inc();
            }
            Outcome::Failed(_) | Outcome::Panicked(_) | Outcome::TimedOut(_) => {
                WorkerStats::bump(&stats.failed);
                metrics.failed.inc();
                let error_type = match &outcome {
                    Outcome::Failed(err) => err.kind(),
                    Outcome::Panicked(_) => crate::PANIC,
                    _ => crate::TIME_LIMIT,
                };
                self.shared.metrics.count_error(
                    &self.queue,
                    envelope.as_ref().map(|env| env.task.as_str()),
                    error_type,
                );
            }
            _ => {}
        }
        let disposition = decide(&outcome, envelope.as_ref(), rand::random::<f64>());
        // The outcome is stored before anything is acked or published.
        if let (Some(store), Some(env)) = (&store, envelope.as_ref()) {
            if !self
                .store_outcome(
                    store,
                    env,
                    &outcome,
                    &disposition,
                    run.as_ref(),
                    RunEnd {
                        output,
                        unrecorded_start,
                    },
                )
                .await
            {
                // Shutting down while the store is unreachable: hand the
                // delivery back (a leased run's copy returns by itself).
                if lease.is_none() {
                    let _ = self.ack.send(AckMsg::Requeue(tag));
                }
                return;
            }
        }
        if let (Outcome::Revoked(_), Some(env)) = (&outcome, envelope.as_ref()) {
            self.emit_revoked(env, "revoked");
        }
        // A leased run's delivery is already acked and its channel may be
        // gone: settle through the live session's publisher.
        let publisher = match &lease {
            Some(_) => self.shared.publisher.borrow().clone(),
            None => Some(self.publisher.clone()),
        };
        if let (Some(env), Outcome::Succeeded) = (envelope.as_ref(), &outcome) {
            self.follow_up(env, suppressed.unwrap_or(env.id), runtime_ms);
        }
        // Workflow nodes: release dependents, or skip them, before the ack.
        if let (Some(store), Some(env)) = (&store, envelope.as_ref()) {
            let step = crate::disposition::workflow_step(&outcome, &disposition);
            if let (Some(succeeded), Some(_)) = (step, &env.workflow) {
                let done = match &publisher {
                    Some(publisher) => {
                        let cx = coordinator::Context {
                            store,
                            publisher,
                            topology: &self.shared.config.topology,
                            declared: &self.shared.declared,
                            queue: &self.queue,
                            worker: &self.shared.config.worker_id,
                            signing: self.shared.config.signing.as_deref(),
                        };
                        if succeeded {
                            coordinator::release(&cx, env).await.map(|first| {
                                self.shared.metrics.workflow_releases.inc_by(first as u64);
                            })
                        } else {
                            coordinator::fail(&cx, env).await
                        }
                    }
                    None => Err("no broker connection".to_owned()),
                };
                if let Err(e) = done {
                    warn!(error = %e, "workflow step failed; handing the task back to run it again");
                    if lease.is_none() {
                        let _ = self.ack.send(AckMsg::Requeue(tag));
                    }
                    return;
                }
            }
        }
        let settled = match publisher {
            Some(publisher) => {
                self.settle(&publisher, &disposition, envelope.as_ref(), &delivery)
                    .await
            }
            None => Err("no broker connection to settle the task".to_owned()),
        };
        if settled.is_ok() {
            metrics.settled(&disposition);
            if let Some(env) = envelope.as_ref() {
                self.emit_settled(env, &outcome, &disposition, runtime_ms);
            }
        }
        match (settled, lease) {
            (Ok(()), None) => {
                let _ = self.ack.send(AckMsg::Finished(tag));
            }
            (Ok(()), Some(lease)) => lease.release(&self.shared.publisher).await,
            (Err(e), None) => {
                warn!(error = %e, "could not settle the task; handing it back to the queue");
                let _ = self.ack.send(AckMsg::Requeue(tag));
            }
            (Err(e), Some(lease)) => {
                // The parked copy stays and returns to the queue when the
                // lease runs out: the task is not lost.
                warn!(error = %e, lease = %lease.queue_name(), "could not settle a leased task; its lease will hand it back");
            }
        }
    }
}

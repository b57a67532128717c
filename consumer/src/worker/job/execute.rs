//! Running a handler: its time limit, panics, the run lease renewed and a
//! long run's delivery swapped for a lease.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::{Envelope, TaskState};
use futures_util::FutureExt;
use lapin::message::Delivery;
use tracing::{debug, info, warn};

use super::Job;
use crate::disposition::Outcome;
use crate::error::Result;
use crate::lease::Lease;
use crate::registry::{Cancellation, TaskContext};
use crate::stats::WorkerStats;
use crate::worker::lane::AckMsg;
use celeriac_schema::control::KillSignal;
/// When a run started, and how it is cancelled.
pub(super) struct Start {
    /// Unix ms.
    pub(super) started_ms: u64,
    /// Set by a revocation with `terminate`.
    pub(super) cancel: Arc<Cancellation>,
}

/// What running a delivery's handler came to.
pub(super) struct Executed {
    pub(super) outcome: Outcome,
    /// The envelope, without its input (the handler took it).
    pub(super) env: Envelope,
    /// The lease a long run swapped its delivery for.
    pub(super) lease: Option<Lease>,
    /// The handler's result.
    pub(super) output: Option<rmpv::Value>,
    /// Whether the run wrote `started` itself (it passed
    /// [`STARTED_AFTER`]).
    pub(super) start_recorded: bool,
}

/// A run still going after this long writes its `started` state on its
/// own; a shorter one records it with its outcome, in the same write.
const STARTED_AFTER: Duration = Duration::from_millis(50);

/// How long a handler cancelled with SIGTERM (a revocation with
/// `terminate`) may take to stop before its run is aborted.
const TERMINATE_GRACE: Duration = Duration::from_secs(3);

impl Job {
    /// Runs the handler under its hard time limit, catching panics, and
    /// swaps the delivery for a lease if it runs long.
    pub(super) async fn execute(
        &self,
        handler: Arc<dyn crate::registry::ErasedHandler>,
        mut env: Envelope,
        delivery: &Delivery,
        tag: u64,
        store_run: Option<&(String, String)>,
        Start { started_ms, cancel }: Start,
    ) -> Executed {
        let config = &self.shared.config;
        self.shared.control.limits.override_times(&mut env);
        let input = std::mem::replace(&mut env.input, rmpv::Value::Nil);
        let env = Arc::new(env);
        if env.attempt > 0 || delivery.redelivered {
            debug!(
                attempt = env.attempt,
                redelivered = delivery.redelivered,
                "running again"
            );
        }
        let ctx = TaskContext::new(
            env.clone(),
            self.queue.clone(),
            config.worker_id.clone(),
            Some(self.shared.spawner.clone()),
        )
        .with_cancellation(cancel.clone());
        let hard_limit = env.hard_time_limit_ms.map(Duration::from_millis);
        let run = AssertUnwindSafe(handler.call(input, ctx)).catch_unwind();
        let run = async move {
            match hard_limit {
                Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| limit),
                None => Ok(run.await),
            }
        };
        tokio::pin!(run);
        let mut lease: Option<Lease> = None;
        let mut next_lease_check = tokio::time::Instant::now() + config.lease_after;
        // The store's run lease is renewed three times per TTL.
        let renew_every = config
            .store
            .as_ref()
            .map(|s| s.settings().lease_ttl / 3)
            .unwrap_or(Duration::from_secs(3600));
        let mut next_renewal = tokio::time::Instant::now() + renew_every;
        // A run of the store past STARTED_AFTER writes `started` on its own.
        let mut record_start = store_run.map(|_| tokio::time::Instant::now() + STARTED_AFTER);
        let mut start_recorded = false;
        // Set once the run is cancelled: when it is aborted.
        let mut abort_at: Option<tokio::time::Instant> = None;
        let result = loop {
            tokio::select! {
                result = &mut run => break Some(result),
                _ = cancel.token().cancelled(), if abort_at.is_none() => {
                    let grace = match cancel.signal() {
                        Some(KillSignal::Kill) => Duration::ZERO,
                        _ => TERMINATE_GRACE,
                    };
                    info!(?grace, "revoked while running: cancelling the run");
                    abort_at = Some(tokio::time::Instant::now() + grace);
                }
                _ = tokio::time::sleep_until(abort_at.unwrap_or_else(tokio::time::Instant::now)), if abort_at.is_some() => {
                    warn!("the cancelled run did not stop within its grace; aborting it");
                    break None;
                }
                _ = tokio::time::sleep_until(record_start.unwrap_or(next_renewal)), if record_start.is_some() => {
                    record_start = None;
                    if let Some(store) = &config.store {
                        let mut update = self.update(&env, TaskState::Started);
                        update.at_ms = started_ms;
                        match store.started(&update).await {
                            Ok(()) => start_recorded = true,
                            Err(e) => warn!(error = %e, "could not record the start; the outcome will"),
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_renewal), if store_run.is_some() => {
                    if let (Some(store), Some((key, token))) = (&config.store, store_run) {
                        match store.renew(key, token).await {
                            Ok(true) => {}
                            Ok(false) => warn!("the run lease expired; another delivery of this task may run"),
                            Err(e) => warn!(error = %e, "could not renew the run lease"),
                        }
                    }
                    next_renewal = tokio::time::Instant::now() + renew_every;
                }
                _ = tokio::time::sleep_until(next_lease_check) => {
                    match &mut lease {
                        None => match self.start_lease(&env, delivery).await {
                            Ok(held) => {
                                let _ = self.ack.send(AckMsg::Finished(tag));
                                WorkerStats::bump(&self.shared.stats.leased);
                                info!(lease = %held.queue_name(), "long run: delivery swapped for a lease");
                                lease = Some(held);
                            }
                            Err(e) => warn!(error = %e, "could not take a lease for a long run"),
                        },
                        Some(held) => {
                            if let Err(e) = held.renew(&self.shared.publisher).await {
                                warn!(error = %e, "could not renew the lease of a long run");
                            }
                        }
                    }
                    next_lease_check = tokio::time::Instant::now() + config.lease_ttl / 3;
                }
            }
        };
        let mut output = None;
        let cancelled = cancel.token().is_cancelled();
        let outcome = match result {
            // Work that completed stays done, even if a revocation came in.
            Some(Ok(Ok(Ok(value)))) => {
                output = Some(value);
                Outcome::Succeeded
            }
            _ if cancelled => {
                Outcome::Revoked("revoked while running; the run was stopped".to_owned())
            }
            None => Outcome::Revoked("revoked while running".to_owned()),
            Some(Ok(Ok(Err(err)))) => {
                warn!(error = %err, attempt = env.attempt, "task failed");
                Outcome::Failed(err)
            }
            Some(Ok(Err(panic))) => {
                let message = panic_message(panic.as_ref());
                warn!(%message, attempt = env.attempt, "task panicked");
                Outcome::Panicked(message)
            }
            Some(Err(limit)) => {
                warn!(
                    ?limit,
                    attempt = env.attempt,
                    "task hit its hard time limit"
                );
                Outcome::TimedOut(limit)
            }
        };
        let env = Arc::try_unwrap(env).unwrap_or_else(|shared| (*shared).clone());
        Executed {
            outcome,
            env,
            lease,
            output,
            start_recorded,
        }
    }

    pub(super) async fn start_lease(&self, env: &Envelope, delivery: &Delivery) -> Result<Lease> {
        let topology = &self.shared.config.topology;
        Lease::take(
            &self.publisher,
            topology,
            // A fair task's copy goes back to its shard.
            &topology.route_name(&self.queue, env.tenant.as_deref()),
            env.id,
            self.shared.config.lease_ttl,
            &delivery.data,
            delivery.properties.clone(),
        )
        .await
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "the handler panicked".to_owned()
    }
}

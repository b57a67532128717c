//! Admission: the store's run lease, held while another run has it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::store::{Begin, Store, Update};
use celeriac_schema::{Envelope, TaskState};
use tracing::{debug, info, warn};

use super::Job;
use crate::stats::WorkerStats;
use crate::worker::reconnect_delay;
/// How often a delivery held behind another run's lease asks again.
const BUSY_RECHECK: Duration = Duration::from_millis(500);

impl Job {
    /// Asks the store whether to run. While another run holds the lease,
    /// the delivery is held (unacked, so a crash loop still counts toward
    /// the delivery limit) and asked again as the lease nears its end; a
    /// hold longer than half the consumer timeout is deferred through the
    /// delay cascade instead. `None` when the worker shuts down.
    pub(super) async fn begin(
        &self,
        store: &Arc<dyn Store>,
        key: &str,
        token: &str,
        revocable: &[&str],
    ) -> Option<Begin> {
        let held_since = tokio::time::Instant::now();
        loop {
            let begun = self
                .store_call("lease", || store.admit(key, token, revocable))
                .await?;
            let Begin::Busy { retry_after } = begun else {
                return Some(begun);
            };
            if held_since.elapsed() + retry_after > self.shared.config.lease_after {
                return Some(begun);
            }
            debug!(
                ?retry_after,
                "running elsewhere; holding the delivery until its lease ends"
            );
            let pause = retry_after.min(BUSY_RECHECK) + Duration::from_millis(5);
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    pub(super) fn lock_permit(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<tokio::sync::OwnedSemaphorePermit>> {
        self.permit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A store update for `env` entering `state`, written by this worker.
    pub(super) fn update(&self, env: &Envelope, state: TaskState) -> Update {
        let mut update = Update::new(env.id, env.task.clone(), &*self.queue, state, env.attempt);
        update.worker = Some(String::from(&*self.shared.config.worker_id));
        update.idempotency_key = env.idempotency_key.clone();
        update.workflow_id = env.workflow.as_ref().map(|w| w.workflow_id.to_string());
        update
    }

    /// Calls the store until it answers; while it does not, the worker is
    /// not ready. `None` when the worker shuts down first.
    pub(super) async fn store_call<T, F, Fut>(&self, op: &'static str, call: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = celeriac_schema::Result<T>>,
    {
        let stats = &self.shared.stats;
        let mut failures: u32 = 0;
        loop {
            match call().await {
                Ok(value) => {
                    if failures > 0 {
                        stats.store_down.store(false, Ordering::Relaxed);
                        info!(op, "state store reachable again");
                    }
                    return Some(value);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    WorkerStats::bump(&stats.store_errors);
                    stats.store_down.store(true, Ordering::Relaxed);
                    warn!(op, error = %e, attempt = failures, "state store call failed; holding the delivery and retrying");
                    tokio::select! {
                        _ = self.shared.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(reconnect_delay(failures)) => {}
                    }
                }
            }
        }
    }
}

//! A delivery of a purged queue: sent before `celeriac purge` emptied its
//! queue, it waited in a delay level and came back afterwards. It is
//! dropped without running: acked, stored as `revoked` (error type
//! `Purged`), announced and counted.

use std::sync::Arc;

use celeriac_schema::store::{Store, TaskFailure};
use celeriac_schema::{Envelope, TaskState};
use tracing::info;

use super::Job;
use crate::metrics::TaskMetrics;
use crate::stats::WorkerStats;
use crate::worker::lane::AckMsg;

/// The reason of a purged task, in its `revoked` event.
pub(in crate::worker) const PURGED: &str = "purged";

/// The error type stored for a purged task.
const PURGED_ERROR: &str = "Purged";

impl Job {
    /// Whether `env` was sent before its queue was last purged.
    pub(super) fn is_purged(&self, env: &Envelope) -> bool {
        self.shared.purges.covers(&self.queue, env.created_at)
    }

    /// Drops a purged delivery: its state is stored (if there is a store)
    /// before the ack, so a crash in between only drops it again.
    pub(super) async fn drop_purged(&self, env: &Envelope, tag: u64, metrics: &TaskMetrics) {
        info!("sent before its queue was purged; dropping it");
        if let Some(store) = &self.shared.config.store {
            if !self.record_purged(store, env).await {
                // Shutting down while the store is unreachable.
                let _ = self.ack.send(AckMsg::Requeue(tag));
                return;
            }
        }
        let _ = self.ack.send(AckMsg::Finished(tag));
        WorkerStats::bump(&self.shared.stats.purged);
        metrics.revoked.inc();
        self.emit_revoked(env, PURGED);
    }

    async fn record_purged(&self, store: &Arc<dyn Store>, env: &Envelope) -> bool {
        let mut update = self.update(env, TaskState::Revoked);
        update.error = Some(TaskFailure {
            error_type: PURGED_ERROR.to_owned(),
            message: "its queue was purged after it was sent".to_owned(),
        });
        self.store_call("record", || store.record(std::slice::from_ref(&update)))
            .await
            .is_some()
    }
}

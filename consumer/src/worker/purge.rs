//! Purge marks: `celeriac purge` empties a work queue, but the tasks of
//! that queue waiting in the shared delay levels cannot be picked out.
//! It leaves a mark in the state store instead (the queue and when it was
//! purged), and a worker drops any delivery of that queue whose envelope
//! was created before the mark.
//!
//! The marks are read from the store on a period and kept here, so a
//! delivery costs one atomic load (and a map lookup while any mark is
//! live), never a store round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use celeriac_schema::store::Store;
use celeriac_schema::topology::MAX_DELAY;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often a worker reads the purge marks.
pub(crate) const REFRESH: Duration = Duration::from_secs(2);

/// The live purge marks, as last read from the store.
#[derive(Debug, Default)]
pub(crate) struct PurgeMarks {
    any: AtomicBool,
    marks: RwLock<HashMap<String, u64>>,
}

impl PurgeMarks {
    /// Whether a task of `queue` created at `created_at` (ms) was purged.
    pub(crate) fn covers(&self, queue: &str, created_at: u64) -> bool {
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        self.marks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(queue)
            .is_some_and(|&purged_at| created_at < purged_at)
    }

    /// Takes the marks read from the store; marks older than the longest
    /// delay can cover nothing that is still waiting and are left out.
    pub(crate) fn replace(&self, marks: Vec<(String, u64)>, now_ms: u64) {
        let oldest = now_ms.saturating_sub(MAX_DELAY.as_millis() as u64);
        let live: HashMap<String, u64> = marks.into_iter().filter(|(_, at)| *at > oldest).collect();
        let mut held = self
            .marks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (queue, at) in &live {
            if held.get(queue) != Some(at) {
                info!(%queue, purged_at = at, "queue purged: its tasks sent before then will be dropped");
            }
        }
        self.any.store(!live.is_empty(), Ordering::Relaxed);
        *held = live;
    }

    /// Reads the marks once.
    ///
    /// # Errors
    ///
    /// The store's.
    pub(crate) async fn refresh(&self, store: &dyn Store) -> celeriac_schema::Result<()> {
        let marks = store.purge_marks().await?;
        self.replace(marks, celeriac_schema::now_ms());
        Ok(())
    }
}

/// Reads the marks every [`REFRESH`] until `stop`; keeps the last ones
/// read while the store does not answer.
pub(crate) async fn keep_fresh(
    marks: Arc<PurgeMarks>,
    store: Arc<dyn Store>,
    stop: CancellationToken,
) {
    let mut failing = false;
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match marks.refresh(&*store).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "cannot read the purge marks; keeping the last ones read");
            }
            Err(e) => debug!(error = %e, "cannot read the purge marks"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_covers_its_queue_before_its_time_only() {
        let marks = PurgeMarks::default();
        assert!(!marks.covers("q", 0));
        let now = 10_000_000_000;
        marks.replace(vec![("q".into(), now - 5)], now);
        assert!(marks.covers("q", now - 6));
        assert!(!marks.covers("q", now - 5));
        assert!(!marks.covers("other", 0));
        // Older than the longest delay: covers nothing.
        marks.replace(
            vec![("q".into(), now - MAX_DELAY.as_millis() as u64 - 1)],
            now,
        );
        assert!(!marks.covers("q", 0));
    }
}

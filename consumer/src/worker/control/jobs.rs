//! The deliveries a worker is handling: reserved (received, not running
//! yet) and active (running), for `inspect` and for revocations that
//! terminate runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use celeriac_schema::control::KillSignal;
use celeriac_schema::{now_ms, Envelope, TaskId};
use serde::Serialize;

use crate::registry::Cancellation;

/// The deliveries being handled.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

#[derive(Debug)]
struct Entry {
    id: TaskId,
    task: String,
    queue: Arc<str>,
    attempt: u32,
    key: Option<String>,
    workflow: Option<TaskId>,
    received_at: u64,
    started_at: Option<u64>,
    cancel: Arc<Cancellation>,
}

/// One job as `inspect active` and `inspect reserved` show it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobInfo {
    id: String,
    task: String,
    queue: String,
    attempt: u32,
    received_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime_ms: Option<u64>,
}

/// A job's place in [`Jobs`], removed when dropped.
#[derive(Debug)]
pub(crate) struct JobSlot<'a> {
    jobs: &'a Jobs,
    seq: u64,
    pub(crate) cancel: Arc<Cancellation>,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a decoded delivery as reserved.
    pub(crate) fn reserve(&self, env: &Envelope, queue: &Arc<str>) -> JobSlot<'_> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(Cancellation::default());
        self.lock().insert(
            seq,
            Entry {
                id: env.id,
                task: env.task.clone(),
                queue: queue.clone(),
                attempt: env.attempt,
                key: env.idempotency_key.clone(),
                workflow: env.workflow.as_ref().map(|w| w.workflow_id),
                received_at: now_ms(),
                started_at: None,
                cancel: cancel.clone(),
            },
        );
        JobSlot {
            jobs: self,
            seq,
            cancel,
        }
    }

    /// Records a delivery waiting for a concurrency slot, read from its
    /// AMQP properties (`message_id`, `type`) without decoding it; `None`
    /// when they do not name a task.
    pub(crate) fn waiting(
        &self,
        properties: &lapin::BasicProperties,
        queue: &Arc<str>,
    ) -> Option<JobSlot<'_>> {
        let id: TaskId = properties.message_id().as_ref()?.as_str().parse().ok()?;
        let task = properties.kind().as_ref()?.as_str().to_owned();
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(Cancellation::default());
        self.lock().insert(
            seq,
            Entry {
                id,
                task,
                queue: queue.clone(),
                attempt: 0,
                key: None,
                workflow: None,
                received_at: now_ms(),
                started_at: None,
                cancel: cancel.clone(),
            },
        );
        Some(JobSlot {
            jobs: self,
            seq,
            cancel,
        })
    }

    /// Cancels the jobs whose task id, workflow id or idempotency key is
    /// one of `ids`, with `signal`; how many.
    pub(crate) fn cancel_matching(&self, ids: &[String], signal: KillSignal) -> usize {
        let jobs = self.lock();
        let mut cancelled = 0;
        for entry in jobs.values() {
            let id = entry.id.to_string();
            let workflow = entry.workflow.map(|w| w.to_string());
            let hit = ids.iter().any(|want| {
                *want == id
                    || workflow.as_deref() == Some(want.as_str())
                    || entry.key.as_deref() == Some(want.as_str())
            });
            if hit {
                entry.cancel.cancel(signal);
                cancelled += 1;
            }
        }
        cancelled
    }

    /// The running jobs (`active`) or the waiting ones.
    pub(crate) fn list(&self, active: bool) -> Vec<JobInfo> {
        let now = now_ms();
        let mut list: Vec<JobInfo> = self
            .lock()
            .values()
            .filter(|e| e.started_at.is_some() == active)
            .map(|e| JobInfo {
                id: e.id.to_string(),
                task: e.task.clone(),
                queue: e.queue.to_string(),
                attempt: e.attempt,
                received_at: e.received_at,
                started_at: e.started_at,
                runtime_ms: e.started_at.map(|s| now.saturating_sub(s)),
            })
            .collect();
        list.sort_by(|a, b| a.received_at.cmp(&b.received_at).then(a.id.cmp(&b.id)));
        list
    }
}

impl JobSlot<'_> {
    /// The job's run begins.
    pub(crate) fn start(&self) {
        if let Some(entry) = self.jobs.lock().get_mut(&self.seq) {
            entry.started_at = Some(now_ms());
        }
    }
}

impl Drop for JobSlot<'_> {
    fn drop(&mut self) {
        self.jobs.lock().remove(&self.seq);
    }
}

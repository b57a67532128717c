//! The in-memory store: the embedded mode's store and the reference the
//! Redis store is tested against.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::control_state::{ControlHash, ControlState};
use super::{
    Begin, Claim, NodeProgress, Ready, Store, StoreSettings, TaskRecord, Update, WorkflowRecord,
    WorkflowState, CLAIM_STALE_AFTER,
};
use crate::workflow::{Node, Workflow};
use crate::{Result, TaskId, TaskState};

/// A [`Store`] in process memory. TTLs are honoured lazily, on access.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use celeriac_schema::store::{MemoryStore, Store, StoreSettings};
///
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new(StoreSettings::default()));
/// assert_eq!(store.settings().result_ttl.as_secs(), 86_400);
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    settings: StoreSettings,
    inner: Mutex<Inner>,
    control: ControlState,
    pub(super) policy: super::policy::MemoryPolicy,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<TaskId, (TaskRecord, Instant)>,
    /// Succeeded execution keys: key → (task id, expiry).
    done: HashMap<String, (TaskId, Instant)>,
    /// Run leases: key → (token, expiry).
    leases: HashMap<String, (String, Instant)>,
    /// Enqueue claims: key → (task id, expiry).
    claims: HashMap<String, (TaskId, Instant)>,
    /// Waiters woken when a task reaches a final state.
    waiters: HashMap<TaskId, watch::Sender<bool>>,
    /// Workflows and their coordination state.
    workflows: HashMap<TaskId, Flow>,
    /// Purge marks: queue → (purged at, expiry).
    purges: HashMap<String, (u64, Instant)>,
}

#[derive(Debug)]
struct Flow {
    record: WorkflowRecord,
    nodes: HashMap<String, Node>,
    children: HashMap<String, Vec<String>>,
    pending: HashMap<String, usize>,
}

impl Inner {
    fn wake(&mut self, id: TaskId) {
        if let Some(tx) = self.waiters.remove(&id) {
            let _ = tx.send(true);
        }
    }

    /// One node finished: counts it and closes the workflow after the last.
    fn node_finished(&mut self, workflow: TaskId) {
        let Some(flow) = self.workflows.get_mut(&workflow) else {
            return;
        };
        let record = &mut flow.record;
        record.remaining = record.remaining.saturating_sub(1);
        if record.remaining == 0 && record.state == WorkflowState::Running {
            record.state = if record.failed > 0 {
                WorkflowState::Failed
            } else {
                WorkflowState::Succeeded
            };
            record.finished_at = Some(crate::now_ms());
            self.wake(workflow);
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new(settings: StoreSettings) -> MemoryStore {
        MemoryStore {
            settings,
            inner: Mutex::new(Inner::default()),
            control: ControlState::default(),
            policy: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn record(&mut self, update: &Update, ttl: Duration) {
        if let Some(started) = update.started_part() {
            self.record(&started, ttl);
        }
        let now = Instant::now();
        let expiry = now + ttl;
        match self.records.get_mut(&update.id) {
            Some((record, at)) if *at > now => {
                record.apply(update);
                *at = expiry;
            }
            _ => {
                self.records
                    .insert(update.id, (TaskRecord::from_first(update), expiry));
            }
        }
        if update.state.is_terminal() {
            self.wake(update.id);
        }
    }

    fn get(&self, id: TaskId) -> Option<TaskRecord> {
        match self.records.get(&id) {
            Some((record, at)) if *at > Instant::now() => Some(record.clone()),
            _ => None,
        }
    }
}

fn live<V: Clone>(map: &HashMap<String, (V, Instant)>, key: &str) -> Option<(V, Instant)> {
    map.get(key).filter(|(_, at)| *at > Instant::now()).cloned()
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    fn policy(&self) -> Option<&dyn super::Policy> {
        Some(self)
    }

    async fn mark_purged(&self, queue: &str, at_ms: u64, ttl: Duration) -> Result<()> {
        self.lock()
            .purges
            .insert(queue.to_owned(), (at_ms, Instant::now() + ttl));
        Ok(())
    }

    async fn purge_marks(&self) -> Result<Vec<(String, u64)>> {
        let now = Instant::now();
        Ok(self
            .lock()
            .purges
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(queue, (at, _))| (queue.clone(), *at))
            .collect())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn record(&self, updates: &[Update]) -> Result<()> {
        let mut inner = self.lock();
        for update in updates {
            inner.record(update, self.settings.result_ttl);
        }
        Ok(())
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        Ok(self.lock().get(id))
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskRecord>> {
        let mut rx = {
            let mut inner = self.lock();
            if let Some(record) = inner.get(id).filter(|r| r.state.is_terminal()) {
                return Ok(Some(record));
            }
            inner
                .waiters
                .entry(id)
                .or_insert_with(|| watch::channel(false).0)
                .subscribe()
        };
        // Woken by the final write, or by the timeout.
        let _ = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
        Ok(self.lock().get(id).filter(|r| r.state.is_terminal()))
    }

    async fn claim(&self, claims: &[(String, Update)]) -> Result<Vec<Claim>> {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut answers = Vec::with_capacity(claims.len());
        for (key, update) in claims {
            match live(&inner.claims, key) {
                None => {
                    inner
                        .claims
                        .insert(key.clone(), (update.id, now + self.settings.key_ttl));
                    inner.record(update, self.settings.result_ttl);
                    answers.push(Claim::Claimed);
                }
                // A send claiming again after an answer it never got.
                Some((task_id, _))
                    if task_id == update.id
                        && inner
                            .get(task_id)
                            .is_none_or(|r| r.state == TaskState::Created) =>
                {
                    answers.push(Claim::Claimed)
                }
                Some((task_id, _)) => {
                    let stale = inner.get(task_id).is_some_and(|r| {
                        r.state == TaskState::Created
                            && r.created_at.is_some_and(|at| {
                                update.at_ms.saturating_sub(at)
                                    > CLAIM_STALE_AFTER.as_millis() as u64
                            })
                    });
                    answers.push(Claim::Existing {
                        task_id,
                        republish: stale,
                    });
                }
            }
        }
        Ok(answers)
    }

    async fn unclaim(&self, claims: &[(String, TaskId)]) -> Result<()> {
        let mut inner = self.lock();
        for (key, id) in claims {
            if inner.claims.get(key).is_some_and(|(bound, _)| bound == id) {
                inner.claims.remove(key);
            }
        }
        Ok(())
    }

    async fn lease(&self, key: &str, token: &str) -> Result<Begin> {
        let mut inner = self.lock();
        if let Some((task_id, _)) = live(&inner.done, key) {
            return Ok(Begin::Succeeded { task_id });
        }
        let now = Instant::now();
        if let Some((holder, expiry)) = live(&inner.leases, key) {
            // A run asking again for the lease it holds has it.
            if holder == token {
                return Ok(Begin::Run);
            }
            return Ok(Begin::Busy {
                retry_after: expiry.saturating_duration_since(now),
            });
        }
        inner.leases.insert(
            key.to_owned(),
            (token.to_owned(), now + self.settings.lease_ttl),
        );
        Ok(Begin::Run)
    }

    async fn admit(&self, key: &str, token: &str, revocable: &[&str]) -> Result<Begin> {
        if let Some(id) = self.control.revoked_any(revocable) {
            return Ok(Begin::Revoked { id });
        }
        self.lease(key, token).await
    }

    async fn revoke(&self, ids: &[String], expires_at: u64) -> Result<()> {
        self.control.revoke(ids, expires_at);
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<(String, u64)>> {
        Ok(self.control.revocations())
    }

    async fn hash_all(&self, hash: ControlHash) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self.control.hash_all(hash))
    }

    async fn hash_put(&self, hash: ControlHash, field: &str, value: Option<&[u8]>) -> Result<()> {
        self.control.hash_put(hash, field, value);
        Ok(())
    }

    async fn hash_swap(
        &self,
        hash: ControlHash,
        field: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        Ok(self.control.hash_swap(hash, field, old, new))
    }

    async fn started(&self, update: &Update) -> Result<()> {
        self.lock().record(update, self.settings.result_ttl);
        Ok(())
    }

    async fn results(&self, ids: &[TaskId]) -> Result<Vec<Option<Vec<u8>>>> {
        let inner = self.lock();
        Ok(ids
            .iter()
            .map(|id| inner.get(*id).and_then(|r| r.result))
            .collect())
    }

    async fn create_workflow(&self, workflow: &Workflow, outputs: &[String]) -> Result<bool> {
        if self.lock().workflows.contains_key(&workflow.id) {
            return Ok(false);
        }
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        let mut progress = std::collections::BTreeMap::new();
        let mut pending = HashMap::new();
        for node in &workflow.nodes {
            for dep in &node.dependencies {
                children
                    .entry(dep.clone())
                    .or_default()
                    .push(node.id.clone());
            }
            pending.insert(node.id.clone(), node.dependencies.len());
            let state = if node.dependencies.is_empty() {
                NodeProgress::Released
            } else {
                NodeProgress::Waiting
            };
            progress.insert(node.id.clone(), state);
        }
        let flow = Flow {
            record: WorkflowRecord {
                id: workflow.id,
                state: if workflow.nodes.is_empty() {
                    WorkflowState::Succeeded
                } else {
                    WorkflowState::Running
                },
                nodes: workflow.nodes.len(),
                remaining: workflow.nodes.len(),
                failed: 0,
                released: 0,
                outputs: outputs.to_vec(),
                created_at: crate::now_ms(),
                finished_at: workflow.nodes.is_empty().then(crate::now_ms),
                progress,
            },
            nodes: workflow
                .nodes
                .iter()
                .map(|n| (n.id.clone(), n.clone()))
                .collect(),
            children,
            pending,
        };
        // Checked again under the lock: a concurrent create of the same id
        // may have won while this one was built.
        match self.lock().workflows.entry(workflow.id) {
            std::collections::hash_map::Entry::Occupied(_) => Ok(false),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(flow);
                Ok(true)
            }
        }
    }

    async fn workflow_nodes(
        &self,
        workflow: TaskId,
        nodes: &[String],
    ) -> Result<Vec<Option<Node>>> {
        let inner = self.lock();
        let flow = inner.workflows.get(&workflow);
        Ok(nodes
            .iter()
            .map(|id| flow.and_then(|f| f.nodes.get(id).cloned()))
            .collect())
    }

    async fn node_succeeded(&self, workflow: TaskId, node: &str) -> Result<Vec<Ready>> {
        let mut inner = self.lock();
        let Some(flow) = inner.workflows.get_mut(&workflow) else {
            return Ok(Vec::new());
        };
        let children = flow.children.get(node).cloned().unwrap_or_default();
        let mut newly_done = false;
        match flow.record.progress.get(node) {
            Some(NodeProgress::Succeeded) => {}
            Some(NodeProgress::Failed | NodeProgress::Skipped) | None => return Ok(Vec::new()),
            Some(_) => {
                flow.record
                    .progress
                    .insert(node.to_owned(), NodeProgress::Succeeded);
                for child in &children {
                    if let Some(p) = flow.pending.get_mut(child) {
                        *p = p.saturating_sub(1);
                    }
                }
                newly_done = true;
            }
        }
        let mut ready = Vec::new();
        for child in children {
            if flow.pending.get(&child).copied().unwrap_or(0) > 0 {
                continue;
            }
            match flow.record.progress.get(&child) {
                Some(NodeProgress::Waiting) => {
                    flow.record
                        .progress
                        .insert(child.clone(), NodeProgress::Released);
                    flow.record.released += 1;
                    ready.push(Ready {
                        node: child,
                        first: true,
                    });
                }
                Some(NodeProgress::Released) => ready.push(Ready {
                    node: child,
                    first: false,
                }),
                _ => {}
            }
        }
        if newly_done {
            inner.node_finished(workflow);
        }
        Ok(ready)
    }

    async fn node_failed(&self, workflow: TaskId, node: &str) -> Result<Vec<String>> {
        let mut inner = self.lock();
        let Some(flow) = inner.workflows.get_mut(&workflow) else {
            return Ok(Vec::new());
        };
        match flow.record.progress.get(node) {
            Some(NodeProgress::Waiting | NodeProgress::Released) => {}
            _ => return Ok(Vec::new()),
        }
        flow.record
            .progress
            .insert(node.to_owned(), NodeProgress::Failed);
        flow.record.failed += 1;
        let mut skipped = Vec::new();
        let mut queue: Vec<String> = flow.children.get(node).cloned().unwrap_or_default();
        while let Some(child) = queue.pop() {
            if matches!(
                flow.record.progress.get(&child),
                Some(NodeProgress::Waiting | NodeProgress::Released)
            ) {
                flow.record
                    .progress
                    .insert(child.clone(), NodeProgress::Skipped);
                queue.extend(flow.children.get(&child).cloned().unwrap_or_default());
                skipped.push(child);
            }
        }
        let finished = 1 + skipped.len();
        for _ in 0..finished {
            inner.node_finished(workflow);
        }
        Ok(skipped)
    }

    async fn get_workflow(&self, workflow: TaskId) -> Result<Option<WorkflowRecord>> {
        Ok(self
            .lock()
            .workflows
            .get(&workflow)
            .map(|f| f.record.clone()))
    }

    async fn wait_workflow(
        &self,
        workflow: TaskId,
        timeout: Duration,
    ) -> Result<Option<WorkflowRecord>> {
        let mut rx = {
            let mut inner = self.lock();
            match inner.workflows.get(&workflow) {
                Some(f) if f.record.state != WorkflowState::Running => {
                    return Ok(Some(f.record.clone()))
                }
                _ => {}
            }
            inner
                .waiters
                .entry(workflow)
                .or_insert_with(|| watch::channel(false).0)
                .subscribe()
        };
        let _ = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
        Ok(self
            .lock()
            .workflows
            .get(&workflow)
            .map(|f| f.record.clone())
            .filter(|r| r.state != WorkflowState::Running))
    }

    async fn renew(&self, key: &str, token: &str) -> Result<bool> {
        let mut inner = self.lock();
        let ours = live(&inner.leases, key).is_some_and(|(t, _)| t == token);
        if ours {
            inner.leases.insert(
                key.to_owned(),
                (token.to_owned(), Instant::now() + self.settings.lease_ttl),
            );
        }
        Ok(ours)
    }

    async fn finish(&self, key: &str, token: &str, update: &Update) -> Result<()> {
        let mut inner = self.lock();
        if update.state == TaskState::Succeeded {
            inner.done.insert(
                key.to_owned(),
                (update.id, Instant::now() + self.settings.key_ttl),
            );
        }
        if live(&inner.leases, key).is_some_and(|(t, _)| t == token) {
            inner.leases.remove(key);
        }
        inner.record(update, self.settings.result_ttl);
        Ok(())
    }
}

#[cfg(test)]
mod tests;

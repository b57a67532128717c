//! The in-memory store: the embedded mode's store and the reference the
//! Redis store is tested against.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Begin, Claim, Store, StoreSettings, TaskRecord, Update, CLAIM_STALE_AFTER};
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
}

impl MemoryStore {
    /// An empty store.
    pub fn new(settings: StoreSettings) -> MemoryStore {
        MemoryStore {
            settings,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn record(&mut self, update: &Update, ttl: Duration) {
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
            if let Some(tx) = self.waiters.remove(&update.id) {
                let _ = tx.send(true);
            }
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

    async fn begin(&self, key: &str, token: &str, update: &Update) -> Result<Begin> {
        let mut inner = self.lock();
        if let Some((task_id, _)) = live(&inner.done, key) {
            return Ok(Begin::Succeeded { task_id });
        }
        let now = Instant::now();
        if let Some((_, expiry)) = live(&inner.leases, key) {
            return Ok(Begin::Busy {
                retry_after: expiry.saturating_duration_since(now),
            });
        }
        inner.leases.insert(
            key.to_owned(),
            (token.to_owned(), now + self.settings.lease_ttl),
        );
        inner.record(update, self.settings.result_ttl);
        Ok(Begin::Run)
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
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    fn update(id: TaskId, state: TaskState) -> Update {
        Update::new(id, "t", "default", state, 0)
    }

    #[test]
    fn queued_after_started_keeps_started() {
        rt().block_on(async {
            let store = MemoryStore::new(StoreSettings::default());
            let id = TaskId::new();
            store
                .begin("k", "a", &update(id, TaskState::Started))
                .await?;
            store.record(&[update(id, TaskState::Queued)]).await?;
            let record = store.get(id).await?.expect("a record");
            assert_eq!(record.state, TaskState::Started);
            assert_eq!(record.runs, 1);
            assert_eq!(record.history.len(), 2);
            assert!(record.queued_at.is_some());
            Ok::<_, crate::Error>(())
        })
        .expect("store calls succeed");
    }

    #[test]
    fn a_held_lease_makes_a_second_run_wait_until_it_expires() {
        rt().block_on(async {
            let store = MemoryStore::new(StoreSettings {
                lease_ttl: Duration::from_millis(50),
                ..StoreSettings::default()
            });
            let id = TaskId::new();
            let started = update(id, TaskState::Started);
            assert_eq!(store.begin("k", "a", &started).await?, Begin::Run);
            assert!(matches!(
                store.begin("k", "b", &started).await?,
                Begin::Busy { .. }
            ));
            assert!(store.renew("k", "a").await?);
            assert!(!store.renew("k", "b").await?);
            tokio::time::sleep(Duration::from_millis(80)).await;
            // The first run's worker died: its lease ran out.
            assert_eq!(store.begin("k", "b", &started).await?, Begin::Run);
            assert!(!store.renew("k", "a").await?);
            Ok::<_, crate::Error>(())
        })
        .expect("store calls succeed");
    }

    #[test]
    fn a_failed_run_releases_the_key_for_the_retry() {
        rt().block_on(async {
            let store = MemoryStore::new(StoreSettings::default());
            let id = TaskId::new();
            store
                .begin("k", "a", &update(id, TaskState::Started))
                .await?;
            store
                .finish("k", "a", &update(id, TaskState::Retrying))
                .await?;
            assert_eq!(
                store
                    .begin("k", "b", &update(id, TaskState::Started))
                    .await?,
                Begin::Run
            );
            Ok::<_, crate::Error>(())
        })
        .expect("store calls succeed");
    }

    #[test]
    fn claims_return_the_first_id() {
        rt().block_on(async {
            let store = MemoryStore::new(StoreSettings::default());
            let first = TaskId::new();
            let second = TaskId::new();
            let answers = store
                .claim(&[
                    ("key".into(), update(first, TaskState::Created)),
                    ("key".into(), update(second, TaskState::Created)),
                ])
                .await?;
            assert_eq!(answers[0], Claim::Claimed);
            assert_eq!(
                answers[1],
                Claim::Existing {
                    task_id: first,
                    republish: false
                }
            );
            Ok::<_, crate::Error>(())
        })
        .expect("store calls succeed");
    }

    #[test]
    fn wait_wakes_on_the_final_write_and_times_out_otherwise() {
        rt().block_on(async {
            let store = std::sync::Arc::new(MemoryStore::new(StoreSettings::default()));
            let id = TaskId::new();
            assert!(store.wait(id, Duration::from_millis(20)).await?.is_none());
            let writer = store.clone();
            let task = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                writer
                    .finish("k", "a", &update(id, TaskState::Succeeded))
                    .await
            });
            let record = store.wait(id, Duration::from_secs(5)).await?;
            assert_eq!(record.map(|r| r.state), Some(TaskState::Succeeded));
            task.await.expect("the writer finishes")?;
            Ok::<_, crate::Error>(())
        })
        .expect("store calls succeed");
    }
}

//! The concurrency limit, changed at run time, and the queues consumed,
//! added and cancelled at run time.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot, Semaphore};

/// The concurrency limit: a semaphore grown with more permits and shrunk
/// by taking permits as running tasks give them back, never by stopping
/// a task.
#[derive(Debug)]
pub(crate) struct Concurrency {
    semaphore: Arc<Semaphore>,
    state: Arc<Mutex<PoolState>>,
}

#[derive(Debug)]
struct PoolState {
    /// The limit asked for.
    target: usize,
    /// Permits still to take out of circulation after a shrink.
    owed: usize,
    /// Whether a task is taking owed permits.
    collecting: bool,
}

impl Concurrency {
    pub(crate) fn new(concurrency: usize) -> Concurrency {
        Concurrency {
            semaphore: Arc::new(Semaphore::new(concurrency)),
            state: Arc::new(Mutex::new(PoolState {
                target: concurrency,
                owed: 0,
                collecting: false,
            })),
        }
    }

    pub(crate) fn semaphore(&self) -> Arc<Semaphore> {
        self.semaphore.clone()
    }

    fn lock(state: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
        state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limit asked for last.
    pub(crate) fn target(&self) -> usize {
        Self::lock(&self.state).target
    }

    /// Sets the limit: growing takes effect at once, shrinking as running
    /// tasks finish.
    pub(crate) fn set(&self, concurrency: usize) {
        let mut state = Self::lock(&self.state);
        let current = state.target;
        state.target = concurrency;
        if concurrency >= current {
            let grow = concurrency - current;
            let repaid = grow.min(state.owed);
            state.owed -= repaid;
            self.semaphore.add_permits(grow - repaid);
            return;
        }
        state.owed += current - concurrency;
        if state.collecting {
            return;
        }
        state.collecting = true;
        let semaphore = self.semaphore.clone();
        let shared = self.state.clone();
        tokio::spawn(async move {
            loop {
                let Ok(permit) = semaphore.acquire().await else {
                    return;
                };
                let mut state = Self::lock(&shared);
                if state.owed > 0 {
                    state.owed -= 1;
                    permit.forget();
                }
                if state.owed == 0 {
                    state.collecting = false;
                    return;
                }
            }
        });
    }
}

/// A change of the consumed queues, for the live session.
#[derive(Debug)]
pub(crate) enum LaneChange {
    /// Declare the queue's topology and consume it.
    Add(String, oneshot::Sender<Result<(), String>>),
    /// Cancel the queue's consumer; in-flight tasks finish.
    Cancel(String, oneshot::Sender<Result<(), String>>),
}

/// The queues consumed (kept across reconnects) and the live session's
/// inbox for changes.
#[derive(Debug)]
pub(crate) struct Queues {
    list: Mutex<Vec<String>>,
    session: Mutex<Option<mpsc::UnboundedSender<LaneChange>>>,
}

impl Queues {
    pub(crate) fn new(queues: Vec<String>) -> Queues {
        Queues {
            list: Mutex::new(queues),
            session: Mutex::new(None),
        }
    }

    /// The queues consumed now.
    pub(crate) fn list(&self) -> Vec<String> {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A session starts taking changes.
    pub(crate) fn attach(&self) -> mpsc::UnboundedReceiver<LaneChange> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    /// Adds (`add`) or cancels a queue: through the live session when
    /// there is one, and in the list the next session starts from.
    pub(crate) async fn change(&self, queue: &str, add: bool) -> Result<bool, String> {
        {
            let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
            let present = list.iter().any(|q| q == queue);
            match (add, present) {
                (true, true) | (false, false) => return Ok(false),
                (true, false) => list.push(queue.to_owned()),
                (false, true) => {
                    if list.len() == 1 {
                        return Err(format!(
                            "{queue} is the only queue consumed; a worker keeps at least one"
                        ));
                    }
                    list.retain(|q| q != queue);
                }
            }
        }
        let session = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(session) = session else {
            return Ok(true);
        };
        let (tx, rx) = oneshot::channel();
        let change = if add {
            LaneChange::Add(queue.to_owned(), tx)
        } else {
            LaneChange::Cancel(queue.to_owned(), tx)
        };
        if session.send(change).is_err() {
            // Between sessions: the next one starts from the list.
            return Ok(true);
        }
        match rx.await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) => {
                if add {
                    self.list
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .retain(|q| q != queue);
                }
                Err(e)
            }
            Err(_) => Ok(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shrinking_waits_for_running_tasks_and_growing_repays_first() {
        let pool = Concurrency::new(3);
        let sem = pool.semaphore();
        let held = sem.clone().acquire_many_owned(3).await.expect("open");
        pool.set(1);
        assert_eq!(pool.target(), 1);
        assert_eq!(sem.available_permits(), 0);
        drop(held);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(sem.available_permits(), 1, "two permits were taken out");
        pool.set(4);
        assert_eq!(sem.available_permits(), 4);
        let held = sem.clone().acquire_many_owned(4).await.expect("open");
        pool.set(2);
        pool.set(3);
        drop(held);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(sem.available_permits(), 3);
    }

    #[tokio::test]
    async fn the_last_queue_stays_and_changes_apply_to_the_list() {
        let queues = Queues::new(vec!["a".into()]);
        assert_eq!(queues.change("a", true).await, Ok(false));
        assert!(queues.change("a", false).await.is_err());
        assert_eq!(queues.change("b", true).await, Ok(true));
        assert_eq!(queues.change("a", false).await, Ok(true));
        assert_eq!(queues.list(), ["b"]);
    }
}

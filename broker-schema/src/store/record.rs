//! Task records: the updates workers and producers write, the record they
//! build, and the stored form of results.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, TaskId, TaskState};

/// Why a run failed, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// A short machine-readable type (`ValueError`, `TimeLimitExceeded`).
    pub error_type: String,
    /// The human-readable message.
    pub message: String,
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

/// One entry of a task's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state entered.
    pub state: TaskState,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The attempt number (0 for the first run).
    pub attempt: u32,
    /// The worker that wrote it, for worker-side states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The failure, for `retrying` and `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskFailure>,
}

/// One state change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The task.
    pub id: TaskId,
    /// Its name.
    pub task: String,
    /// Its logical queue.
    pub queue: String,
    /// The state entered.
    pub state: TaskState,
    /// The attempt number.
    pub attempt: u32,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The worker writing it.
    pub worker: Option<String>,
    /// The idempotency key the task was sent with, if any.
    pub idempotency_key: Option<String>,
    /// The workflow the task belongs to, if any.
    pub workflow_id: Option<String>,
    /// The failure, for `retrying` and `failed`.
    pub error: Option<TaskFailure>,
    /// The MessagePack result, for `succeeded` (absent when the task opted
    /// out of storing it).
    pub result: Option<Vec<u8>>,
    /// On an outcome of a run that never recorded `started` (a run shorter
    /// than the worker's threshold for writing it, see
    /// [`Store::lease`](super::Store::lease)): when the run started, in Unix milliseconds. The
    /// `started` transition is then recorded just before this update, in
    /// the same write.
    pub started_at_ms: Option<u64>,
}

impl Update {
    /// An update stamped now, with nothing optional set.
    pub fn new(
        id: TaskId,
        task: impl Into<String>,
        queue: impl Into<String>,
        state: TaskState,
        attempt: u32,
    ) -> Update {
        Update {
            id,
            task: task.into(),
            queue: queue.into(),
            state,
            attempt,
            at_ms: crate::now_ms(),
            worker: None,
            idempotency_key: None,
            workflow_id: None,
            error: None,
            result: None,
            started_at_ms: None,
        }
    }

    /// The `started` history entry a final update with
    /// [`started_at_ms`](Update::started_at_ms) records first.
    pub fn started_transition(&self) -> Option<Transition> {
        let at_ms = self.started_at_ms?;
        (self.state != TaskState::Started).then(|| Transition {
            state: TaskState::Started,
            at_ms,
            attempt: self.attempt,
            worker: self.worker.clone(),
            error: None,
        })
    }

    /// The whole `started` update a final update with
    /// [`started_at_ms`](Update::started_at_ms) records first.
    pub fn started_part(&self) -> Option<Update> {
        let at_ms = self.started_at_ms?;
        // Field by field: the outcome's result and error stay behind.
        (self.state != TaskState::Started).then(|| Update {
            id: self.id,
            task: self.task.clone(),
            queue: self.queue.clone(),
            state: TaskState::Started,
            attempt: self.attempt,
            at_ms,
            worker: self.worker.clone(),
            idempotency_key: self.idempotency_key.clone(),
            workflow_id: self.workflow_id.clone(),
            error: None,
            result: None,
            started_at_ms: None,
        })
    }

    /// The history entry this update appends.
    pub fn transition(&self) -> Transition {
        Transition {
            state: self.state,
            at_ms: self.at_ms,
            attempt: self.attempt,
            worker: self.worker.clone(),
            error: self.error.clone(),
        }
    }

    /// Whether this is a producer-side state, which never overrides a
    /// worker-side one.
    pub fn is_producer_state(&self) -> bool {
        matches!(self.state, TaskState::Created | TaskState::Queued)
    }
}

/// Everything the store knows about a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task.
    pub id: TaskId,
    /// Its name.
    pub task: String,
    /// Its logical queue.
    pub queue: String,
    /// The current state.
    pub state: TaskState,
    /// The attempt number of the latest transition.
    pub attempt: u32,
    /// How many runs started (re-runs after a crash included).
    pub runs: u32,
    /// The worker of the latest worker-side transition.
    pub worker: Option<String>,
    /// The idempotency key the task was sent with, if any.
    pub idempotency_key: Option<String>,
    /// The workflow the task belongs to, if any.
    pub workflow_id: Option<String>,
    /// When the producer first recorded it.
    pub created_at: Option<u64>,
    /// When the broker confirmed it.
    pub queued_at: Option<u64>,
    /// When its latest run started.
    pub started_at: Option<u64>,
    /// When it reached a final state.
    pub finished_at: Option<u64>,
    /// The latest failure.
    pub error: Option<TaskFailure>,
    /// The MessagePack result, when it succeeded and stored one.
    pub result: Option<Vec<u8>>,
    /// Every transition, oldest first (at most the last 100).
    pub history: Vec<Transition>,
}

impl TaskRecord {
    /// A fresh record for the first update of a task.
    pub fn from_first(update: &Update) -> TaskRecord {
        let mut record = TaskRecord {
            id: update.id,
            task: update.task.clone(),
            queue: update.queue.clone(),
            state: update.state,
            attempt: update.attempt,
            runs: 0,
            worker: None,
            idempotency_key: None,
            workflow_id: None,
            created_at: None,
            queued_at: None,
            started_at: None,
            finished_at: None,
            error: None,
            result: None,
            history: Vec::new(),
        };
        record.apply(update);
        record
    }

    /// Applies an update by the rules of this module; returns whether it
    /// applied (a late producer state only records its time).
    pub fn apply(&mut self, update: &Update) -> bool {
        if update.idempotency_key.is_some() {
            self.idempotency_key = update.idempotency_key.clone();
        }
        if update.workflow_id.is_some() {
            self.workflow_id = update.workflow_id.clone();
        }
        match update.state {
            TaskState::Created => {
                self.created_at.get_or_insert(update.at_ms);
            }
            TaskState::Queued => {
                self.queued_at.get_or_insert(update.at_ms);
            }
            _ => {}
        }
        let producer_may_write = matches!(self.state, TaskState::Created | TaskState::Queued);
        if update.is_producer_state() && !producer_may_write {
            // A late producer state: its time is kept, nothing else.
            return false;
        }
        self.history.push(update.transition());
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
        self.state = update.state;
        self.attempt = update.attempt;
        if update.worker.is_some() {
            self.worker = update.worker.clone();
        }
        match update.state {
            TaskState::Started => {
                self.runs += 1;
                self.started_at = Some(update.at_ms);
                self.finished_at = None;
            }
            s if s.is_terminal() => self.finished_at = Some(update.at_ms),
            _ => {}
        }
        if update.error.is_some() {
            self.error = update.error.clone();
        }
        if update.state == TaskState::Succeeded {
            self.error = None;
            self.result = update.result.clone();
        }
        true
    }

    /// The stored result decoded as `T`; `None` when no result is stored.
    ///
    /// # Errors
    ///
    /// [`Error::Field`] (field `result`) when it is not a `T`.
    pub fn decode_result<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match &self.result {
            None => Ok(None),
            Some(bytes) => decode_result(bytes).map(Some),
        }
    }

    /// Run time of the latest run, when it finished.
    pub fn run_time(&self) -> Option<Duration> {
        match (self.started_at, self.finished_at) {
            (Some(s), Some(f)) if f >= s => Some(Duration::from_millis(f - s)),
            _ => None,
        }
    }
}

/// How many transitions a record keeps.
pub const HISTORY_LIMIT: usize = 100;

/// Encodes a result the way the store keeps it (MessagePack, named fields).
///
/// # Errors
///
/// [`Error::Encode`] when the value cannot be encoded.
pub fn encode_result<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Encode {
        what: "result",
        message: e.to_string(),
    })
}

/// Decodes a stored result.
///
/// # Errors
///
/// [`Error::Field`] (field `result`) when the bytes are not a `T`.
pub fn decode_result<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Field {
        field: "result".into(),
        message: e.to_string(),
    })
}

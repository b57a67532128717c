//! The store's layout in Redis, version 2 (SPEC.md section 18): key names,
//! record fields and their encodings, and the reading of a record.
//!
//! The layout is public so that a client in another language can read
//! states and results, and wait for them, with a plain Redis client. The
//! Redis store (`celeriac-store`) writes it; [`parse_record`] is the
//! reading every reader must reproduce, checked against the golden vectors
//! of `golden/store/`. Records of version 1, written by earlier builds, are
//! read by [`v1`] until they expire.
//!
//! A task's whole record is one hash: its fields, its history (one field
//! per transition, named `h:…`) and a producer's `queued` mark. A task
//! sent without an idempotency key has no key of its own once it ran: its
//! record's state is what says it succeeded.
//!
//! # Examples
//!
//! ```
//! use std::collections::HashMap;
//! use celeriac_schema::store::layout;
//! use celeriac_schema::store::Transition;
//! use celeriac_schema::{TaskId, TaskState};
//!
//! let id: TaskId = "01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e".parse().unwrap();
//! assert_eq!(layout::record_key("shop", id), "shop:r:01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e");
//! assert_eq!(layout::done_channel("shop", id), "shop:done:01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e");
//!
//! let started = Transition {
//!     state: TaskState::Started,
//!     at_ms: 1_764_077_400_020,
//!     attempt: 0,
//!     worker: None,
//!     error: None,
//! };
//! let mut fields: HashMap<String, Vec<u8>> = [
//!     ("task", &b"math.add"[..]),
//!     ("queue", b"default"),
//!     ("state", b"succeeded"),
//!     ("attempt", b"0"),
//!     ("result", &[0x05]),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_owned(), v.to_vec()))
//! .collect();
//! fields.insert(layout::history_field(&started), layout::encode_transition(&started).unwrap());
//! let record = layout::parse_record(id, &fields).unwrap().unwrap();
//! assert_eq!(record.state, TaskState::Succeeded);
//! assert_eq!(record.runs, 1);
//! assert_eq!(record.history, vec![started]);
//! assert_eq!(record.decode_result::<i64>().unwrap(), Some(5));
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{TaskFailure, TaskRecord, Transition, Update, HISTORY_LIMIT};
use crate::{Error, Result, TaskId, TaskState};

pub mod v1;

/// The version of the layout this module reads and the reference writes.
/// An incompatible change takes new key names, so that a reader of an
/// older version finds nothing rather than misreads.
pub const LAYOUT_VERSION: u32 = 2;

/// Record field: the task name.
pub const TASK: &str = "task";
/// Record field: the logical queue.
pub const QUEUE: &str = "queue";
/// Record field: the state's wire name (SPEC.md section 12).
pub const STATE: &str = "state";
/// Record field: the attempt number of the latest transition, decimal.
pub const ATTEMPT: &str = "attempt";
/// Record field: the worker of the latest worker-side transition.
pub const WORKER: &str = "worker";
/// Record field: the idempotency key the task was sent with.
pub const KEY: &str = "key";
/// Record field: the workflow id.
pub const WORKFLOW: &str = "wf";
/// Record field: when the producer recorded the task, Unix ms, decimal.
pub const CREATED_AT: &str = "created_at";
/// Record field: when the broker confirmed it, Unix ms, decimal.
pub const QUEUED_AT: &str = "queued_at";
/// Record field: when its latest run started, Unix ms, decimal.
pub const STARTED_AT: &str = "started_at";
/// Record field: when it reached a final state, Unix ms, decimal.
pub const FINISHED_AT: &str = "finished_at";
/// Record field: the latest error's type.
pub const ERROR_TYPE: &str = "err_type";
/// Record field: the latest error's message.
pub const ERROR_MESSAGE: &str = "err_msg";
/// Record field: the result, one MessagePack value.
pub const RESULT: &str = "result";
/// Record field: a producer's `queued` mark ([`QueuedMark`]).
pub const QUEUED_MARK: &str = "q";
/// How the names of history fields start; each holds one transition.
pub const HISTORY_PREFIX: &str = "h:";

/// What an execution key holds once a run with it succeeded: this prefix,
/// then the id of the task that ran.
pub const SUCCEEDED_PREFIX: &str = "done:";

/// The hash of a task's record: `{ns}:r:{id}`.
pub fn record_key(namespace: &str, id: TaskId) -> String {
    format!("{namespace}:r:{id}")
}

/// The pub/sub channel on which the final state of a task (or the end of
/// a workflow) is announced: `{ns}:done:{id}`.
pub fn done_channel(namespace: &str, id: TaskId) -> String {
    format!("{namespace}:done:{id}")
}

/// The execution key of an idempotency key (or of a task id, for a task
/// sent without a key): `{ns}:k:{key}`.
pub fn execution_key(namespace: &str, key: &str) -> String {
    format!("{namespace}:k:{key}")
}

/// The enqueue key of an idempotency key: `{ns}:e:{key}`.
pub fn enqueue_key(namespace: &str, key: &str) -> String {
    format!("{namespace}:e:{key}")
}

/// The hash of a workflow's record: `{ns}:w:{id}`.
pub fn workflow_key(namespace: &str, id: TaskId) -> String {
    format!("{namespace}:w:{id}")
}

/// The record field that holds `transition` in the history:
/// `h:{attempt}:{state}:{at_ms}`. Names only have to differ between
/// transitions; readers order the history by the transitions themselves
/// ([`history_order`]), not by the names.
pub fn history_field(transition: &Transition) -> String {
    HistoryField(transition).to_string()
}

/// [`history_field`] as a value to format, for writers that put the name
/// straight into a buffer of their own.
///
/// ```
/// use celeriac_schema::store::layout::{history_field, HistoryField};
/// use celeriac_schema::store::Transition;
/// use celeriac_schema::TaskState;
///
/// let t = Transition {
///     state: TaskState::Started,
///     at_ms: 7,
///     attempt: 1,
///     worker: None,
///     error: None,
/// };
/// assert_eq!(HistoryField(&t).to_string(), "h:1:started:7");
/// assert_eq!(history_field(&t), "h:1:started:7");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HistoryField<'a>(pub &'a Transition);

impl std::fmt::Display for HistoryField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0;
        write!(
            f,
            "{HISTORY_PREFIX}{}:{}:{}",
            t.attempt,
            t.state.as_str(),
            t.at_ms
        )
    }
}

/// A history field's value: the transition as a MessagePack map with
/// named fields.
///
/// # Errors
///
/// [`Error::Encode`] (never for this type in practice).
pub fn encode_transition(transition: &Transition) -> Result<Vec<u8>> {
    // Sized for the usual entry (state, time, attempt, worker), so that
    // encoding it does not grow the buffer on the way.
    let mut bytes = Vec::with_capacity(96);
    rmp_serde::encode::write_named(&mut bytes, transition)
        .map(|()| bytes)
        .map_err(|e| Error::Encode {
            what: "transition",
            message: e.to_string(),
        })
}

/// Where a transition sorts in a history: by time, then by attempt, then
/// by stage (`created` 0, `queued` 1, `started` 2, any other state 3).
/// Within one millisecond, an attempt's end comes before the next
/// attempt's start, and a run's start before its outcome. (Not by attempt
/// first: a replay from the dead-letter queue runs the same task id again
/// from attempt 0.)
pub fn history_order(transition: &Transition) -> (u64, u32, u8) {
    let stage = match transition.state {
        TaskState::Created => 0,
        TaskState::Queued => 1,
        TaskState::Started => 2,
        _ => 3,
    };
    (transition.at_ms, transition.attempt, stage)
}

/// A producer's `queued` for a task sent without an idempotency key, kept
/// in the record field `q` as the MessagePack array `[attempt, at_ms,
/// task, queue, workflow id or nil]`: set only if absent (the first send's
/// wins). Reading the record applies it as a `queued` update; its task,
/// queue and workflow stand for the record's fields while these are
/// absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMark {
    /// The attempt number.
    pub attempt: u32,
    /// When the broker confirmed the task, Unix ms.
    pub at_ms: u64,
    /// The task name.
    pub task: String,
    /// The logical queue.
    pub queue: String,
    /// The workflow id, for a workflow node.
    pub workflow: Option<String>,
}

impl QueuedMark {
    /// The mark of a `queued` update.
    pub fn of(update: &Update) -> QueuedMark {
        QueuedMark {
            attempt: update.attempt,
            at_ms: update.at_ms,
            task: update.task.clone(),
            queue: update.queue.clone(),
            workflow: update.workflow_id.clone(),
        }
    }

    /// The field's bytes: a MessagePack array.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] (never for this type in practice).
    pub fn encode(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec(self).map_err(|e| Error::Encode {
            what: "queued mark",
            message: e.to_string(),
        })
    }

    /// Reads the field's bytes.
    ///
    /// # Errors
    ///
    /// [`Error::StoreData`] when they are not the array of five.
    pub fn decode(bytes: &[u8]) -> Result<QueuedMark> {
        rmp_serde::from_slice(bytes).map_err(|e| Error::StoreData {
            what: "queued mark",
            message: e.to_string(),
        })
    }

    /// The `queued` update of the record `fields` hold.
    fn update(self, id: TaskId, fields: &HashMap<String, Vec<u8>>) -> Update {
        let text = |name: &str| field_text(fields, name);
        let mut update = Update::new(
            id,
            text(TASK).unwrap_or(self.task),
            text(QUEUE).unwrap_or(self.queue),
            TaskState::Queued,
            self.attempt,
        );
        update.at_ms = self.at_ms;
        update.workflow_id = text(WORKFLOW).or(self.workflow);
        update
    }
}

/// A record field as text; an absent or empty field means "none".
pub fn field_text(fields: &HashMap<String, Vec<u8>>, name: &str) -> Option<String> {
    fields
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A decimal record field; `None` when absent or empty.
///
/// # Errors
///
/// [`Error::StoreData`] when it is not an unsigned decimal number.
pub fn decimal(fields: &HashMap<String, Vec<u8>>, name: &'static str) -> Result<Option<u64>> {
    field_text(fields, name)
        .map(|s| {
            s.parse::<u64>().map_err(|e| Error::StoreData {
                what: name,
                message: format!("{s:?}: {e}"),
            })
        })
        .transpose()
}

/// The history fields of a record, every one of them, oldest first
/// ([`history_order`]).
///
/// # Errors
///
/// [`Error::StoreData`] when a history field does not hold a transition.
pub fn parse_history(fields: &HashMap<String, Vec<u8>>) -> Result<Vec<Transition>> {
    let mut history = fields
        .iter()
        .filter(|(name, _)| name.starts_with(HISTORY_PREFIX))
        .map(|(name, bytes)| {
            rmp_serde::from_slice::<Transition>(bytes).map_err(|e| Error::StoreData {
                what: "history",
                message: format!("{name}: {e}"),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    history.sort_by_key(history_order);
    Ok(history)
}

/// Reads a task's record from the fields of its hash; `None` when the hash
/// is empty (no such task, or its record expired).
///
/// # Errors
///
/// [`Error::StoreData`] for a field this version cannot read: an unknown
/// state, a number that is not decimal, a bad mark or history field.
pub fn parse_record(id: TaskId, fields: &HashMap<String, Vec<u8>>) -> Result<Option<TaskRecord>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let queued = fields
        .get(QUEUED_MARK)
        .map(|bytes| QueuedMark::decode(bytes).map(|mark| mark.update(id, fields)))
        .transpose()?;
    let history = parse_history(fields)?;
    let runs = history
        .iter()
        .filter(|t| t.state == TaskState::Started)
        .count();
    let mut record = build(
        id,
        fields,
        u32::try_from(runs).unwrap_or(u32::MAX),
        history,
        queued.as_ref(),
    )?;
    record.history.sort_by_key(history_order);
    if record.history.len() > HISTORY_LIMIT {
        record.history.drain(..record.history.len() - HISTORY_LIMIT);
    }
    Ok(Some(record))
}

/// The record of a non-empty hash, both versions: its fields, its run
/// count and history as the version keeps them, and a producer's mark
/// applied as a `queued` update.
fn build(
    id: TaskId,
    fields: &HashMap<String, Vec<u8>>,
    runs: u32,
    history: Vec<Transition>,
    queued: Option<&Update>,
) -> Result<TaskRecord> {
    let text = |name: &str| field_text(fields, name);
    if let (None, Some(queued)) = (text(STATE), queued) {
        // Only a producer's mark: the task waits in its queue.
        return Ok(TaskRecord::from_first(queued));
    }
    let number = |name: &'static str| decimal(fields, name);
    let state_text = text(STATE).unwrap_or_default();
    let state = TaskState::parse(&state_text).ok_or_else(|| Error::StoreData {
        what: "state",
        message: format!("unknown state {state_text:?}"),
    })?;
    // A succeeded record has no error, whatever an earlier run left.
    let error = text(ERROR_TYPE)
        .filter(|_| state != TaskState::Succeeded)
        .map(|error_type| TaskFailure {
            error_type,
            message: text(ERROR_MESSAGE).unwrap_or_default(),
        });
    let attempt = number(ATTEMPT)?
        .unwrap_or(0)
        .try_into()
        .map_err(|_| Error::StoreData {
            what: ATTEMPT,
            message: "over 2^32 - 1".into(),
        })?;
    let mut record = TaskRecord {
        id,
        task: text(TASK)
            .or_else(|| queued.map(|q| q.task.clone()))
            .unwrap_or_default(),
        queue: text(QUEUE)
            .or_else(|| queued.map(|q| q.queue.clone()))
            .unwrap_or_default(),
        state,
        attempt,
        runs,
        worker: text(WORKER),
        idempotency_key: text(KEY),
        workflow_id: text(WORKFLOW),
        created_at: number(CREATED_AT)?,
        queued_at: number(QUEUED_AT)?,
        started_at: number(STARTED_AT)?,
        finished_at: number(FINISHED_AT)?,
        error,
        result: fields.get(RESULT).filter(|v| !v.is_empty()).cloned(),
        history,
    };
    if let Some(queued) = queued {
        record.apply(queued);
    }
    Ok(record)
}

//! The store's layout in Redis, version 1 (SPEC.md section 18): key names,
//! record fields and their encodings, and the reading of a record.
//!
//! The layout is public so that a client in another language can read
//! states and results, and wait for them, with a plain Redis client. The
//! Redis store of the producer crate writes it; [`parse_record`] is the
//! reading every reader must reproduce, checked against the golden vectors
//! of `golden/store/`.
//!
//! # Examples
//!
//! ```
//! use std::collections::HashMap;
//! use celeriac_schema::store::layout;
//! use celeriac_schema::{TaskId, TaskState};
//!
//! let id: TaskId = "01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e".parse().unwrap();
//! assert_eq!(layout::record_key("shop", id), "shop:t:01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e");
//! assert_eq!(layout::done_channel("shop", id), "shop:done:01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e");
//!
//! let fields: HashMap<String, Vec<u8>> = [
//!     ("task", &b"math.add"[..]),
//!     ("queue", b"default"),
//!     ("state", b"succeeded"),
//!     ("attempt", b"0"),
//!     ("runs", b"1"),
//!     ("result", &[0x05]),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_owned(), v.to_vec()))
//! .collect();
//! let record = layout::parse_record(id, &fields, &[]).unwrap().unwrap();
//! assert_eq!(record.state, TaskState::Succeeded);
//! assert_eq!(record.decode_result::<i64>().unwrap(), Some(5));
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{TaskFailure, TaskRecord, Transition, Update, HISTORY_LIMIT};
use crate::{Error, Result, TaskId, TaskState};

/// The version of the layout this module reads and the reference writes.
/// An incompatible change takes new key names, so that a reader of this
/// version finds nothing rather than misreads.
pub const LAYOUT_VERSION: u32 = 1;

/// Record field: the task name.
pub const TASK: &str = "task";
/// Record field: the logical queue.
pub const QUEUE: &str = "queue";
/// Record field: the state's wire name (SPEC.md section 12).
pub const STATE: &str = "state";
/// Record field: the attempt number of the latest transition, decimal.
pub const ATTEMPT: &str = "attempt";
/// Record field: how many runs started, decimal.
pub const RUNS: &str = "runs";
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

/// What an execution key holds once a run with it succeeded: this prefix,
/// then the id of the task that ran.
pub const SUCCEEDED_PREFIX: &str = "done:";

/// The hash of a task's record: `{ns}:t:{id}`.
pub fn record_key(namespace: &str, id: TaskId) -> String {
    format!("{namespace}:t:{id}")
}

/// The string of a task's history: `{ns}:t:{id}:h`.
pub fn history_key(namespace: &str, id: TaskId) -> String {
    format!("{namespace}:t:{id}:h")
}

/// The pub/sub channel on which the final state of a task (or the end of
/// a workflow) is announced: `{ns}:done:{id}`.
pub fn done_channel(namespace: &str, id: TaskId) -> String {
    format!("{namespace}:done:{id}")
}

/// The execution key of an idempotency key: `{ns}:k:{key}`.
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

/// A producer's `queued` for a task sent without an idempotency key, kept
/// in the record field `q` as the MessagePack array `[attempt, at_ms]`: set
/// only if absent (the first send's wins), beside the task's name and
/// queue. Reading the record applies it as a `queued` update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMark {
    /// The attempt number.
    pub attempt: u32,
    /// When the broker confirmed the task, Unix ms.
    pub at_ms: u64,
}

impl QueuedMark {
    /// The mark of a `queued` update.
    pub fn of(update: &Update) -> QueuedMark {
        QueuedMark {
            attempt: update.attempt,
            at_ms: update.at_ms,
        }
    }

    /// The field's bytes: a MessagePack array, about a dozen bytes.
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
    /// [`Error::StoreData`] when they are not `[attempt, at_ms]`.
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
            text(TASK).unwrap_or_default(),
            text(QUEUE).unwrap_or_default(),
            TaskState::Queued,
            self.attempt,
        );
        update.at_ms = self.at_ms;
        update.workflow_id = text(WORKFLOW);
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

/// Reads a history string: MessagePack maps one after another, each a
/// [`Transition`] with named fields, oldest first; only the last
/// [`HISTORY_LIMIT`] are kept.
///
/// # Errors
///
/// [`Error::StoreData`] when an entry is not a transition.
pub fn parse_history(bytes: &[u8]) -> Result<Vec<Transition>> {
    let mut history = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let transition: Transition =
            rmp_serde::from_read(&mut rest).map_err(|e| Error::StoreData {
                what: "history",
                message: e.to_string(),
            })?;
        history.push(transition);
    }
    if history.len() > HISTORY_LIMIT {
        history.drain(..history.len() - HISTORY_LIMIT);
    }
    Ok(history)
}

/// Reads a task's record from the fields of its hash and its history
/// string; `None` when the hash is empty (no such task, or its record
/// expired).
///
/// # Errors
///
/// [`Error::StoreData`] for a field this version cannot read: an unknown
/// state, a number that is not decimal, a bad mark or history entry.
pub fn parse_record(
    id: TaskId,
    fields: &HashMap<String, Vec<u8>>,
    history: &[u8],
) -> Result<Option<TaskRecord>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let queued = fields
        .get(QUEUED_MARK)
        .map(|bytes| QueuedMark::decode(bytes).map(|mark| mark.update(id, fields)))
        .transpose()?;
    let text = |name: &str| field_text(fields, name);
    if let (None, Some(queued)) = (text(STATE), &queued) {
        // Only a producer's mark: the task waits in its queue.
        return Ok(Some(TaskRecord::from_first(queued)));
    }
    let number = |name: &'static str| -> Result<Option<u64>> {
        text(name)
            .map(|s| {
                s.parse::<u64>().map_err(|e| Error::StoreData {
                    what: name,
                    message: format!("{s:?}: {e}"),
                })
            })
            .transpose()
    };
    let state_text = text(STATE).unwrap_or_default();
    let state = TaskState::parse(&state_text).ok_or_else(|| Error::StoreData {
        what: "state",
        message: format!("unknown state {state_text:?}"),
    })?;
    let error = text(ERROR_TYPE).map(|error_type| TaskFailure {
        error_type,
        message: text(ERROR_MESSAGE).unwrap_or_default(),
    });
    let small = |name: &'static str| -> Result<u32> {
        number(name)?
            .unwrap_or(0)
            .try_into()
            .map_err(|_| Error::StoreData {
                what: name,
                message: "over 2^32 - 1".into(),
            })
    };
    let mut record = TaskRecord {
        id,
        task: text(TASK).unwrap_or_default(),
        queue: text(QUEUE).unwrap_or_default(),
        state,
        attempt: small(ATTEMPT)?,
        runs: small(RUNS)?,
        worker: text(WORKER),
        idempotency_key: text(KEY),
        workflow_id: text(WORKFLOW),
        created_at: number(CREATED_AT)?,
        queued_at: number(QUEUED_AT)?,
        started_at: number(STARTED_AT)?,
        finished_at: number(FINISHED_AT)?,
        error,
        result: fields.get(RESULT).filter(|v| !v.is_empty()).cloned(),
        history: parse_history(history)?,
    };
    if let Some(queued) = &queued {
        record.apply(queued);
    }
    Ok(Some(record))
}

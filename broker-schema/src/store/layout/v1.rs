//! Reading layout version 1 (the layout before the current one): the
//! record hash `{ns}:t:{id}` beside its history string `{ns}:t:{id}:h`, a
//! `runs` counter, and a producer's mark `[attempt, at_ms]`. Records
//! written by earlier builds are read through it until they expire with
//! their TTL; nothing writes this layout any more.
//!
//! # Examples
//!
//! ```
//! use std::collections::HashMap;
//! use celeriac_schema::store::layout::v1;
//! use celeriac_schema::{TaskId, TaskState};
//!
//! let id: TaskId = "01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e".parse().unwrap();
//! assert_eq!(v1::record_key("shop", id), "shop:t:01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e");
//! assert_eq!(v1::history_key("shop", id), "shop:t:01936b2e-8f40-7a1c-9d2e-3f4a5b6c7d8e:h");
//!
//! let fields: HashMap<String, Vec<u8>> = [
//!     ("task", &b"math.add"[..]),
//!     ("queue", b"default"),
//!     ("state", b"succeeded"),
//!     ("runs", b"1"),
//!     ("result", &[0x05]),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_owned(), v.to_vec()))
//! .collect();
//! let record = v1::parse_record(id, &fields, &[]).unwrap().unwrap();
//! assert_eq!(record.state, TaskState::Succeeded);
//! assert_eq!(record.runs, 1);
//! ```

use std::collections::HashMap;

use serde::Deserialize;

use super::QUEUED_MARK;
use crate::store::{TaskRecord, Transition, HISTORY_LIMIT};
use crate::{Error, Result, TaskId};

/// Record field of this version: how many runs started, decimal.
pub const RUNS: &str = "runs";

/// The hash of a task's record: `{ns}:t:{id}`.
pub fn record_key(namespace: &str, id: TaskId) -> String {
    format!("{namespace}:t:{id}")
}

/// The string of a task's history: `{ns}:t:{id}:h`.
pub fn history_key(namespace: &str, id: TaskId) -> String {
    format!("{namespace}:t:{id}:h")
}

/// A producer's `queued` mark of this version: the record field `q`
/// holding the MessagePack array `[attempt, at_ms]`, beside the task's
/// name and queue. Reading the record applies it as a `queued` update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct QueuedMark {
    /// The attempt number.
    pub attempt: u32,
    /// When the broker confirmed the task, Unix ms.
    pub at_ms: u64,
}

impl QueuedMark {
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

    /// The same mark in the current form, its task and queue left to the
    /// record's fields.
    fn current(self) -> super::QueuedMark {
        super::QueuedMark {
            attempt: self.attempt,
            at_ms: self.at_ms,
            task: String::new(),
            queue: String::new(),
            workflow: None,
        }
    }
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
        .map(|bytes| QueuedMark::decode(bytes).map(|mark| mark.current().update(id, fields)))
        .transpose()?;
    let runs = super::decimal(fields, RUNS)?.unwrap_or(0);
    let runs = u32::try_from(runs).map_err(|_| Error::StoreData {
        what: RUNS,
        message: "over 2^32 - 1".into(),
    })?;
    super::build(id, fields, runs, parse_history(history)?, queued.as_ref()).map(Some)
}

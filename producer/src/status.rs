//! Task records for people and programs: the table and the JSON that
//! `celeriac status` prints.
//!
//! The JSON is versioned (`"v": 1`) and specified in SPEC.md section 18.7:
//! a field keeps its name, type and meaning within a version, and new
//! fields may be added. Results are shown with the lossless mapping of
//! [`celeriac_schema::json_value`].

use std::fmt::Write as _;

use celeriac_schema::store::TaskRecord;

/// The version of the JSON that [`to_json`] and [`workflow_to_json`]
/// write, its field `v`.
pub const JSON_VERSION: u32 = 1;

/// The record as JSON: every field, times as Unix milliseconds and RFC
/// 3339, the result decoded from MessagePack with the lossless mapping of
/// [`celeriac_schema::json_value`] (`result_stored` tells a stored nil
/// from no result).
///
/// # Examples
///
/// ```
/// use celeriac_schema::store::{TaskRecord, Update};
/// use celeriac_schema::{TaskId, TaskState};
///
/// let record = TaskRecord::from_first(&Update::new(TaskId::new(), "math.add", "default", TaskState::Queued, 0));
/// let json = celeriac_producer::status::to_json(&record);
/// assert_eq!(json["v"], 1);
/// assert_eq!(json["kind"], "task");
/// assert_eq!(json["state"], "queued");
/// assert_eq!(json["task"], "math.add");
/// assert_eq!(json["result_stored"], false);
/// ```
pub fn to_json(record: &TaskRecord) -> serde_json::Value {
    let time = |ms: Option<u64>| match ms {
        Some(ms) => serde_json::json!({ "unix_ms": ms, "utc": rfc3339(ms) }),
        None => serde_json::Value::Null,
    };
    let history: Vec<serde_json::Value> = record
        .history
        .iter()
        .map(|t| {
            serde_json::json!({
                "state": t.state.as_str(),
                "at": time(Some(t.at_ms)),
                "attempt": t.attempt,
                "worker": t.worker,
                "error": t.error.as_ref().map(|e| serde_json::json!({
                    "type": e.error_type, "message": e.message
                })),
            })
        })
        .collect();
    serde_json::json!({
        "v": JSON_VERSION,
        "kind": "task",
        "id": record.id.to_string(),
        "task": record.task,
        "queue": record.queue,
        "state": record.state.as_str(),
        "attempt": record.attempt,
        "runs": record.runs,
        "worker": record.worker,
        "idempotency_key": record.idempotency_key,
        "workflow_id": record.workflow_id,
        "created_at": time(record.created_at),
        "queued_at": time(record.queued_at),
        "started_at": time(record.started_at),
        "finished_at": time(record.finished_at),
        "run_ms": record.run_time().map(|d| d.as_millis() as u64),
        "error": record.error.as_ref().map(|e| serde_json::json!({
            "type": e.error_type, "message": e.message
        })),
        "result_stored": record.result.is_some(),
        "result": result_json(record),
        "history": history,
    })
}

/// The stored result as JSON by the lossless mapping of
/// [`celeriac_schema::json_value`] (`null` when none is stored, and for a
/// stored nil).
///
/// # Examples
///
/// ```
/// use celeriac_schema::store::{TaskRecord, Update};
/// use celeriac_schema::{TaskId, TaskState};
///
/// let mut update = Update::new(TaskId::new(), "blob.get", "default", TaskState::Succeeded, 0);
/// update.result = Some(vec![0xc4, 0x02, 0xff, 0x00]); // bin 8 of ff 00
/// let record = TaskRecord::from_first(&update);
/// assert_eq!(celeriac_producer::status::result_json(&record), serde_json::json!({"$bin": "/wA="}));
/// ```
pub fn result_json(record: &TaskRecord) -> serde_json::Value {
    match &record.result {
        None => serde_json::Value::Null,
        Some(bytes) => celeriac_schema::json_value::bytes_to_json(bytes),
    }
}

/// The record as an aligned table, history last.
///
/// # Examples
///
/// ```
/// use celeriac_schema::store::{TaskRecord, Update};
/// use celeriac_schema::{TaskId, TaskState};
///
/// let record = TaskRecord::from_first(&Update::new(TaskId::new(), "math.add", "default", TaskState::Queued, 0));
/// let table = celeriac_producer::status::to_table(&record);
/// assert!(table.contains("state      queued"));
/// ```
pub fn to_table(record: &TaskRecord) -> String {
    let mut out = String::new();
    let mut row = |name: &str, value: String| {
        let _ = writeln!(out, "{name:<10} {value}");
    };
    let time = |ms: Option<u64>| ms.map_or_else(|| "-".to_owned(), rfc3339);
    row("task id", record.id.to_string());
    row("task", record.task.clone());
    row("queue", record.queue.clone());
    row("state", record.state.as_str().to_owned());
    row(
        "attempts",
        format!("attempt {} ({} runs started)", record.attempt, record.runs),
    );
    row(
        "worker",
        record.worker.clone().unwrap_or_else(|| "-".into()),
    );
    if let Some(key) = &record.idempotency_key {
        row("key", key.clone());
    }
    if let Some(workflow) = &record.workflow_id {
        row("workflow", workflow.clone());
    }
    row("created", time(record.created_at));
    row("queued", time(record.queued_at));
    row("started", time(record.started_at));
    if let Some(waited) = waited(record) {
        row("waited", format!("{waited:?} queued before it started"));
    }
    row("finished", time(record.finished_at));
    if let Some(run) = record.run_time() {
        row("run time", format!("{run:?}"));
    }
    if let Some(error) = &record.error {
        row("error", error.to_string());
    }
    let result = result_json(record);
    if !result.is_null() {
        row("result", result.to_string());
    }
    let _ = writeln!(out, "history");
    for t in &record.history {
        let _ = write!(
            out,
            "  {}  {:<9} attempt {}",
            rfc3339(t.at_ms),
            t.state.as_str(),
            t.attempt
        );
        if let Some(worker) = &t.worker {
            let _ = write!(out, "  {worker}");
        }
        if let Some(error) = &t.error {
            let _ = write!(out, "  {error}");
        }
        out.push('\n');
    }
    out
}

/// How long the task waited from being queued (an ETA's delay included) to
/// the start of its last run; `None` before it started. The wait its
/// worker judged against its wait threshold (SPEC.md section 19.6) is in
/// the `started` event's `waited_ms`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_schema::store::{TaskRecord, Update};
/// use celeriac_schema::{TaskId, TaskState};
///
/// let mut record = TaskRecord::from_first(&Update::new(TaskId::new(), "t", "q", TaskState::Queued, 0));
/// record.queued_at = Some(1_000);
/// assert_eq!(celeriac_producer::status::waited(&record), None);
/// record.started_at = Some(3_500);
/// assert_eq!(celeriac_producer::status::waited(&record), Some(Duration::from_millis(2_500)));
/// ```
pub fn waited(record: &TaskRecord) -> Option<std::time::Duration> {
    let queued = record.queued_at.or(record.created_at)?;
    let started = record.started_at?;
    Some(std::time::Duration::from_millis(
        started.saturating_sub(queued),
    ))
}

/// Unix milliseconds as an RFC 3339 UTC time with milliseconds.
///
/// # Examples
///
/// ```
/// assert_eq!(celeriac_producer::status::rfc3339(0), "1970-01-01T00:00:00.000Z");
/// assert_eq!(celeriac_producer::status::rfc3339(1_764_079_200_123), "2025-11-25T14:00:00.123Z");
/// ```
pub fn rfc3339(unix_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// A workflow's status as JSON: its state and every node's progress,
/// attempts and error.
pub fn workflow_to_json(status: &crate::WorkflowStatus) -> serde_json::Value {
    let wf = &status.workflow;
    let nodes: Vec<serde_json::Value> = status
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "id": n.id,
                "task_id": n.task_id.to_string(),
                "task": n.record.as_ref().map(|r| r.task.clone()),
                "progress": n.progress,
                "state": n.record.as_ref().map(|r| r.state.as_str()),
                "attempts": n.attempts(),
                "error": n.error().map(|e| serde_json::json!({
                    "type": e.error_type, "message": e.message
                })),
                "result_stored": n.record.as_ref().is_some_and(|r| r.result.is_some()),
                "result": n.record.as_ref().map(result_json),
            })
        })
        .collect();
    serde_json::json!({
        "v": JSON_VERSION,
        "kind": "workflow",
        "workflow_id": wf.id.to_string(),
        "state": wf.state.as_str(),
        "nodes_total": wf.nodes,
        "remaining": wf.remaining,
        "failed": wf.failed,
        "released": wf.released,
        "outputs": wf.outputs,
        "created_at": { "unix_ms": wf.created_at, "utc": rfc3339(wf.created_at) },
        "finished_at": wf.finished_at.map(|ms| serde_json::json!({ "unix_ms": ms, "utc": rfc3339(ms) })),
        "nodes": nodes,
    })
}

/// A workflow's status as a table, one line per node.
pub fn workflow_to_table(status: &crate::WorkflowStatus) -> String {
    let wf = &status.workflow;
    let mut out = String::new();
    let _ = writeln!(out, "workflow   {}", wf.id);
    let _ = writeln!(out, "state      {}", wf.state.as_str());
    let _ = writeln!(
        out,
        "nodes      {} ({} remaining, {} failed)",
        wf.nodes, wf.remaining, wf.failed
    );
    let _ = writeln!(out, "created    {}", rfc3339(wf.created_at));
    let _ = writeln!(
        out,
        "finished   {}",
        wf.finished_at.map_or_else(|| "-".to_owned(), rfc3339)
    );
    let width = status
        .nodes
        .iter()
        .map(|n| n.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:<width$}  {:<9}  {:>8}  error",
        "node", "state", "attempts"
    );
    for n in &status.nodes {
        let state = match n.progress {
            celeriac_schema::store::NodeProgress::Waiting => "waiting",
            celeriac_schema::store::NodeProgress::Released => {
                n.record.as_ref().map_or("released", |r| r.state.as_str())
            }
            celeriac_schema::store::NodeProgress::Succeeded => "succeeded",
            celeriac_schema::store::NodeProgress::Failed => "failed",
            celeriac_schema::store::NodeProgress::Skipped => "skipped",
        };
        let error = n.error().map(ToString::to_string).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<width$}  {:<9}  {:>8}  {error}",
            n.id,
            state,
            n.attempts()
        );
    }
    out
}

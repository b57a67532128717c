//! The Tasks pages: the list of recent tasks with filters, a task's detail
//! (states with times, attempts, error, result, worker), and the revoke
//! hook.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use celeriac_schema::store::TaskRecord;
use celeriac_schema::{TaskId, TaskState};
use celeriac_store::{IndexedTask, TaskQuery};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::App;

/// What a revoke answers: a message for the user, or why it failed.
pub type RevokeFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// How a revoke from the dashboard acts: the body of
/// `POST /api/tasks/{id}/revoke`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeOptions {
    /// Also stop a run in progress (SIGTERM: a program may clean up, a
    /// handler is cancelled after a short grace). Without it only a queued
    /// or delayed copy is kept from running, and a run in progress
    /// finishes.
    #[serde(default)]
    pub terminate: bool,
}

/// Revokes a task by id: the control plane's revoke, given to
/// [`Dashboard::revoke`](crate::Dashboard::revoke). Without one the
/// revoke button is disabled and `POST /api/tasks/{id}/revoke` answers 501.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// let hook: celeriac_dashboard::RevokeHook = Arc::new(|id, options| {
///     Box::pin(async move {
///         Ok(if options.terminate {
///             format!("revoked {id} and stopped its run")
///         } else {
///             format!("revoked {id}")
///         })
///     })
/// });
/// # let _ = hook;
/// ```
pub type RevokeHook = Arc<dyn Fn(TaskId, RevokeOptions) -> RevokeFuture + Send + Sync>;

/// Largest page of the task list.
pub const MAX_LIMIT: usize = 500;

/// The query of `GET /api/tasks`.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// Comma-separated states.
    pub state: Option<String>,
    /// Text the task name contains.
    pub task: Option<String>,
    /// The logical queue.
    pub queue: Option<String>,
    /// Latest state at or after this Unix ms.
    pub since: Option<u64>,
    /// Latest state at or before this Unix ms.
    pub until: Option<u64>,
    /// At most this many (default 100, at most 500).
    pub limit: Option<usize>,
}

impl ListParams {
    /// The store query these parameters ask for.
    ///
    /// # Errors
    ///
    /// [`Error::BadRequest`] for an unknown state.
    pub fn query(&self) -> Result<TaskQuery> {
        let mut states = Vec::new();
        for name in self
            .state
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let state = TaskState::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
                    Error::BadRequest(format!(
                        "unknown state {name:?}; one of {}",
                        known.join(", ")
                    ))
                })?;
            states.push(state);
        }
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(TaskQuery {
            states,
            task: text(&self.task),
            queue: text(&self.queue),
            since_ms: self.since,
            until_ms: self.until,
            limit: self.limit.unwrap_or(100).clamp(1, MAX_LIMIT),
        })
    }
}

/// `GET /api/tasks`.
pub(crate) async fn list(app: &App, params: &ListParams) -> Result<Value> {
    let query = params.query()?;
    let page = app.store.recent_tasks(&query).await?;
    let tasks: Vec<Value> = page.tasks.iter().map(summary).collect();
    Ok(json!({
        "tasks": tasks,
        "scanned": page.scanned,
        "truncated": page.truncated,
        "limit": query.limit,
    }))
}

fn summary(task: &IndexedTask) -> Value {
    let mut value = record_json(&task.record);
    if let Value::Object(map) = &mut value {
        map.insert("updated_at".into(), json!(task.updated_at));
    }
    value
}

/// When a task was created: the producer's record of it, else the
/// earliest time the record knows (its queued time or first transition),
/// and whether it was inferred so.
pub fn created_at(r: &TaskRecord) -> (Option<u64>, bool) {
    if r.created_at.is_some() {
        return (r.created_at, false);
    }
    let earliest = r
        .queued_at
        .into_iter()
        .chain(r.history.first().map(|t| t.at_ms))
        .min();
    (earliest, earliest.is_some())
}

/// The worker to show for a task: none for one that was skipped without
/// running (the record keeps the worker that recorded the skip).
pub(crate) fn shown_worker(r: &TaskRecord) -> Option<&str> {
    if r.state == TaskState::Skipped && r.runs == 0 {
        None
    } else {
        r.worker.as_deref()
    }
}

/// A record as JSON, without its history and result.
pub fn record_json(r: &TaskRecord) -> Value {
    let (created_at, created_inferred) = created_at(r);
    json!({
        "id": r.id.to_string(),
        "task": r.task,
        "queue": r.queue,
        "state": r.state.as_str(),
        "attempt": r.attempt,
        "runs": r.runs,
        "worker": shown_worker(r),
        "idempotency_key": r.idempotency_key,
        "workflow_id": r.workflow_id,
        "created_at": created_at,
        "created_at_inferred": created_inferred,
        "queued_at": r.queued_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "runtime_ms": r.run_time().map(|d| d.as_millis() as u64),
        "error": r.error.as_ref().map(|e| json!({"type": e.error_type, "message": e.message})),
    })
}

/// A MessagePack value as JSON (binary as an array of bytes).
pub fn msgpack_json(bytes: &[u8]) -> Value {
    let mut rest = bytes;
    match rmpv::decode::read_value(&mut rest) {
        Ok(value) => serde_json::to_value(&value).unwrap_or(Value::Null),
        Err(e) => json!({ "undecodable": e.to_string(), "size": bytes.len() }),
    }
}

/// Parses a task or workflow id.
///
/// # Errors
///
/// [`Error::BadRequest`] when it is not a UUID.
pub fn parse_id(id: &str) -> Result<TaskId> {
    id.trim()
        .parse()
        .map_err(|_| Error::BadRequest(format!("{id:?} is not a task id (a UUID)")))
}

/// `GET /api/tasks/{id}`.
pub(crate) async fn detail(app: &App, id: &str) -> Result<Value> {
    let id = parse_id(id)?;
    let record = celeriac_schema::store::Store::get(&app.store, id)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!("the store has no task {id} (unknown, or expired)"))
        })?;
    let mut value = record_json(&record);
    if let Value::Object(map) = &mut value {
        let history: Vec<Value> = record
            .history
            .iter()
            .map(|t| {
                json!({
                    "state": t.state.as_str(),
                    "at": t.at_ms,
                    "attempt": t.attempt,
                    "worker": t.worker,
                    "error": t.error.as_ref().map(|e| json!({"type": e.error_type, "message": e.message})),
                })
            })
            .collect();
        map.insert("history".into(), Value::Array(history));
        map.insert(
            "result".into(),
            record.result.as_deref().map_or(Value::Null, msgpack_json),
        );
        map.insert(
            "dead_letter_queue".into(),
            json!(app.topology.dead_letter_queue(&record.queue)),
        );
    }
    Ok(value)
}

/// `POST /api/tasks/{id}/revoke`.
pub(crate) async fn revoke(app: &App, id: &str, options: RevokeOptions) -> Result<Value> {
    let id = parse_id(id)?;
    let Some(hook) = &app.revoke else {
        return Err(Error::NotImplemented(
            "revoke is not available: this dashboard has no control plane to send it".into(),
        ));
    };
    match hook(id, options).await {
        Ok(message) => Ok(json!({
            "revoked": id.to_string(),
            "terminate": options.terminate,
            "message": message,
        })),
        Err(e) => Err(Error::Broker(format!("revoke of {id} failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_become_a_query() {
        let params = ListParams {
            state: Some("failed, succeeded".into()),
            task: Some(" resize ".into()),
            queue: Some(String::new()),
            limit: Some(10_000),
            ..ListParams::default()
        };
        let q = params.query().expect("valid");
        assert_eq!(q.states, vec![TaskState::Failed, TaskState::Succeeded]);
        assert_eq!(q.task.as_deref(), Some("resize"));
        assert_eq!(q.queue, None);
        assert_eq!(q.limit, MAX_LIMIT);
        let bad = ListParams {
            state: Some("exploded".into()),
            ..ListParams::default()
        };
        assert!(matches!(bad.query(), Err(Error::BadRequest(m)) if m.contains("exploded")));
    }

    fn record(state: TaskState) -> TaskRecord {
        TaskRecord {
            id: TaskId::new(),
            task: "t".into(),
            queue: "default".into(),
            state,
            attempt: 0,
            runs: 0,
            worker: Some("w-1".into()),
            idempotency_key: None,
            workflow_id: None,
            created_at: None,
            queued_at: None,
            started_at: None,
            finished_at: None,
            error: None,
            result: None,
            history: Vec::new(),
        }
    }

    #[test]
    fn the_creation_time_falls_back_to_the_earliest_known() {
        let mut r = record(TaskState::Succeeded);
        assert_eq!(created_at(&r), (None, false));
        r.history.push(celeriac_schema::store::Transition {
            state: TaskState::Started,
            at_ms: 2_000,
            attempt: 0,
            worker: None,
            error: None,
        });
        assert_eq!(created_at(&r), (Some(2_000), true));
        r.queued_at = Some(1_500);
        assert_eq!(created_at(&r), (Some(1_500), true));
        r.created_at = Some(1_000);
        assert_eq!(created_at(&r), (Some(1_000), false));
        assert_eq!(record_json(&r)["created_at"], 1_000);
    }

    #[test]
    fn a_skipped_task_lists_no_worker() {
        let skipped = record(TaskState::Skipped);
        assert_eq!(record_json(&skipped)["worker"], Value::Null);
        let mut ran = record(TaskState::Succeeded);
        ran.runs = 1;
        assert_eq!(record_json(&ran)["worker"], "w-1");
    }

    #[test]
    fn a_revoke_body_says_whether_to_terminate() {
        let plain: RevokeOptions = serde_json::from_str("{}").expect("empty");
        assert!(!plain.terminate);
        let term: RevokeOptions =
            serde_json::from_str(r#"{"terminate": true}"#).expect("terminate");
        assert!(term.terminate);
        assert!(serde_json::from_str::<RevokeOptions>(r#"{"terminat": true}"#).is_err());
    }

    #[test]
    fn results_decode_to_json() {
        let bytes = celeriac_schema::store::encode_result(&json!({"w": 640})).expect("encodes");
        assert_eq!(msgpack_json(&bytes), json!({"w": 640}));
        assert!(msgpack_json(&[0x92, 0x01]).get("undecodable").is_some());
        assert!(matches!(parse_id("nope"), Err(Error::BadRequest(_))));
    }
}

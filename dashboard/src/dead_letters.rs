//! The Dead letters pages: browse, inspect, replay and delete, one or many.
//!
//! Every operation is a scan of the dead-letter tool (see
//! [`celeriac_dlq::scan`]): messages are read with manual acknowledgements,
//! bounded by the queue's length at the start, and those not acted on go
//! back to the queue, in order, when the scan ends. A replayed copy is
//! published with a publisher confirm, and its original is deleted only
//! once the broker confirmed the copy; a copy that cannot be prepared or is
//! refused leaves its original where it was. Delete and replay act only on
//! the task ids the request names (the ones the user selected and
//! confirmed), never on "everything". One scan runs at a time.

use std::collections::HashSet;

use celeriac_dlq::dead_letter::DeadLetter;
use celeriac_dlq::record;
use celeriac_dlq::replay::{self, Skip};
use celeriac_dlq::scan::{queue_length, DlqScan};
use celeriac_dlq::signing::{sign_copy, ReplaySigning};
use celeriac_producer::publish::{check_confirm, publish, DEFAULT_CONFIRM_TIMEOUT};
use celeriac_schema::topology::validate_name;
use lapin::options::ConfirmSelectOptions;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::{broker, queues, App};

/// Dead letters listed per queue at most.
pub const MAX_LIST: usize = 500;

/// Task ids one replay or delete request may name at most.
pub const MAX_SELECTION: usize = 1_000;

/// The body of `POST /api/dead-letters/replay` and `/delete`.
#[derive(Debug, Clone, Deserialize)]
pub struct Selection {
    /// The logical queue whose dead-letter queue holds them.
    pub queue: String,
    /// The task ids to act on.
    pub ids: Vec<String>,
}

/// What to do with the selected dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send a copy back to the work queue, then delete the original.
    Replay,
    /// Delete.
    Delete,
}

fn check_queue(queue: &str) -> Result<()> {
    validate_name("queue", queue).map_err(|e| Error::BadRequest(e.to_string()))
}

/// The logical queues that have a dead-letter queue, with its depth.
async fn dead_letter_queues(app: &App) -> Result<Vec<(String, u64)>> {
    let names = match &app.management {
        Some(m) => match m.dead_letter_queues(&app.topology).await {
            Ok(found) => found,
            Err(_) => queues::known_queues(app).await.into_iter().collect(),
        },
        None => queues::known_queues(app).await.into_iter().collect(),
    };
    let dlqs: Vec<String> = names
        .iter()
        .map(|q| app.topology.dead_letter_queue(q))
        .collect();
    let depths = queues::declare_passive_many(app, &dlqs).await?;
    let out = names
        .into_iter()
        .zip(depths)
        .filter_map(|(queue, found)| found.map(|(depth, _)| (queue, depth)))
        .collect();
    Ok(out)
}

/// `GET /api/dead-letters?queue=Q&limit=N`.
pub(crate) async fn list(app: &App, queue: Option<&str>, limit: Option<usize>) -> Result<Value> {
    let limit = limit.unwrap_or(100).clamp(1, MAX_LIST);
    let _one_at_a_time = app.dead_letter_lock.lock().await;
    let all = dead_letter_queues(app).await?;
    let chosen: Vec<&(String, u64)> = match queue {
        Some(q) => {
            check_queue(q)?;
            all.iter().filter(|(name, _)| name == q).collect()
        }
        None => all.iter().collect(),
    };
    let mut letters = Vec::new();
    let mut truncated = false;
    for (queue, depth) in chosen {
        if *depth == 0 {
            continue;
        }
        let channel = app.broker.channel().await?;
        let mut scan = DlqScan::start(&channel, &app.topology, queue).await?;
        let mut taken = 0;
        while let Some((tag, mut dl)) = scan.next().await? {
            dl.fill_from_body();
            scan.hold(tag);
            letters.push(record::summary(&dl));
            taken += 1;
            if taken == limit {
                truncated = *depth > taken as u64;
                break;
            }
        }
        scan.finish().await?;
        broker::close(channel).await;
    }
    let queues: Vec<Value> = all
        .iter()
        .map(|(q, depth)| json!({"queue": q, "dlq": app.topology.dead_letter_queue(q), "depth": depth}))
        .collect();
    Ok(json!({ "queues": queues, "letters": letters, "truncated": truncated, "limit": limit }))
}

/// `GET /api/dead-letters/{queue}/{task_id}`: the full record (headers,
/// properties, the decoded envelope, the body in base64).
pub(crate) async fn show(app: &App, queue: &str, id: &str) -> Result<Value> {
    check_queue(queue)?;
    let _one_at_a_time = app.dead_letter_lock.lock().await;
    let channel = app.broker.channel().await?;
    let dlq = app.topology.dead_letter_queue(queue);
    if queue_length(&channel, &dlq).await.is_err() {
        return Err(Error::NotFound(format!(
            "queue {queue:?} has no dead-letter queue ({dlq})"
        )));
    }
    let mut scan = DlqScan::start(&channel, &app.topology, queue).await?;
    let mut found = None;
    while let Some((tag, mut dl)) = scan.next().await? {
        scan.hold(tag);
        dl.fill_from_body();
        if dl.task_id.as_deref() == Some(id) {
            found = Some(dl);
            break;
        }
    }
    scan.finish().await?;
    broker::close(channel).await;
    let dl =
        found.ok_or_else(|| Error::NotFound(format!("no dead letter of task {id} in {dlq}")))?;
    let mut value = record::full(&dl);
    if let Value::Object(map) = &mut value {
        let input = dl
            .envelope()
            .ok()
            .map(|env| serde_json::to_value(&env.input).unwrap_or(Value::Null));
        map.insert("input".into(), input.unwrap_or(Value::Null));
    }
    Ok(value)
}

/// `POST /api/dead-letters/replay` and `/delete`.
pub(crate) async fn act(app: &App, selection: &Selection, action: Action) -> Result<Value> {
    check_queue(&selection.queue)?;
    if selection.ids.is_empty() {
        return Err(Error::BadRequest(
            "select at least one dead letter (`ids`)".into(),
        ));
    }
    if selection.ids.len() > MAX_SELECTION {
        return Err(Error::BadRequest(format!(
            "at most {MAX_SELECTION} dead letters per request, not {}",
            selection.ids.len()
        )));
    }
    let wanted: HashSet<&str> = selection.ids.iter().map(String::as_str).collect();
    let _one_at_a_time = app.dead_letter_lock.lock().await;
    let channel = app.broker.channel().await?;
    let dlq = app.topology.dead_letter_queue(&selection.queue);
    if queue_length(&channel, &dlq).await.is_err() {
        return Err(Error::NotFound(format!(
            "queue {:?} has no dead-letter queue ({dlq})",
            selection.queue
        )));
    }
    if action == Action::Replay {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| Error::Broker(format!("enabling publisher confirms: {e}")))?;
    }
    let signing = app.config.signing.as_ref().map(|keyring| ReplaySigning {
        keyring,
        sign_unverified: false,
    });
    let mut scan = DlqScan::start(&channel, &app.topology, &selection.queue).await?;
    let mut done: Vec<String> = Vec::new();
    let mut skipped: Vec<Value> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let outcome: Result<()> = async {
        while let Some((tag, mut dl)) = scan.next().await? {
            dl.fill_from_body();
            let id = dl.task_id.clone().unwrap_or_default();
            if !wanted.contains(id.as_str()) {
                scan.hold(tag);
                continue;
            }
            seen.insert(id.clone());
            match action {
                Action::Delete => {
                    scan.done(tag).await?;
                    tracing::info!(task_id = %id, queue = %dl.queue, "dead letter deleted");
                    done.push(id);
                }
                Action::Replay => match replay_one(app, &channel, &dl, signing).await {
                    Ok(()) => {
                        scan.done(tag).await?;
                        tracing::info!(task_id = %id, queue = %dl.queue, "dead letter replayed");
                        done.push(id);
                    }
                    Err(why) => {
                        scan.hold(tag);
                        tracing::warn!(task_id = %id, "dead letter not replayed: {why}");
                        skipped.push(json!({"task_id": id, "reason": why}));
                    }
                },
            }
        }
        Ok(())
    }
    .await;
    let finished = scan.finish().await;
    broker::close(channel).await;
    outcome?;
    finished?;
    let not_found: Vec<&str> = selection
        .ids
        .iter()
        .map(String::as_str)
        .filter(|id| !seen.contains(*id))
        .collect();
    let verb = match action {
        Action::Replay => "replayed",
        Action::Delete => "deleted",
    };
    Ok(json!({
        "action": verb,
        "queue": selection.queue,
        "done": done,
        "skipped": skipped,
        "not_found": not_found,
    }))
}

/// Publishes the replayed copy of `dl` and waits for the broker's confirm.
async fn replay_one(
    app: &App,
    channel: &lapin::Channel,
    dl: &DeadLetter,
    signing: Option<ReplaySigning<'_>>,
) -> std::result::Result<(), String> {
    let (copy, _) = replay::prepare(&app.topology, dl, false, celeriac_schema::now_ms())
        .and_then(|copy| sign_copy(copy, dl, signing))
        .map_err(|Skip(why)| why)?;
    let id = dl.task_id.clone().unwrap_or_default();
    let pending = publish(channel, &copy.route, &copy.body, copy.properties)
        .await
        .map_err(|e| e.to_string())?;
    check_confirm(pending, &id, &copy.route, DEFAULT_CONFIRM_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

//! The Workflows pages: recent workflows, and one workflow's DAG with each
//! node's progress and its task's state.

use std::collections::HashMap;

use celeriac_schema::store::{NodeProgress, Store, WorkflowRecord};
use celeriac_schema::workflow::node_task_id;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::tasks::parse_id;
use crate::App;

/// Nodes whose task records the detail reads at most (larger workflows
/// show the coordinator's progress only).
pub const MAX_NODE_RECORDS: usize = 300;

fn progress_str(p: NodeProgress) -> &'static str {
    match p {
        NodeProgress::Waiting => "waiting",
        NodeProgress::Released => "released",
        NodeProgress::Succeeded => "succeeded",
        NodeProgress::Failed => "failed",
        NodeProgress::Skipped => "skipped",
    }
}

fn record_json(w: &WorkflowRecord) -> Value {
    json!({
        "id": w.id.to_string(),
        "state": w.state.as_str(),
        "nodes": w.nodes,
        "remaining": w.remaining,
        "failed": w.failed,
        "succeeded": w.progress.values().filter(|p| **p == NodeProgress::Succeeded).count(),
        "outputs": w.outputs,
        "created_at": w.created_at,
        "finished_at": w.finished_at,
    })
}

/// `GET /api/workflows`.
pub(crate) async fn list(app: &App, limit: usize) -> Result<Value> {
    let ids = app.store.recent_workflows(limit.clamp(1, 200)).await?;
    let mut out = Vec::with_capacity(ids.len());
    for (id, _) in ids {
        if let Some(w) = app.store.get_workflow(id).await? {
            out.push(record_json(&w));
        }
    }
    Ok(json!({ "workflows": out }))
}

/// Each node's depth: the longest path from a root to it.
pub fn depths(dependencies: &HashMap<String, Vec<String>>) -> HashMap<String, usize> {
    fn depth_of(
        node: &str,
        deps: &HashMap<String, Vec<String>>,
        memo: &mut HashMap<String, usize>,
        guard: usize,
    ) -> usize {
        if let Some(d) = memo.get(node) {
            return *d;
        }
        // A stored workflow is acyclic; the guard only bounds a corrupt one.
        let d = if guard > deps.len() {
            0
        } else {
            deps.get(node)
                .into_iter()
                .flatten()
                .map(|p| depth_of(p, deps, memo, guard + 1) + 1)
                .max()
                .unwrap_or(0)
        };
        memo.insert(node.to_owned(), d);
        d
    }
    let mut memo = HashMap::new();
    for node in dependencies.keys() {
        depth_of(node, dependencies, &mut memo, 0);
    }
    memo
}

/// `GET /api/workflows/{id}`.
pub(crate) async fn detail(app: &App, id: &str) -> Result<Value> {
    let id = parse_id(id)?;
    let record = app.store.get_workflow(id).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "the store has no workflow {id} (unknown, or expired)"
        ))
    })?;
    let names: Vec<String> = record.progress.keys().cloned().collect();
    let defs = app.store.workflow_nodes(id, &names).await?;
    let deps: HashMap<String, Vec<String>> = names
        .iter()
        .zip(&defs)
        .map(|(name, def)| {
            let d = def
                .as_ref()
                .map(|n| n.dependencies.clone())
                .unwrap_or_default();
            (name.clone(), d)
        })
        .collect();
    let depth = depths(&deps);
    let with_records = names.len() <= MAX_NODE_RECORDS;
    let mut nodes = Vec::with_capacity(names.len());
    for (name, def) in names.iter().zip(&defs) {
        let task_id = node_task_id(id, name);
        let task = if with_records {
            app.store.get(task_id).await?
        } else {
            None
        };
        let progress = record
            .progress
            .get(name)
            .copied()
            .unwrap_or(NodeProgress::Waiting);
        nodes.push(json!({
            "id": name,
            "task": def.as_ref().map(|n| n.task.clone()),
            "queue": def.as_ref().and_then(|n| n.queue.clone()),
            "dependencies": deps.get(name).cloned().unwrap_or_default(),
            "depth": depth.get(name).copied().unwrap_or(0),
            "progress": progress_str(progress),
            "task_id": task_id.to_string(),
            "state": task.as_ref().map(|t| t.state.as_str()),
            "attempt": task.as_ref().map(|t| t.attempt),
            // A skipped node never ran: the worker that recorded the skip
            // is not its worker.
            "worker": task.as_ref().filter(|_| progress != NodeProgress::Skipped).and_then(crate::tasks::shown_worker),
            "started_at": task.as_ref().and_then(|t| t.started_at),
            "finished_at": task.as_ref().and_then(|t| t.finished_at),
            "error": task.as_ref().and_then(|t| t.error.as_ref()).map(|e| json!({"type": e.error_type, "message": e.message})),
        }));
    }
    Ok(json!({
        "workflow": record_json(&record),
        "nodes": nodes,
        "node_records": with_records,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_the_longest_path_from_a_root() {
        let deps: HashMap<String, Vec<String>> = [
            ("a", vec![]),
            ("b", vec!["a"]),
            ("c", vec!["a", "b"]),
            ("d", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        let d = depths(&deps);
        assert_eq!((d["a"], d["b"], d["c"], d["d"]), (0, 1, 2, 0));
    }
}

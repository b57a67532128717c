//! The coordinator: what a worker does after a workflow node finishes.
//!
//! - **Success.** [`release`] marks the node succeeded in the store (one
//!   atomic step, counted once however often it is repeated) and publishes
//!   every dependent whose dependencies have now all succeeded, with its
//!   input built from their results. Each dependent is released exactly
//!   once; publishing it again after a crash is harmless, because a node's
//!   task id and idempotency key are fixed, so it still runs once.
//! - **Failure for good.** [`fail`] marks the node failed and everything
//!   downstream of it skipped (0 attempts); independent branches go on.
//!
//! Both run before the finished delivery is acked: if either cannot
//! complete, the delivery goes back to the queue, comes back as a
//! suppressed duplicate, and the step runs again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use celeriac_producer::publish;
use celeriac_producer::topology::declare;
use celeriac_schema::signing::Keyring;
use celeriac_schema::store::{decode_result, Store, TaskFailure, Update};
use celeriac_schema::workflow::{node_key, node_task_id, InputFrom, Node};
use celeriac_schema::{now_ms, Envelope, TaskId, TaskState, Topology};
use lapin::Channel;
use tracing::{debug, info, warn};

/// What a release needs from the worker.
pub(crate) struct Context<'a> {
    pub store: &'a Arc<dyn Store>,
    pub publisher: &'a Channel,
    pub topology: &'a Topology,
    /// Queues declared on this broker connection's behalf already.
    pub declared: &'a Mutex<HashSet<String>>,
    /// The queue of the finished node, for dependents that name none.
    pub queue: &'a str,
    pub worker: &'a str,
    /// Signs the released nodes when set.
    pub signing: Option<&'a Keyring>,
}

/// Marks `env`'s node succeeded and publishes the dependents it makes
/// ready; returns how many were released for the first time.
pub(crate) async fn release(cx: &Context<'_>, env: &Envelope) -> Result<usize, String> {
    let Some(wf) = &env.workflow else {
        return Ok(0);
    };
    let workflow = wf.workflow_id;
    let ready = cx
        .store
        .node_succeeded(workflow, &wf.node_id)
        .await
        .map_err(|e| e.to_string())?;
    if ready.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = ready.iter().map(|r| r.node.clone()).collect();
    let specs = cx
        .store
        .workflow_nodes(workflow, &ids)
        .await
        .map_err(|e| e.to_string())?;
    let mut queued = Vec::with_capacity(specs.len());
    let mut first = 0;
    for (ready, spec) in ready.iter().zip(specs) {
        let Some(node) = spec else {
            warn!(node = %ready.node, "a released node has no stored definition");
            continue;
        };
        let input = input_of(cx.store.as_ref(), workflow, &node).await?;
        let mut next = node.envelope(workflow, input);
        next.parent_id = Some(env.id);
        let queue = node.queue.clone().unwrap_or_else(|| cx.queue.to_owned());
        ensure_queue(cx, &queue, next.tolerance_ms.is_some()).await?;
        let body = celeriac_schema::encode(&next).map_err(|e| e.to_string())?;
        let route =
            publish::route(cx.topology, &queue, &next, now_ms()).map_err(|e| e.to_string())?;
        let props = publish::task_properties(&next, &queue, &body, cx.signing)
            .map_err(|e| e.to_string())?;
        publish::publish_confirmed(cx.publisher, &route, &body, props, &next.id.to_string())
            .await
            .map_err(|e| e.to_string())?;
        if ready.first {
            first += 1;
            info!(workflow = %workflow, node = %node.id, "node released");
        } else {
            debug!(workflow = %workflow, node = %node.id, "node published again");
        }
        let mut update = Update::new(next.id, node.task.clone(), queue, TaskState::Queued, 0);
        update.idempotency_key = next.idempotency_key.clone();
        update.workflow_id = Some(workflow.to_string());
        queued.push(update);
    }
    if let Err(e) = cx.store.record(&queued).await {
        warn!(error = %e, "could not record released nodes as queued");
    }
    Ok(first)
}

/// The input of a node, from its definition and its dependencies' results.
async fn input_of(store: &dyn Store, workflow: TaskId, node: &Node) -> Result<rmpv::Value, String> {
    if node.input_from == InputFrom::Given {
        return Ok(node.input.clone());
    }
    let ids: Vec<TaskId> = node
        .dependencies
        .iter()
        .map(|d| node_task_id(workflow, d))
        .collect();
    let results = store.results(&ids).await.map_err(|e| e.to_string())?;
    let mut values = Vec::with_capacity(results.len());
    for bytes in results {
        values.push(match bytes {
            Some(bytes) => decode_result::<rmpv::Value>(&bytes).map_err(|e| e.to_string())?,
            None => rmpv::Value::Nil,
        });
    }
    Ok(match node.input_from {
        InputFrom::Given => node.input.clone(),
        InputFrom::Result => values.into_iter().next().unwrap_or(rmpv::Value::Nil),
        InputFrom::InOrder => rmpv::Value::Array(values),
        InputFrom::ByName => rmpv::Value::Map(
            node.dependencies
                .iter()
                .cloned()
                .map(rmpv::Value::from)
                .zip(values)
                .collect(),
        ),
    })
}

/// Declares `queue`, with its tolerance classes when `deferrable`, once.
async fn ensure_queue(cx: &Context<'_>, queue: &str, deferrable: bool) -> Result<(), String> {
    let marker = match deferrable {
        true => format!("{queue} tolerance"),
        false => queue.to_owned(),
    };
    let known = cx
        .declared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&marker);
    if known {
        return Ok(());
    }
    let mut declarations = cx
        .topology
        .queue_declarations(queue)
        .map_err(|e| e.to_string())?;
    if deferrable {
        let classes = cx.topology.tolerance_declarations(queue);
        declarations.extend(classes.map_err(|e| e.to_string())?);
    }
    declare(cx.publisher, &declarations)
        .await
        .map_err(|e| e.to_string())?;
    cx.declared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(marker);
    Ok(())
}

/// Marks `env`'s node failed and records every node downstream of it as
/// skipped.
pub(crate) async fn fail(cx: &Context<'_>, env: &Envelope) -> Result<(), String> {
    let Some(wf) = &env.workflow else {
        return Ok(());
    };
    let workflow = wf.workflow_id;
    let skipped = cx
        .store
        .node_failed(workflow, &wf.node_id)
        .await
        .map_err(|e| e.to_string())?;
    if skipped.is_empty() {
        return Ok(());
    }
    warn!(workflow = %workflow, node = %wf.node_id, skipped = skipped.len(), "node failed; its dependents are skipped");
    let specs = cx
        .store
        .workflow_nodes(workflow, &skipped)
        .await
        .map_err(|e| e.to_string())?;
    let updates: Vec<Update> = skipped
        .iter()
        .zip(specs)
        .map(|(id, spec)| {
            let (task, queue) = match spec {
                Some(node) => (node.task, node.queue.unwrap_or_else(|| cx.queue.to_owned())),
                None => (String::new(), cx.queue.to_owned()),
            };
            let mut update = Update::new(
                node_task_id(workflow, id),
                task,
                queue,
                TaskState::Skipped,
                0,
            );
            update.workflow_id = Some(workflow.to_string());
            update.idempotency_key = Some(node_key(workflow, id));
            update.worker = Some(cx.worker.to_owned());
            update.error = Some(TaskFailure {
                error_type: "DependencyFailed".into(),
                message: format!("node `{}` failed", wf.node_id),
            });
            update
        })
        .collect();
    cx.store.record(&updates).await.map_err(|e| e.to_string())
}

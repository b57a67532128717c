//! Workflows: creating one with its nodes and edges, releasing the nodes
//! whose dependencies succeeded, skipping the dependents of a failed node,
//! and reading its progress.

use std::collections::HashMap;

use celeriac_schema::store::{NodeProgress, Ready, WorkflowRecord, WorkflowState};
use celeriac_schema::workflow::{Node, Workflow};
use celeriac_schema::{Error as SchemaError, TaskId};
use redis::Script;

use crate::{encode, index, RedisStore, StoreResult};

impl RedisStore {
    /// The keys of a workflow: record, children, pending, status, nodes.
    pub(crate) fn workflow_keys(&self, id: TaskId) -> [String; 5] {
        let base = format!("{}w:{id}", self.inner.prefix);
        [
            base.clone(),
            format!("{base}:c"),
            format!("{base}:p"),
            format!("{base}:s"),
            format!("{base}:n"),
        ]
    }

    pub(crate) async fn coordinate(
        &self,
        op: &'static str,
        script: &Script,
        workflow: TaskId,
        node: &str,
    ) -> StoreResult<redis::Value> {
        let keys = self.workflow_keys(workflow);
        let mut pipe = redis::pipe();
        Self::invoke(
            &mut pipe,
            script,
            &keys[..4],
            vec![
                node.as_bytes().to_vec(),
                Self::ttl_ms(self.inner.settings.result_ttl)
                    .to_string()
                    .into_bytes(),
                celeriac_schema::now_ms().to_string().into_bytes(),
                self.channel(workflow).into_bytes(),
            ],
        );
        let (value,): (redis::Value,) = self.run(op, &pipe).await?;
        Ok(value)
    }

    /// [`Store::create_workflow`].
    pub(crate) async fn create_workflow_record(
        &self,
        workflow: &Workflow,
        outputs: &[String],
    ) -> StoreResult<bool> {
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for node in &workflow.nodes {
            for dep in &node.dependencies {
                children.entry(dep.as_str()).or_default().push(&node.id);
            }
        }
        let total = workflow.nodes.len();
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(8 + 4 * total + 2 * children.len());
        args.push(
            Self::ttl_ms(self.inner.settings.result_ttl)
                .to_string()
                .into_bytes(),
        );
        args.push(if total == 0 { "succeeded" } else { "running" }.into());
        args.push(total.to_string().into_bytes());
        args.push(total.to_string().into_bytes());
        args.push(b"0".to_vec());
        args.push(encode("outputs", outputs)?);
        args.push(celeriac_schema::now_ms().to_string().into_bytes());
        args.push(total.to_string().into_bytes());
        for node in &workflow.nodes {
            let (status, pending) = if node.dependencies.is_empty() {
                ("r", String::new())
            } else {
                ("w", node.dependencies.len().to_string())
            };
            args.push(node.id.clone().into_bytes());
            args.push(encode("workflow node", node)?);
            args.push(status.into());
            args.push(pending.into_bytes());
        }
        for (node, kids) in &children {
            args.push(node.as_bytes().to_vec());
            args.push(encode("workflow edges", kids)?);
        }
        let mut pipe = redis::pipe();
        Self::invoke(
            &mut pipe,
            &self.inner.apply.create_workflow,
            &self.workflow_keys(workflow.id),
            args,
        );
        index::workflow_pipe(self, workflow.id, &mut pipe);
        let (created,): (i64,) = self.run("create_workflow", &pipe).await?;
        Ok(created == 1)
    }

    /// [`Store::workflow_nodes`].
    pub(crate) async fn read_workflow_nodes(
        &self,
        workflow: TaskId,
        nodes: &[String],
    ) -> StoreResult<Vec<Option<Node>>> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let [.., n] = self.workflow_keys(workflow);
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&n).arg(nodes);
        let (specs,): (Vec<Option<Vec<u8>>>,) = self.run("workflow_nodes", &pipe).await?;
        specs
            .into_iter()
            .map(|spec| {
                spec.map(|bytes| {
                    rmp_serde::from_slice::<Node>(&bytes).map_err(|e| SchemaError::StoreData {
                        what: "workflow node",
                        message: e.to_string(),
                    })
                })
                .transpose()
            })
            .collect()
    }

    /// [`Store::node_succeeded`].
    pub(crate) async fn release_after_success(
        &self,
        workflow: TaskId,
        node: &str,
    ) -> StoreResult<Vec<Ready>> {
        let value = self
            .coordinate(
                "node_succeeded",
                &self.inner.apply.node_succeeded,
                workflow,
                node,
            )
            .await?;
        let flat: Vec<redis::Value> =
            redis::from_redis_value(value).map_err(|e| SchemaError::StoreData {
                what: "released nodes",
                message: e.to_string(),
            })?;
        let mut ready = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let [node, first] = pair else { continue };
            let node: String =
                redis::from_redis_value(node.clone()).map_err(|e| SchemaError::StoreData {
                    what: "released node",
                    message: e.to_string(),
                })?;
            let first: i64 = redis::from_redis_value(first.clone()).unwrap_or(0);
            ready.push(Ready {
                node,
                first: first == 1,
            });
        }
        Ok(ready)
    }

    /// [`Store::node_failed`].
    pub(crate) async fn skip_after_failure(
        &self,
        workflow: TaskId,
        node: &str,
    ) -> StoreResult<Vec<String>> {
        let value = self
            .coordinate("node_failed", &self.inner.apply.node_failed, workflow, node)
            .await?;
        redis::from_redis_value(value).map_err(|e| SchemaError::StoreData {
            what: "skipped nodes",
            message: e.to_string(),
        })
    }

    /// [`Store::get_workflow`].
    pub(crate) async fn read_workflow(
        &self,
        workflow: TaskId,
    ) -> StoreResult<Option<WorkflowRecord>> {
        let [w, _, _, st, _] = self.workflow_keys(workflow);
        let mut pipe = redis::pipe();
        pipe.hgetall(&w).hgetall(&st);
        let (fields, status): (HashMap<String, Vec<u8>>, HashMap<String, String>) =
            self.run("get_workflow", &pipe).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let text = |name: &str| {
            fields
                .get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let number = |name: &'static str| -> StoreResult<u64> {
            text(name)
                .parse::<u64>()
                .map_err(|e| SchemaError::StoreData {
                    what: name,
                    message: e.to_string(),
                })
        };
        let state = WorkflowState::parse(&text("state")).ok_or_else(|| SchemaError::StoreData {
            what: "workflow state",
            message: text("state"),
        })?;
        let outputs: Vec<String> = match fields.get("outputs") {
            Some(bytes) => rmp_serde::from_slice(bytes).map_err(|e| SchemaError::StoreData {
                what: "workflow outputs",
                message: e.to_string(),
            })?,
            None => Vec::new(),
        };
        let progress = status
            .into_iter()
            .map(|(node, s)| {
                let p = match s.as_str() {
                    "r" => NodeProgress::Released,
                    "s" => NodeProgress::Succeeded,
                    "f" => NodeProgress::Failed,
                    "k" => NodeProgress::Skipped,
                    _ => NodeProgress::Waiting,
                };
                (node, p)
            })
            .collect();
        Ok(Some(WorkflowRecord {
            id: workflow,
            state,
            nodes: number("nodes")? as usize,
            remaining: text("remaining").parse::<i64>().unwrap_or(0).max(0) as usize,
            failed: number("failed")? as usize,
            released: text("released").parse().unwrap_or(0),
            outputs,
            created_at: number("created_at")?,
            finished_at: text("finished_at").parse().ok(),
            progress,
        }))
    }
}

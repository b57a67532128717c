//! Submitting workflows and canvases.

use std::sync::Arc;

use celeriac_schema::store::{NodeProgress, Store, Update};
use celeriac_schema::workflow::Workflow;
use celeriac_schema::{TaskId, TaskState};
use tracing::{debug, warn};

use super::{update_for, PreparedTask, Producer};
use crate::canvas::Canvas;
use crate::error::{Error, Result};
use crate::handle::WorkflowHandle;

impl Producer {
    /// Submits a workflow: validates it, stores it for the coordinator and
    /// publishes the nodes that wait for nothing. `outputs` names the
    /// nodes whose results are the workflow's result (empty: every node
    /// nothing depends on, in order).
    ///
    /// Submitting the same workflow id twice runs it once. The store
    /// creates a workflow once ([`Store::create_workflow`]); a second
    /// submit leaves the stored workflow (its definition, outputs and
    /// progress) as it is, publishes again only those of its roots the
    /// broker may never have received (not finished, and recorded
    /// `created` or not recorded at all: the first submit stopped between
    /// storing the workflow and publishing), and returns the handle of the
    /// stored workflow. A root published twice still runs once: its task
    /// id and idempotency key come from the workflow id, and the worker's
    /// execution key suppresses a second run. So a submit that failed, or
    /// whose caller died before it returned, can simply be repeated.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(producer: celeriac_producer::Producer) -> celeriac_producer::Result<()> {
    /// use celeriac_schema::workflow::{Node, Workflow};
    ///
    /// let mut workflow = Workflow::new();
    /// workflow.push(Node::new("build", "reports.build", rmpv::Value::Nil));
    /// let first = producer.submit(&workflow, &[]).await?;
    /// // Safe to repeat, e.g. after a timeout: the workflow still runs once.
    /// let again = producer.submit(&workflow, &[]).await?;
    /// assert_eq!(first.id(), again.id());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Workflow`] naming a duplicate id, unknown dependency or
    /// cycle (nothing is published); [`Error::NoStore`]; broker and store
    /// errors as for [`Producer::send`].
    pub async fn submit(&self, workflow: &Workflow, outputs: &[String]) -> Result<WorkflowHandle> {
        let store = self
            .inner
            .store
            .clone()
            .ok_or(Error::NoStore { what: "a workflow" })?;
        let dag = workflow.validate()?;
        let outputs: Vec<String> = if outputs.is_empty() {
            (0..dag.len())
                .filter(|&i| dag.dependents(i).is_empty())
                .map(|i| dag.id(i).to_owned())
                .collect()
        } else {
            outputs.to_vec()
        };
        let prepared: Vec<PreparedTask> = workflow
            .nodes
            .iter()
            .map(|node| self.prepare_node(workflow.id, node))
            .collect::<Result<_>>()?;
        let roots: Vec<PreparedTask> = if store.create_workflow(workflow, &outputs).await? {
            let created: Vec<Update> = prepared
                .iter()
                .map(|t| update_for(t, TaskState::Created))
                .collect();
            store.record(&created).await?;
            prepared
                .into_iter()
                .zip(&workflow.nodes)
                .filter(|(_, node)| node.dependencies.is_empty())
                .map(|(task, _)| task)
                .collect()
        } else {
            self.unpublished_roots(&store, workflow.id).await?
        };
        self.ensure_queues(&roots).await?;
        self.publish_all(&roots).await?;
        let queued: Vec<Update> = roots
            .iter()
            .map(|t| update_for(t, TaskState::Queued))
            .collect();
        if let Err(e) = store.record(&queued).await {
            warn!(error = %e, "could not record workflow roots as queued");
        }
        debug!(workflow = %workflow.id, nodes = workflow.nodes.len(), roots = roots.len(), "workflow submitted");
        Ok(WorkflowHandle::new(workflow.id, store).with_producer(self.clone()))
    }

    /// The roots of a workflow stored before that the broker may not hold:
    /// released, not finished, and recorded `created` (publish not
    /// confirmed) or not recorded (the submit stopped before recording
    /// them, which this call then does). Built from the stored
    /// definition, which wins over the one submitted again.
    async fn unpublished_roots(
        &self,
        store: &Arc<dyn Store>,
        workflow: TaskId,
    ) -> Result<Vec<PreparedTask>> {
        let Some(record) = store.get_workflow(workflow).await? else {
            // Expired between the two calls: long finished.
            return Ok(Vec::new());
        };
        let released: Vec<String> = record
            .progress
            .iter()
            .filter(|(_, p)| **p == NodeProgress::Released)
            .map(|(id, _)| id.clone())
            .collect();
        let mut roots = Vec::new();
        let mut unrecorded = Vec::new();
        for node in store
            .workflow_nodes(workflow, &released)
            .await?
            .into_iter()
            .flatten()
            .filter(|node| node.dependencies.is_empty())
        {
            let task = self.prepare_node(workflow, &node)?;
            match store.get(task.envelope.id).await? {
                None => unrecorded.push(update_for(&task, TaskState::Created)),
                Some(r) if r.state == TaskState::Created => {}
                // Queued or further: the broker has it, or had it.
                Some(_) => continue,
            }
            roots.push(task);
        }
        if !unrecorded.is_empty() {
            store.record(&unrecorded).await?;
        }
        debug!(%workflow, roots = roots.len(), "workflow submitted before: left as it is");
        Ok(roots)
    }

    /// Compiles and submits a canvas (chain, group, chord, nested).
    ///
    /// # Errors
    ///
    /// As [`Producer::submit`].
    pub async fn submit_canvas(&self, canvas: &Canvas) -> Result<WorkflowHandle> {
        let (workflow, outputs) = canvas.compile()?;
        self.submit(&workflow, &outputs).await
    }

    /// A handle on a workflow submitted earlier.
    ///
    /// # Errors
    ///
    /// [`Error::NoStore`] without a store.
    pub fn workflow(&self, id: TaskId) -> Result<WorkflowHandle> {
        let store = self
            .inner
            .store
            .clone()
            .ok_or(Error::NoStore { what: "a workflow" })?;
        Ok(WorkflowHandle::new(id, store).with_producer(self.clone()))
    }
}

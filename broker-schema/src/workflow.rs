//! The workflow model for the cluster: nodes, their dependencies and where
//! their input comes from.
//!
//! Chains, groups and chords are shapes of one model: a DAG of [`Node`]s.
//! A node runs once every node it depends on has succeeded; its input is
//! either given at submission or built from its dependencies' results
//! ([`InputFrom`]). Validation is the one every executor shares
//! ([`crate::dag`]): a duplicate id, an unknown dependency or a cycle is
//! refused before anything is published, with an error that names it.
//!
//! Every node of a workflow has a deterministic task id
//! ([`node_task_id`]) and idempotency key ([`node_key`]), so a node
//! published twice (a coordinator that crashed between two steps and ran
//! them again) still runs once.
//!
//! # Examples
//!
//! ```
//! use celeriac_schema::workflow::{InputFrom, Node, Workflow};
//!
//! let mut wf = Workflow::new();
//! wf.push(Node::new("fetch", "web.fetch", "https://example.com".into()));
//! wf.push(Node::new("parse", "web.parse", rmpv::Value::Nil).after(["fetch"]).input_from(InputFrom::Result));
//! assert!(wf.validate().is_ok());
//!
//! wf.push(Node::new("loop", "web.parse", rmpv::Value::Nil).after(["loop"]));
//! assert_eq!(wf.validate().unwrap_err().to_string(), "the workflow has a cycle: loop -> loop");
//! ```

use serde::{Deserialize, Serialize};

use crate::dag::{Dag, DagError};
use crate::{Envelope, RetryPolicy, TaskId, WorkflowRef};

/// Why a workflow cannot be submitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// A duplicate id, an unknown dependency or a cycle.
    #[error(transparent)]
    Graph(#[from] DagError),
    /// A node takes "the result of its dependency" but has not exactly one.
    #[error("node `{node}` takes the result of its one dependency, but has {count}")]
    ResultNeedsOneDependency {
        /// The node.
        node: String,
        /// How many dependencies it has.
        count: usize,
    },
}

/// Where a node's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputFrom {
    /// The input given at submission.
    #[default]
    Given,
    /// The result of its only dependency (a chain step).
    Result,
    /// A map from each dependency's id to its result (a general DAG node).
    ByName,
    /// The results of its dependencies as a list, in the order they are
    /// listed (a chord callback).
    InOrder,
}

/// One node of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique within the workflow.
    pub id: String,
    /// The task to run.
    pub task: String,
    /// The input given at submission (used with [`InputFrom::Given`]).
    #[serde(default = "nil")]
    pub input: rmpv::Value,
    /// Where the input comes from.
    #[serde(default)]
    pub input_from: InputFrom,
    /// The nodes that must succeed first.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// The logical queue (default: the producer's default queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Its retry policy (default: the envelope's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

impl Node {
    /// A node running `task` on `input`, with no dependencies.
    pub fn new(id: impl Into<String>, task: impl Into<String>, input: rmpv::Value) -> Node {
        Node {
            id: id.into(),
            task: task.into(),
            input,
            input_from: InputFrom::Given,
            dependencies: Vec::new(),
            queue: None,
            retry: None,
        }
    }

    /// Adds dependencies.
    pub fn after<I, S>(mut self, dependencies: I) -> Node
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.dependencies
            .extend(dependencies.into_iter().map(Into::into));
        self
    }

    /// Sets where the input comes from.
    pub fn input_from(mut self, from: InputFrom) -> Node {
        self.input_from = from;
        self
    }

    /// Sets the logical queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Node {
        self.queue = Some(queue.into());
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Node {
        self.retry = Some(policy);
        self
    }

    /// The envelope that runs this node of `workflow` on `input`: its fixed
    /// task id and idempotency key, its workflow membership and its retry
    /// policy. Producers (for roots) and the coordinator (for released
    /// nodes) build node envelopes only here.
    pub fn envelope(&self, workflow: TaskId, input: rmpv::Value) -> Envelope {
        let mut envelope = Envelope::new(self.task.clone(), input);
        envelope.id = node_task_id(workflow, &self.id);
        envelope.idempotency_key = Some(node_key(workflow, &self.id));
        envelope.workflow = Some(WorkflowRef {
            workflow_id: workflow,
            node_id: self.id.clone(),
        });
        envelope.root_id = Some(workflow);
        if let Some(policy) = self.retry {
            envelope.retry = policy;
        }
        envelope
    }
}

/// A workflow: an id and its nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// The workflow id (also the id its status is looked up by).
    pub id: TaskId,
    /// Its nodes, in any order.
    pub nodes: Vec<Node>,
}

impl Default for Workflow {
    fn default() -> Self {
        Workflow::new()
    }
}

impl Workflow {
    /// An empty workflow with a fresh id.
    pub fn new() -> Workflow {
        Workflow {
            id: TaskId::new(),
            nodes: Vec::new(),
        }
    }

    /// Adds a node.
    pub fn push(&mut self, node: Node) -> &mut Workflow {
        self.nodes.push(node);
        self
    }

    /// Checks the graph (ids unique, dependencies known, no cycle) and the
    /// input sources (a [`InputFrom::Result`] node has exactly one
    /// dependency), and returns the indexed graph.
    ///
    /// # Errors
    ///
    /// [`WorkflowError::Graph`] with the [`DagError`] that names the
    /// problem, or [`WorkflowError::ResultNeedsOneDependency`].
    pub fn validate(&self) -> Result<Dag, WorkflowError> {
        let dag = Dag::new(
            self.nodes
                .iter()
                .map(|n| (n.id.as_str(), n.dependencies.iter().map(String::as_str))),
        )?;
        if let Some(node) = self
            .nodes
            .iter()
            .find(|n| n.input_from == InputFrom::Result && n.dependencies.len() != 1)
        {
            return Err(WorkflowError::ResultNeedsOneDependency {
                node: node.id.clone(),
                count: node.dependencies.len(),
            });
        }
        Ok(dag)
    }

    /// The node with id `id`.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

fn nil() -> rmpv::Value {
    rmpv::Value::Nil
}

/// The deterministic task id of node `node` of workflow `workflow`: the
/// same node always gets the same id, so a node published twice runs once.
///
/// # Examples
///
/// ```
/// use celeriac_schema::workflow::node_task_id;
/// use celeriac_schema::TaskId;
///
/// let wf = TaskId::new();
/// assert_eq!(node_task_id(wf, "a"), node_task_id(wf, "a"));
/// assert_ne!(node_task_id(wf, "a"), node_task_id(wf, "b"));
/// ```
pub fn node_task_id(workflow: TaskId, node: &str) -> TaskId {
    TaskId::from_uuid(uuid::Uuid::new_v5(workflow.as_uuid(), node.as_bytes()))
}

/// The idempotency key of a workflow node.
pub fn node_key(workflow: TaskId, node: &str) -> String {
    format!("wf:{workflow}:{node}")
}

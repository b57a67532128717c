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
use crate::exec::{Exec, ExecInput, ExecSpec};
use crate::task::Task;
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
    /// The tenant its task runs for: its shard on a fair queue (see
    /// [`crate::fair`]) and its rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Its retry policy (default: the envelope's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The soft time limit of each run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_time_limit_ms: Option<u64>,
    /// The hard time limit of each run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_time_limit_ms: Option<u64>,
    /// The delay tolerance of its task, in milliseconds (SPEC.md
    /// section 19), counted from its release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_ms: Option<u64>,
    /// When set, the node runs this program: its task is [`Exec`] and its
    /// input (given or built from its dependencies) goes to the program's
    /// stdin. `task` is then `celeriac.exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecSpec>,
    /// Units of resource pools its envelope asks for.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pools: std::collections::BTreeMap<String, u32>,
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
            tenant: None,
            retry: None,
            soft_time_limit_ms: None,
            hard_time_limit_ms: None,
            tolerance_ms: None,
            exec: None,
            pools: Default::default(),
        }
    }

    /// A node running the program `spec` on `input`, with no dependencies.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_schema::exec::{ExecInput, ExecSpec};
    /// use celeriac_schema::workflow::Node;
    /// use celeriac_schema::TaskId;
    ///
    /// let node = Node::exec("hello", ExecSpec::new("echo").args(["hi"]), rmpv::Value::Nil);
    /// let envelope = node.envelope(TaskId::new(), rmpv::Value::from(1));
    /// assert_eq!(envelope.task, "celeriac.exec");
    /// let input: ExecInput = celeriac_schema::from_value(&envelope.input, "input").unwrap();
    /// assert_eq!(input.spec.program, "echo");
    /// assert_eq!(input.input, rmpv::Value::from(1));
    /// ```
    pub fn exec(id: impl Into<String>, spec: ExecSpec, input: rmpv::Value) -> Node {
        let mut node = Node::new(id, Exec::NAME, input);
        node.exec = Some(spec);
        node
    }

    /// Sets the soft and hard time limits of each run.
    pub fn time_limits(
        mut self,
        soft: Option<std::time::Duration>,
        hard: Option<std::time::Duration>,
    ) -> Node {
        self.soft_time_limit_ms = soft.map(duration_ms);
        self.hard_time_limit_ms = hard.map(duration_ms);
        self
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

    /// Sets the tenant its task runs for.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Node {
        self.tenant = Some(tenant.into());
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
        let input = match &self.exec {
            Some(spec) => exec_input(spec, input),
            None => input,
        };
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
        envelope.soft_time_limit_ms = self.soft_time_limit_ms;
        envelope.hard_time_limit_ms = self.hard_time_limit_ms;
        envelope.tolerance_ms = self.tolerance_ms;
        envelope.tenant.clone_from(&self.tenant);
        envelope.pools.clone_from(&self.pools);
        envelope
    }
}

fn exec_input(spec: &ExecSpec, input: rmpv::Value) -> rmpv::Value {
    let exec = ExecInput::new(spec.clone(), input);
    // An `ExecInput` is a map of strings and values: it always converts.
    crate::to_value(&exec).unwrap_or(rmpv::Value::Nil)
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

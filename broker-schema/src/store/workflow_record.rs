//! Workflow records: where a workflow and each of its nodes stand.

use serde::{Deserialize, Serialize};

use crate::TaskId;

/// Where a workflow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowState {
    /// Nodes are still to run.
    Running,
    /// Every node succeeded.
    Succeeded,
    /// Every node finished, and at least one failed (its dependents are
    /// skipped).
    Failed,
}

impl WorkflowState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
        }
    }

    /// From the lowercase name.
    pub fn parse(s: &str) -> Option<WorkflowState> {
        match s {
            "running" => Some(WorkflowState::Running),
            "succeeded" => Some(WorkflowState::Succeeded),
            "failed" => Some(WorkflowState::Failed),
            _ => None,
        }
    }
}

/// The coordinator's view of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeProgress {
    /// Waiting for dependencies.
    Waiting,
    /// Released (published), not finished.
    Released,
    /// Succeeded.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Skipped because a node it depends on failed.
    Skipped,
}

/// A workflow as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// The workflow id.
    pub id: TaskId,
    /// Where it stands.
    pub state: WorkflowState,
    /// Its node count.
    pub nodes: usize,
    /// Nodes not finished yet.
    pub remaining: usize,
    /// Nodes that failed for good.
    pub failed: usize,
    /// Nodes released by the coordinator after their dependencies
    /// succeeded (roots are not counted): each at most once.
    pub released: usize,
    /// The nodes whose results are the workflow's result, in order.
    pub outputs: Vec<String>,
    /// When it was submitted (Unix ms).
    pub created_at: u64,
    /// When its last node finished.
    pub finished_at: Option<u64>,
    /// Every node's progress.
    pub progress: std::collections::BTreeMap<String, NodeProgress>,
}

/// A node the coordinator found ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The node id.
    pub node: String,
    /// Whether this call released it (`false`: released before, and not
    /// finished; publishing it again is harmless, its key keeps it to one
    /// run).
    pub first: bool,
}

//! Schedule entries: what is submitted at each tick, under which ids.

use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::workflow::Workflow;
use celeriac_schema::TaskId;

use crate::schedule::{Overlap, Schedule};

/// The UUID v5 namespace of beat workflow ids.
pub const TICK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x77bd_aa6a_37d8_4002_b4c0_d04e_98e4_1072);

/// A tick key lives ten periods, at least this long, so that replicas
/// whose clocks differ still agree on who took it.
pub(super) const MIN_TICK_TTL: Duration = Duration::from_secs(3600);

/// ... and at most this long.
const MAX_TICK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub(super) type BuildWorkflow = dyn Fn(TaskId) -> Workflow + Send + Sync;

/// One scheduled thing: a flow, or the sub-workflow of one of its tasks.
#[derive(Clone)]
pub struct BeatEntry {
    pub(super) flow: String,
    pub(super) entry: Option<String>,
    pub(super) schedule: Schedule,
    pub(super) overlap: Overlap,
    pub(super) outputs: Vec<String>,
    pub(super) build: Arc<BuildWorkflow>,
}

impl std::fmt::Debug for BeatEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeatEntry")
            .field("flow", &self.flow)
            .field("entry", &self.entry)
            .field("schedule", &self.schedule)
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

impl BeatEntry {
    /// An entry of flow `flow` (`entry`: the task whose sub-workflow runs,
    /// `None` for the whole flow); `build` makes the workflow of a run
    /// with the id it is given.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::beat::BeatEntry;
    /// use celeriac_producer::schedule::{Overlap, Schedule};
    /// use celeriac_schema::workflow::Workflow;
    ///
    /// let entry = BeatEntry::new("etl", Some("load".into()), Schedule::interval_secs(60.0)?, Overlap::Queue,
    ///     |id| Workflow { id, nodes: Vec::new() });
    /// assert_eq!(entry.label(), "etl:load");
    /// # Ok::<(), celeriac_producer::Error>(())
    /// ```
    pub fn new(
        flow: impl Into<String>,
        entry: Option<String>,
        schedule: Schedule,
        overlap: Overlap,
        build: impl Fn(TaskId) -> Workflow + Send + Sync + 'static,
    ) -> BeatEntry {
        BeatEntry {
            flow: flow.into(),
            entry,
            schedule,
            overlap,
            outputs: Vec::new(),
            build: Arc::new(build),
        }
    }

    /// The nodes whose results are a run's result (default: every node
    /// nothing depends on).
    pub fn outputs(mut self, outputs: Vec<String>) -> BeatEntry {
        self.outputs = outputs;
        self
    }

    /// `{flow}:{entry}`, or `{flow}:*` for the whole flow.
    pub fn label(&self) -> String {
        format!("{}:{}", self.flow, self.entry.as_deref().unwrap_or("*"))
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The overlap policy.
    pub fn overlap(&self) -> Overlap {
        self.overlap
    }

    /// The tick key of tick `tick` (unix seconds).
    ///
    /// # Examples
    ///
    /// ```
    /// # use celeriac_producer::beat::BeatEntry;
    /// # use celeriac_producer::schedule::{Overlap, Schedule};
    /// # use celeriac_schema::workflow::Workflow;
    /// let entry = BeatEntry::new("etl", None, Schedule::interval_secs(60.0)?, Overlap::Skip,
    ///     |id| Workflow { id, nodes: Vec::new() });
    /// assert_eq!(entry.tick_key(1_700_000_040), "beat:etl:*:1700000040");
    /// assert_eq!(entry.run_id(1_700_000_040), entry.run_id(1_700_000_040));
    /// # Ok::<(), celeriac_producer::Error>(())
    /// ```
    pub fn tick_key(&self, tick: i64) -> String {
        format!("beat:{}:{tick}", self.label())
    }

    /// The workflow id of tick `tick`'s run: UUID v5 of its tick key.
    pub fn run_id(&self, tick: i64) -> TaskId {
        TaskId::from_uuid(uuid::Uuid::new_v5(
            &TICK_NAMESPACE,
            self.tick_key(tick).as_bytes(),
        ))
    }

    pub(super) fn tick_ttl(&self) -> Duration {
        self.schedule
            .period()
            .saturating_mul(10)
            .clamp(MIN_TICK_TTL, MAX_TICK_TTL)
    }
}

//! Workflows written in YAML: programs and handlers with `needs`, nested
//! subtasks, sequential and parallel blocks, retries, time limits and
//! schedules.
//!
//! A [`Flow`] is read with [`Flow::from_path`] or [`Flow::parse`], checked
//! as a whole (every error names the file, the line, the column and the
//! key), then compiled into the cluster's [`Workflow`] model
//! ([`Flow::workflow`]) or run in-process by the consumer crate
//! (`LocalScheduler::from_flow`). `beat` reads its schedules through [`Flow::scheduled`] and
//! [`Flow::workflow_for`].
//!
//! # The format
//!
//! ```yaml
//! name: report                 # required: used in ids, beat keys and output
//! schedule: 3600               # optional: seconds (a number) or a cron expression (a string)
//! overlap: skip                # optional: skip | queue | allow (default skip), for beat
//! defaults:                    # optional, for every task that does not set its own
//!   retries: 0                 #   retries after the first attempt (default 0)
//!   timeout: 60                #   hard time limit of one attempt, seconds (fractions allowed)
//!   soft_timeout: 50           #   soft time limit, seconds: shorter than the hard one
//!   queue: default             #   the cluster queue
//!   tenant: acme               #   the tenant tasks run for (rate limits; fair queues share by tenant)
//!   tolerance: 300             #   delay tolerance, seconds: may wait this long once ready
//!   pools: {gpu: 1}            #   units of cluster-wide resource pools held while it runs
//! limits:                      # optional (see FlowLimits): applied by run --local and submit
//!   pools: {gpu: 2}            #   capacity of each pool
//!   rate: {celeriac.exec: 5/s} #   starts per task name (programs run as celeriac.exec)
//!   tenant_rate: {acme: 100/m} #   starts per tenant
//! tasks:                       # task name -> task; names are [A-Za-z0-9_-]+
//!   fetch:
//!     run: [python3, fetch.py] # a program and its arguments (a string is split on spaces; never a shell)
//!     input: {pages: 3}        # optional given input, any YAML value
//!     format: json             # json | msgpack: stdin and stdout of the program
//!     env: {KEY: value}        # extra environment variables
//!     retries: 2
//!     timeout: 10
//!   count:
//!     task: celeriac.echo      # a registered handler instead of a program
//!     needs: [fetch]
//!   report:
//!     run: [bash, report.sh]
//!     needs: [count]
//!     subtasks:                # run before their parent, which receives their results
//!       chart: {run: [python3, chart.py]}
//!       table: {run: [python3, table.py], needs: [chart]}
//!   publish:
//!     needs: [report]
//!     sequence:                # each step runs after the previous one and receives its result
//!       - upload: {run: [bash, upload.sh]}
//!       - notify: {run: [bash, notify.sh]}
//!   checks:
//!     parallel:                # members run at once
//!       lint: {run: [bash, lint.sh]}
//!       test: {run: [bash, test.sh]}
//! ```
//!
//! # The rules
//!
//! - **Ids.** Every task is a node whose id is its dotted path:
//!   `report.chart`, `publish.upload`, `checks.lint`. A `sequence` or
//!   `parallel` block is not a node itself; its members are.
//! - **Kinds.** A task has exactly one of `run` (a program), `task` (a
//!   registered handler), `sequence` or `parallel`. `subtasks` go with `run`
//!   or `task`; `format` and `env` only with `run`; `input` and `subtasks`
//!   are not allowed on a block.
//! - **Programs.** `run` is an argv: no shell is involved. A relative program
//!   path containing a `/` (`./bin/tool`) resolves against the YAML file's
//!   directory; a bare name (`python3`) is looked up on `PATH`. An argument
//!   that names an existing file beside the YAML file (`fetch.py`) is made
//!   absolute too, so a flow runs from any directory.
//! - **Needs.** `needs` names a sibling in the same scope (the same
//!   `tasks`, `subtasks`, `sequence` or `parallel`), or a full dotted path
//!   (`report.chart`, or a top-level name). Needing a block means needing
//!   its exit nodes: the last step of a sequence, every member of a parallel
//!   block; a task with subtasks is its own exit. A task cannot need itself,
//!   a task it is inside of, or a task inside it.
//! - **Where needs apply.** A block's `needs` apply to its entry nodes: the
//!   first step of a sequence, the members of a parallel block that need no
//!   sibling. A parent's `needs` apply to the parent and to its subtasks
//!   that need no sibling, so the whole tree waits for them.
//! - **Subtasks** run before their parent; the parent depends on every
//!   subtask's exit nodes.
//! - **Input.** A given `input:` wins. Otherwise a sequence step after the
//!   first receives the previous step's result (when that step ends in one
//!   node), and any other node with dependencies receives a map from each
//!   dependency's id to its result; a node with none receives `null`.
//!   Mapping keys of a given input are strings.
//! - **Settings.** `retries`, `timeout`, `soft_timeout`, `queue`, `tenant`
//!   `tolerance` (SPEC.md section 19: the task may wait this long once it
//!   is ready, urgent work first; more than 0) and `pools` (a map replaced
//!   whole, not merged) come
//!   from the task itself, else from the nearest enclosing block that sets
//!   them, else from `defaults`. Retries default to 0. A soft limit that is
//!   not shorter than the hard one in effect is dropped (and refused when
//!   both are written on the same task).
//! - **Schedules.** `schedule:` may be on the workflow and on any task or
//!   block: a number is an interval in seconds, a string a cron expression
//!   (see [`crate::schedule`]). A child (a subtask or block member) may not
//!   be scheduled less often than its nearest scheduled ancestor, or the
//!   workflow when no ancestor is scheduled. A scheduled task runs with
//!   everything it transitively needs ([`Flow::workflow_for`]).
//! - **Strictness.** Unknown keys are errors (with a suggestion for a
//!   likely typo), and so are duplicate keys, values of the wrong type,
//!   unknown tasks in `needs` and cycles (named as a path, at one of the
//!   `needs` that closes it).
//!
//! # Examples
//!
//! ```
//! use celeriac_producer::flow::{Flow, TaskKind};
//! use celeriac_schema::workflow::InputFrom;
//! use celeriac_schema::TaskId;
//!
//! let flow = Flow::parse(r#"
//! name: demo
//! tasks:
//!   fetch: {run: [python3, fetch.py], retries: 2}
//!   report:
//!     task: celeriac.echo
//!     needs: [fetch]
//!     subtasks:
//!       chart: {run: "bash chart.sh"}
//!       table: {run: "bash table.sh", needs: [chart]}
//! "#, "demo.yaml")?;
//! let ids: Vec<&str> = flow.tasks().iter().map(|t| t.id.as_str()).collect();
//! assert_eq!(ids, ["fetch", "report.chart", "report.table", "report"]);
//! let report = flow.task("report").unwrap();
//! assert_eq!(report.dependencies, ["report.chart", "report.table", "fetch"]);
//! assert_eq!(report.input_from, InputFrom::ByName);
//! assert!(matches!(report.kind, TaskKind::Handler(ref name) if name == "celeriac.echo"));
//! assert_eq!(flow.task("report.chart").unwrap().dependencies, ["fetch"]);
//!
//! let workflow = flow.workflow(TaskId::new());
//! assert_eq!(workflow.nodes.len(), 4);
//! assert!(workflow.validate().is_ok());
//!
//! let err = Flow::parse("name: demo\ntasks:\n  a: {run: [true], needs: [b]}\n", "demo.yaml").unwrap_err();
//! assert_eq!(err.to_string(), "demo.yaml:3:28: tasks.a.needs: unknown task \"b\"");
//! # Ok::<(), celeriac_producer::flow::FlowError>(())
//! ```

mod error;
mod limits;
mod parse;
mod resolve;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_policy;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use celeriac_schema::exec::ExecSpec;
use celeriac_schema::workflow::{InputFrom, Node, Workflow};
use celeriac_schema::{RetryPolicy, TaskId};

pub use error::{FlowError, FlowErrorKind, Position};
pub use limits::FlowLimits;

use crate::schedule::{Overlap, Schedule};

/// What a task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    /// A program (`run:`), run by the exec runner as `celeriac.exec`.
    Exec(ExecSpec),
    /// A registered handler (`task:`), by name.
    Handler(String),
}

/// One node of a flow: a task that runs, with everything about it resolved.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FlowTask {
    /// Its dotted id (`report.chart`).
    pub id: String,
    /// What it runs.
    pub kind: TaskKind,
    /// Its given input (`input:`).
    pub input: Option<rmpv::Value>,
    /// Where its input comes from (see the module's input rule).
    pub input_from: InputFrom,
    /// The ids of the nodes it waits for, resolved from `needs`, blocks and
    /// subtasks.
    pub dependencies: Vec<String>,
    /// Retries after the first attempt.
    pub retries: u32,
    /// The hard time limit of one attempt.
    pub timeout: Option<Duration>,
    /// The soft time limit of one attempt (shorter than `timeout`).
    pub soft_timeout: Option<Duration>,
    /// The cluster queue (default: the producer's).
    pub queue: Option<String>,
    /// The tenant the task runs for (`tenant:`).
    pub tenant: Option<String>,
    /// Its delay tolerance (SPEC.md section 19).
    pub tolerance: Option<Duration>,
    /// Units of resource pools it holds while it runs (`pools:`).
    pub pools: std::collections::BTreeMap<String, u32>,
    /// Its own schedule, if any.
    pub schedule: Option<Schedule>,
    /// Where its name is written.
    pub position: Position,
}

impl FlowTask {
    /// The node of the cluster model: an exec node for a program, a
    /// handler node otherwise, with its dependencies, input source, retry
    /// policy, time limits and queue.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::flow::Flow;
    ///
    /// let flow = Flow::parse("name: n\ntasks:\n  a: {run: [echo, hi], retries: 2, timeout: 5}\n", "n.yaml")?;
    /// let node = flow.tasks()[0].node();
    /// assert_eq!(node.task, "celeriac.exec");
    /// assert_eq!(node.retry.map(|r| r.max_retries), Some(2));
    /// assert_eq!(node.hard_time_limit_ms, Some(5000));
    /// # Ok::<(), celeriac_producer::flow::FlowError>(())
    /// ```
    pub fn node(&self) -> Node {
        let input = self.input.clone().unwrap_or(rmpv::Value::Nil);
        let mut node = match &self.kind {
            TaskKind::Exec(spec) => Node::exec(self.id.clone(), spec.clone(), input),
            TaskKind::Handler(name) => Node::new(self.id.clone(), name.clone(), input),
        };
        node = node
            .after(self.dependencies.iter().cloned())
            .input_from(self.input_from)
            .retry(RetryPolicy {
                max_retries: self.retries,
                ..RetryPolicy::default()
            })
            .time_limits(self.soft_timeout, self.timeout);
        if let Some(queue) = &self.queue {
            node = node.queue(queue.clone());
        }
        node.tenant.clone_from(&self.tenant);
        node.tolerance_ms = self
            .tolerance
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        node.pools.clone_from(&self.pools);
        node
    }
}

/// A schedule of a flow, for `beat`: the whole workflow (`entry` is
/// `None`) or one task or block and what it needs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ScheduledEntry {
    /// `None` for the workflow's own schedule, else the task's or block's
    /// dotted id.
    pub entry: Option<String>,
    /// When it fires.
    pub schedule: Schedule,
    /// What to do when the previous run is still going (the workflow's
    /// policy).
    pub overlap: Overlap,
}

/// A task or block of the file, for scheduling.
#[derive(Debug, Clone)]
struct EntryInfo {
    id: String,
    schedule: Option<Schedule>,
}

/// A YAML workflow, read and checked.
///
/// See the [module documentation](self) for the format and its rules.
#[derive(Debug, Clone)]
pub struct Flow {
    name: String,
    file: String,
    schedule: Option<Schedule>,
    overlap: Overlap,
    tasks: Vec<FlowTask>,
    entries: Vec<EntryInfo>,
    limits: FlowLimits,
}

impl Flow {
    /// Reads and checks the YAML file at `path`. Relative program paths in
    /// it resolve against its directory.
    ///
    /// # Errors
    ///
    /// A [`FlowError`] naming the file, line, column and key; of kind
    /// [`FlowErrorKind::Read`] when the file cannot be read.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let flow = celeriac_producer::flow::Flow::from_path("examples/flows/hello.yaml")?;
    /// println!("{} has {} tasks", flow.name(), flow.tasks().len());
    /// # Ok::<(), celeriac_producer::flow::FlowError>(())
    /// ```
    pub fn from_path(path: impl AsRef<Path>) -> Result<Flow, FlowError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            FlowError::new(
                &file,
                None,
                "",
                FlowErrorKind::Read {
                    message: e.to_string(),
                },
            )
        })?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Flow::parse_in(&text, &file, Some(&base))
    }

    /// Reads and checks YAML `text`; `file` names it in errors. Relative
    /// program paths stay relative to the directory the programs run in.
    ///
    /// # Errors
    ///
    /// A [`FlowError`] naming the file, line, column and key.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::flow::Flow;
    ///
    /// let flow = Flow::parse("name: one\ntasks:\n  hello: {task: celeriac.echo, input: hi}\n", "one.yaml")?;
    /// assert_eq!(flow.name(), "one");
    /// assert_eq!(flow.task("hello").and_then(|t| t.input.clone()), Some("hi".into()));
    /// # Ok::<(), celeriac_producer::flow::FlowError>(())
    /// ```
    pub fn parse(text: &str, file: &str) -> Result<Flow, FlowError> {
        Flow::parse_in(text, file, None)
    }

    /// [`Flow::parse`], resolving relative program paths (and arguments
    /// naming files there) against directory `base`.
    ///
    /// # Errors
    ///
    /// As [`Flow::parse`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::path::Path;
    /// use celeriac_producer::flow::{Flow, TaskKind};
    ///
    /// let flow = Flow::parse_in("name: n\ntasks:\n  a: {run: ./bin/tool}\n", "n.yaml", Some(Path::new("/srv/flows")))?;
    /// let TaskKind::Exec(spec) = &flow.tasks()[0].kind else { unreachable!() };
    /// assert_eq!(spec.program, "/srv/flows/bin/tool");
    /// # Ok::<(), celeriac_producer::flow::FlowError>(())
    /// ```
    pub fn parse_in(text: &str, file: &str, base: Option<&Path>) -> Result<Flow, FlowError> {
        let reader = parse::Reader { file, base };
        let raw = reader.read(text)?;
        let (tasks, entries) = resolve::resolve(file, &raw)?;
        tracing::debug!(flow = %raw.name, tasks = tasks.len(), "flow read");
        Ok(Flow {
            name: raw.name,
            file: file.to_owned(),
            schedule: raw.schedule.map(|s| s.value),
            overlap: raw.overlap,
            tasks,
            entries,
            limits: raw.limits,
        })
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was read from, as named.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The workflow's own schedule.
    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }

    /// The overlap policy (default [`Overlap::Skip`]).
    pub fn overlap(&self) -> Overlap {
        self.overlap
    }

    /// The `limits:` section: pool capacities and rate limits.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::flow::Flow;
    ///
    /// let flow = Flow::parse(
    ///     "name: n\nlimits:\n  pools: {gpu: 2}\n  rate: {celeriac.exec: 5/s}\ntasks:\n  a: {run: [true], pools: {gpu: 1}}\n",
    ///     "n.yaml",
    /// )?;
    /// assert_eq!(flow.limits().pools["gpu"], 2);
    /// assert_eq!(flow.limits().rates["celeriac.exec"].to_string(), "5/s");
    /// # Ok::<(), celeriac_producer::flow::FlowError>(())
    /// ```
    pub fn limits(&self) -> &FlowLimits {
        &self.limits
    }

    /// Every node: subtasks before their parent, file order otherwise.
    pub fn tasks(&self) -> &[FlowTask] {
        &self.tasks
    }

    /// The node with dotted id `id`.
    pub fn task(&self, id: &str) -> Option<&FlowTask> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// Whether `id` names a task or a block of the file.
    pub fn has_entry(&self, id: &str) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    /// The whole flow as a cluster workflow with id `id`.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::flow::Flow;
    /// use celeriac_schema::TaskId;
    ///
    /// let flow = Flow::parse("name: n\ntasks:\n  a: {task: celeriac.noop}\n  b: {task: celeriac.echo, needs: [a]}\n", "n.yaml")?;
    /// let id = TaskId::new();
    /// let wf = flow.workflow(id);
    /// assert_eq!(wf.id, id);
    /// assert_eq!(wf.node("b").map(|n| n.dependencies.clone()), Some(vec!["a".to_string()]));
    /// # Ok::<(), celeriac_producer::flow::FlowError>(())
    /// ```
    pub fn workflow(&self, id: TaskId) -> Workflow {
        Workflow {
            id,
            nodes: self.tasks.iter().map(FlowTask::node).collect(),
        }
    }

    /// The workflow one schedule runs: the whole flow for `None`, else task
    /// or block `entry` with everything inside it (subtasks, members) and
    /// everything they transitively need. `None` when `entry` names no task
    /// or block.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::flow::Flow;
    /// use celeriac_schema::TaskId;
    ///
    /// let flow = Flow::parse(r#"
    /// name: n
    /// tasks:
    ///   a: {task: celeriac.noop}
    ///   b: {task: celeriac.noop, needs: [a], schedule: 60}
    ///   c: {task: celeriac.noop}
    /// "#, "n.yaml")?;
    /// let wf = flow.workflow_for(Some("b"), TaskId::new()).unwrap();
    /// let ids: Vec<&str> = wf.nodes.iter().map(|n| n.id.as_str()).collect();
    /// assert_eq!(ids, ["a", "b"]);
    /// assert!(flow.workflow_for(Some("zzz"), TaskId::new()).is_none());
    /// # Ok::<(), celeriac_producer::flow::FlowError>(())
    /// ```
    pub fn workflow_for(&self, entry: Option<&str>, id: TaskId) -> Option<Workflow> {
        let Some(entry) = entry else {
            return Some(self.workflow(id));
        };
        if !self.has_entry(entry) {
            return None;
        }
        let inside = |task: &str| {
            task == entry
                || task
                    .strip_prefix(entry)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        let mut keep: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = self
            .tasks
            .iter()
            .map(|t| t.id.as_str())
            .filter(|t| inside(t))
            .collect();
        while let Some(id) = stack.pop() {
            if !keep.insert(id) {
                continue;
            }
            if let Some(task) = self.task(id) {
                stack.extend(task.dependencies.iter().map(String::as_str));
            }
        }
        Some(Workflow {
            id,
            nodes: self
                .tasks
                .iter()
                .filter(|t| keep.contains(t.id.as_str()))
                .map(FlowTask::node)
                .collect(),
        })
    }

    /// Every schedule of the file: the workflow's own (`entry: None`) and
    /// those of its tasks and blocks, in file order, each with the
    /// workflow's overlap policy.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::flow::Flow;
    /// use celeriac_producer::schedule::Overlap;
    ///
    /// let flow = Flow::parse(r#"
    /// name: n
    /// schedule: 3600
    /// overlap: queue
    /// tasks:
    ///   a: {task: celeriac.noop, schedule: "*/5 * * * *"}
    /// "#, "n.yaml")?;
    /// let scheduled = flow.scheduled();
    /// assert_eq!(scheduled.len(), 2);
    /// assert_eq!(scheduled[0].entry, None);
    /// assert_eq!(scheduled[1].entry.as_deref(), Some("a"));
    /// assert_eq!(scheduled[1].overlap, Overlap::Queue);
    /// # Ok::<(), celeriac_producer::flow::FlowError>(())
    /// ```
    pub fn scheduled(&self) -> Vec<ScheduledEntry> {
        let own = self.schedule.iter().map(|s| ScheduledEntry {
            entry: None,
            schedule: s.clone(),
            overlap: self.overlap,
        });
        let entries = self.entries.iter().filter_map(|e| {
            e.schedule.as_ref().map(|s| ScheduledEntry {
                entry: Some(e.id.clone()),
                schedule: s.clone(),
                overlap: self.overlap,
            })
        });
        own.chain(entries).collect()
    }
}

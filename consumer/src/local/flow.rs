//! YAML workflows run in-process: each node of a
//! [`Flow`](celeriac_producer::flow::Flow) becomes a task of a
//! [`LocalScheduler`], a program run by the exec runner or a handler of a
//! [`Registry`].
//!
//! The semantics are those of the cluster: the same dependencies, the same
//! input rule (given, the previous step's result, or a map of dependency id
//! to result), the same retries. A program's hard and soft time limits are
//! enforced by the exec runner (its whole process group is killed); a
//! handler's hard limit by the scheduler. The flow's `limits:` apply too:
//! its pool capacities bound the tasks that name the pools, and a task
//! waits for its task name's and its tenant's rate before each attempt.

use std::sync::Arc;

use celeriac_producer::flow::{Flow, FlowTask, TaskKind};
use celeriac_schema::workflow::InputFrom;
use celeriac_schema::Envelope;
use serde_json::Value;

use super::error::LocalError;
use super::rate::{wait_all, RateGate, RateGates};
use super::result::CANCELLED;
use super::scheduler::{LocalScheduler, DEFAULT_MAX_WORKERS};
use super::task::{LocalContext, LocalTask, TaskOptions};
use crate::exec::{self, ExecConfig, ExecLimits};
use crate::registry::{ErasedHandler, Registry, TaskContext};
use crate::task_error::{TaskError, BAD_INPUT};

/// How a flow runs in-process: the handlers for `task:` nodes, the exec
/// runner's configuration for `run:` nodes, and the pool size.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::exec::ExecConfig;
/// use celeriac_consumer::local::FlowOptions;
///
/// // The built-in handlers, any program, 4 workers:
/// let options = FlowOptions::new();
/// // Only python3 and bash, 8 workers:
/// let strict = FlowOptions::new()
///     .exec(ExecConfig::new().allow("python3").allow("bash"))
///     .max_workers(8);
/// # let _ = (options, strict);
/// ```
#[derive(Debug, Clone)]
pub struct FlowOptions {
    registry: Registry,
    exec: ExecConfig,
    max_workers: usize,
}

impl Default for FlowOptions {
    fn default() -> Self {
        FlowOptions::new()
    }
}

impl FlowOptions {
    /// The built-in handlers ([`crate::builtin`]), every program allowed
    /// (a workflow file run locally is its user's own), and
    /// [`DEFAULT_MAX_WORKERS`] workers.
    pub fn new() -> Self {
        let mut registry = Registry::new();
        crate::builtin::register(&mut registry);
        FlowOptions {
            registry,
            exec: ExecConfig::new().allow_any(),
            max_workers: DEFAULT_MAX_WORKERS,
        }
    }

    /// The handlers of `task:` nodes.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// How `run:` nodes run (allowlist, environment, rlimits, ...).
    pub fn exec(mut self, config: ExecConfig) -> Self {
        self.exec = config;
        self
    }

    /// How many nodes run at once.
    pub fn max_workers(mut self, max_workers: usize) -> Self {
        self.max_workers = max_workers;
        self
    }
}

impl LocalScheduler {
    /// A scheduler holding every node of `flow`, ready to
    /// [`run`](LocalScheduler::run) (and to report [`events`]).
    ///
    /// [`events`]: LocalScheduler::events
    ///
    /// # Errors
    ///
    /// [`LocalError::UnknownHandler`] when a `task:` node names a handler
    /// the registry does not have.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_consumer::local::{FlowOptions, LocalScheduler};
    /// use celeriac_producer::flow::Flow;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let flow = Flow::parse(r#"
    /// name: demo
    /// tasks:
    ///   greet: {run: [sh, -c, 'echo "{\"greeting\": \"hello\"}"']}
    ///   shout:
    ///     task: celeriac.echo
    ///     needs: [greet]
    /// "#, "demo.yaml").unwrap();
    /// let results = LocalScheduler::from_flow(&flow, FlowOptions::new())?.run().await?;
    /// assert_eq!(results["shout"].result, Some(serde_json::json!({"greet": {"greeting": "hello"}})));
    /// # Ok::<(), celeriac_consumer::LocalError>(())
    /// # }).unwrap();
    /// ```
    pub fn from_flow(flow: &Flow, options: FlowOptions) -> Result<LocalScheduler, LocalError> {
        let mut scheduler = LocalScheduler::with_max_workers(options.max_workers);
        for (pool, capacity) in &flow.limits().pools {
            scheduler.resource_pool(
                pool.clone(),
                usize::try_from(*capacity).unwrap_or(usize::MAX),
            );
        }
        let gates = RateGates::new(flow.limits());
        let exec = Arc::new(options.exec);
        for task in flow.tasks() {
            let task_gates = gates.of(task);
            let body = match &task.kind {
                TaskKind::Exec(spec) => {
                    exec_task(task, Arc::new(spec.clone()), exec.clone(), task_gates)
                }
                TaskKind::Handler(name) => {
                    let handler = options.registry.get(name).cloned().ok_or_else(|| {
                        LocalError::UnknownHandler {
                            task: task.id.clone(),
                            handler: name.clone(),
                            known: options.registry.names().join(", "),
                        }
                    })?;
                    handler_task(task, name, handler, task_gates)
                }
            };
            let mut task_options = TaskOptions::new()
                .depends_on(task.dependencies.iter().cloned())
                .retries(task.retries);
            if let Some(tenant) = &task.tenant {
                task_options = task_options.tenant(tenant.clone());
            }
            // A program's limits are enforced by the exec runner, which
            // kills its process group; a handler's by the scheduler.
            if let (TaskKind::Handler(_), Some(limit)) = (&task.kind, task.timeout) {
                task_options = task_options.timeout(limit);
            }
            if let Some(tolerance) = task.tolerance {
                task_options = task_options.tolerance(tolerance);
            }
            for (pool, units) in &task.pools {
                task_options = task_options.pool(pool.clone(), *units);
            }
            scheduler.add_task_with(task.id.clone(), body, task_options)?;
        }
        tracing::debug!(
            flow = flow.name(),
            tasks = scheduler.len(),
            "flow scheduled"
        );
        Ok(scheduler)
    }
}

/// What a node receives: its given input, its one dependency's result, or
/// its dependencies' results by id.
#[derive(Clone)]
struct InputRule {
    from: InputFrom,
    given: rmpv::Value,
}

impl InputRule {
    fn of(task: &FlowTask) -> InputRule {
        InputRule {
            from: task.input_from,
            given: task.input.clone().unwrap_or(rmpv::Value::Nil),
        }
    }

    fn input(&self, ctx: &LocalContext) -> Result<rmpv::Value, TaskError> {
        let json = match self.from {
            InputFrom::Given => return Ok(self.given.clone()),
            InputFrom::Result => ctx.inputs().next().map_or(Value::Null, |(_, v)| v.clone()),
            InputFrom::ByName => Value::Object(ctx.inputs_object()),
            InputFrom::InOrder => Value::Array(ctx.inputs().map(|(_, v)| v.clone()).collect()),
        };
        rmpv::ext::to_value(&json).map_err(|e| {
            TaskError::fatal(
                BAD_INPUT,
                format!("the dependencies' results cannot be passed on: {e}"),
            )
        })
    }
}

fn exec_task(
    task: &FlowTask,
    spec: Arc<exec::ExecSpec>,
    config: Arc<ExecConfig>,
    gates: Vec<Arc<RateGate>>,
) -> LocalTask {
    let rule = InputRule::of(task);
    let limits = ExecLimits {
        soft: task.soft_timeout,
        hard: task.timeout,
    };
    LocalTask::new(move |ctx: LocalContext| {
        let input = rule.input(&ctx);
        let spec = spec.clone();
        let config = config.clone();
        let gates = gates.clone();
        async move {
            let input = input?;
            tokio::select! {
                () = wait_all(&gates) => {}
                _ = ctx.cancellation_token().cancelled() => {
                    return Err(TaskError::new(CANCELLED, "the task was cancelled"));
                }
            }
            exec::run(&config, &spec, &input, limits, ctx.cancellation_token()).await
        }
    })
}

fn handler_task(
    task: &FlowTask,
    name: &str,
    handler: Arc<dyn ErasedHandler>,
    gates: Vec<Arc<RateGate>>,
) -> LocalTask {
    let rule = InputRule::of(task);
    let name: Arc<str> = Arc::from(name);
    let queue: Arc<str> = Arc::from(task.queue.as_deref().unwrap_or("local"));
    let worker: Arc<str> = Arc::from("local");
    LocalTask::new(move |ctx: LocalContext| {
        let call = rule.input(&ctx).map(|input| {
            let mut envelope = Envelope::new(name.to_string(), rmpv::Value::Nil);
            envelope.attempt = ctx.attempt().saturating_sub(1);
            let context = TaskContext::new(Arc::new(envelope), queue.clone(), worker.clone(), None);
            handler.call(input, context)
        });
        let gates = gates.clone();
        async move {
            let call = call?;
            let gated = async {
                wait_all(&gates).await;
                call.await
            };
            tokio::select! {
                output = gated => output,
                _ = ctx.cancellation_token().cancelled() => {
                    Err(TaskError::new(CANCELLED, "the task was cancelled"))
                }
            }
        }
    })
}

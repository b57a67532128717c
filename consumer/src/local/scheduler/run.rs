//! One run of the local scheduler: the dispatch loop over the ready
//! queues and the attempt loop of each task.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_schema::dag::Dag;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::super::event::{Events, LocalEventKind};
use super::super::ready::ReadyQueues;
use super::super::result::{TaskResult, CANCELLED, DEPENDENCY_FAILED};
use super::super::task::{Body, Inputs, LocalContext, LocalTask, TaskOutput};
use super::super::urgency::Urgency;
use crate::task_error::{TaskError, PANIC, TIME_LIMIT};

/// One task, as the spawned attempt loop needs it.
pub(super) struct Spec {
    pub(super) id: Arc<str>,
    pub(super) task: LocalTask,
    pub(super) retries: u32,
    pub(super) timeout: Option<Duration>,
    pub(super) tolerance: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Some dependency has not succeeded yet.
    Waiting,
    /// In a ready queue.
    Ready,
    Running,
    Done,
}

/// The state of one run. Nodes are the indices of the [`Dag`].
pub(super) struct Run {
    pub(super) dag: Arc<Dag>,
    pub(super) specs: Vec<Arc<Spec>>,
    pub(super) max_workers: usize,
    pub(super) pools: super::super::pools::PoolTable,
    /// Ready nodes by pool. Cancelled nodes stay queued and are dropped
    /// when they reach the front.
    pub(super) ready: ReadyQueues,
    /// Nodes that started after their deadline (SPEC.md section 19.8).
    pub(super) missed: Vec<bool>,
    /// Dependencies each node still waits for.
    pub(super) waiting: Vec<usize>,
    pub(super) state: Vec<State>,
    pub(super) outcomes: Vec<Option<TaskResult>>,
    /// Results of the nodes that succeeded, shared with their dependents.
    pub(super) results: Vec<Option<Arc<Value>>>,
    /// Tokens of the running nodes.
    pub(super) tokens: Vec<Option<CancellationToken>>,
    pub(super) running: usize,
    pub(super) join: JoinSet<(usize, u32, TaskOutput)>,
    pub(super) in_flight: HashMap<tokio::task::Id, usize>,
    pub(super) all: CancellationToken,
    pub(super) requests: mpsc::UnboundedReceiver<String>,
    pub(super) events: Events,
}

impl Run {
    pub(super) async fn drive(mut self) -> HashMap<String, TaskResult> {
        while let Ok(id) = self.requests.try_recv() {
            self.cancel(&id);
        }
        for node in self.dag.roots().collect::<Vec<_>>() {
            if self.state[node] == State::Waiting {
                self.make_ready(node);
            }
        }
        self.dispatch();
        while self.running > 0 {
            tokio::select! {
                biased;
                Some(id) = self.requests.recv() => self.cancel(&id),
                joined = self.join.join_next_with_id() => match joined {
                    Some(Ok((task, (node, attempts, output)))) => {
                        self.in_flight.remove(&task);
                        self.finish(node, attempts, output);
                    }
                    Some(Err(e)) => {
                        // The attempt loop catches panics, so only an abort
                        // gets here.
                        if let Some(node) = self.in_flight.remove(&e.id()) {
                            let error = TaskError::new(PANIC, format!("the task was lost: {e}"));
                            self.finish(node, 1, Err(error));
                        }
                    }
                    None => break,
                },
            }
            self.dispatch();
        }
        self.report()
    }

    fn make_ready(&mut self, node: usize) {
        self.state[node] = State::Ready;
        let queue = self.pools.queue_of(node);
        let urgency = Urgency::new(self.specs[node].tolerance, Instant::now());
        self.ready.push(queue, node, urgency);
    }

    /// Starts ready nodes while workers (and their pools) are free: urgent
    /// first, then the earliest deadline, then the oldest ready, tenants
    /// taking turns (see [`ready`](super::super::ready)).
    fn dispatch(&mut self) {
        while self.running < self.max_workers && !self.all.is_cancelled() {
            let (pools, state) = (&self.pools, &self.state);
            let fits = |n: usize| pools.fits(n);
            let Some((node, urgency)) = self.ready.pop_next(fits, |n| state[n] == State::Ready)
            else {
                break;
            };
            self.missed[node] = urgency.missed(Instant::now());
            self.start(node);
        }
    }

    fn start(&mut self, node: usize) {
        self.state[node] = State::Running;
        self.running += 1;
        self.pools.take(node);
        let token = self.all.child_token();
        self.tokens[node] = Some(token.clone());
        let values = self
            .dag
            .dependencies(node)
            .iter()
            // Every dependency succeeded, so every one has a result.
            .map(|&d| self.results[d].clone().unwrap_or_default())
            .collect();
        let inputs = Arc::new(Inputs {
            dag: self.dag.clone(),
            node,
            values,
        });
        let spec = self.specs[node].clone();
        let span = tracing::debug_span!("local_task", task_id = %spec.id);
        let events = self.events.clone();
        let handle = self.join.spawn(
            async move {
                let (attempts, output) = attempt_loop(&spec, inputs, token, &events).await;
                (node, attempts, output)
            }
            .instrument(span),
        );
        self.in_flight.insert(handle.id(), node);
    }

    fn finish(&mut self, node: usize, attempts: u32, output: TaskOutput) {
        self.running -= 1;
        self.pools.give(node);
        self.tokens[node] = None;
        self.state[node] = State::Done;
        match output {
            Ok(value) => {
                self.events
                    .emit(&self.specs[node].id, || LocalEventKind::Succeeded {
                        attempts,
                    });
                self.outcomes[node] = Some(TaskResult::success(Value::Null, attempts));
                self.results[node] = Some(Arc::new(value));
                let dag = self.dag.clone();
                for &child in dag.dependents(node) {
                    if self.state[child] == State::Waiting {
                        self.waiting[child] -= 1;
                        if self.waiting[child] == 0 {
                            self.make_ready(child);
                        }
                    }
                }
            }
            Err(error) => {
                tracing::debug!(task_id = %self.specs[node].id, attempts, %error, "task failed");
                self.events
                    .emit(&self.specs[node].id, || LocalEventKind::Failed {
                        attempts,
                        error: error.clone(),
                    });
                self.outcomes[node] = Some(TaskResult::failed(error, attempts));
                let failed = self.specs[node].id.clone();
                // Only nodes still waiting can be downstream of a node that
                // has not succeeded; the others were already skipped.
                let mut stack = vec![node];
                while let Some(n) = stack.pop() {
                    for &child in self.dag.dependents(n) {
                        if self.state[child] == State::Waiting {
                            self.state[child] = State::Done;
                            let error = TaskError::new(
                                DEPENDENCY_FAILED,
                                format!("dependency `{failed}` failed"),
                            );
                            self.events
                                .emit(&self.specs[child].id, || LocalEventKind::Skipped {
                                    error: error.clone(),
                                });
                            self.outcomes[child] = Some(TaskResult::skipped(error));
                            stack.push(child);
                        }
                    }
                }
            }
        }
    }

    /// Cancels node `id` and everything downstream of it.
    fn cancel(&mut self, id: &str) {
        let Some(node) = self.dag.index_of(id) else {
            tracing::warn!(task_id = id, "cannot cancel an unknown task");
            return;
        };
        tracing::debug!(task_id = id, "cancelling the task and its dependents");
        for n in self.dag.downstream(node) {
            match self.state[n] {
                State::Waiting | State::Ready => {
                    self.state[n] = State::Done;
                    let why = if n == node {
                        "cancelled before it started".to_owned()
                    } else {
                        format!("dependency `{id}` was cancelled")
                    };
                    let error = TaskError::new(CANCELLED, why);
                    self.events
                        .emit(&self.specs[n].id, || LocalEventKind::Skipped {
                            error: error.clone(),
                        });
                    self.outcomes[n] = Some(TaskResult::skipped(error));
                }
                State::Running => {
                    if let Some(token) = &self.tokens[n] {
                        token.cancel();
                    }
                }
                State::Done => {}
            }
        }
    }

    fn report(mut self) -> HashMap<String, TaskResult> {
        let mut report = HashMap::with_capacity(self.dag.len());
        for node in 0..self.dag.len() {
            let outcome = match self.outcomes[node].take() {
                Some(mut outcome) => {
                    outcome.deadline_missed = self.missed[node];
                    if let Some(value) = self.results[node].take() {
                        outcome.result =
                            Some(Arc::try_unwrap(value).unwrap_or_else(|shared| (*shared).clone()));
                    }
                    outcome
                }
                // Only a cancelled run leaves nodes without an outcome.
                None => {
                    let error =
                        TaskError::new(CANCELLED, "the run was cancelled before it started");
                    self.events
                        .emit(&self.specs[node].id, || LocalEventKind::Skipped {
                            error: error.clone(),
                        });
                    TaskResult::skipped(error)
                }
            };
            report.insert(self.specs[node].id.to_string(), outcome);
        }
        report
    }
}

/// Runs the attempts of one task until one succeeds, the failure is not
/// retryable, the retries are used up or the task is cancelled.
async fn attempt_loop(
    spec: &Spec,
    inputs: Arc<Inputs>,
    token: CancellationToken,
    events: &Events,
) -> (u32, TaskOutput) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        events.emit(&spec.id, || LocalEventKind::Started { attempt });
        // An attempt with a timeout gets a token of its own, cancelled when
        // it overruns, so that the next attempt starts with a fresh one.
        let attempt_token = match spec.timeout {
            Some(_) => token.child_token(),
            None => token.clone(),
        };
        let ctx = LocalContext {
            attempt,
            inputs: inputs.clone(),
            token: attempt_token.clone(),
        };
        tracing::trace!(attempt, "attempt started");
        let output = match spec.timeout {
            None => run_body(&spec.task, ctx).await,
            Some(limit) => match tokio::time::timeout(limit, run_body(&spec.task, ctx)).await {
                Ok(output) => output,
                Err(_) => {
                    attempt_token.cancel();
                    Err(TaskError::new(
                        TIME_LIMIT,
                        format!("attempt {attempt} ran longer than {limit:?}"),
                    ))
                }
            },
        };
        match output {
            Ok(value) => return (attempt, Ok(value)),
            Err(error) => {
                let retries_left = attempt <= spec.retries;
                if !retries_left || !error.is_retryable() || token.is_cancelled() {
                    return (attempt, Err(error));
                }
                tracing::debug!(attempt, %error, "attempt failed, retrying");
                events.emit(&spec.id, || LocalEventKind::Retrying { attempt, error });
            }
        }
    }
}

async fn run_body(task: &LocalTask, ctx: LocalContext) -> TaskOutput {
    match &task.body {
        Body::Async(body) => AssertUnwindSafe(async { body(ctx).await })
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref()))),
        Body::Blocking(body) => {
            let body = body.clone();
            match tokio::task::spawn_blocking(move || body(ctx)).await {
                Ok(output) => output,
                Err(e) if e.is_panic() => Err(panicked(e.into_panic().as_ref())),
                Err(e) => Err(TaskError::new(CANCELLED, e.to_string())),
            }
        }
    }
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> TaskError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the task panicked".to_owned());
    TaskError::new(PANIC, message)
}

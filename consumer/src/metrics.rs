//! Prometheus metrics of a worker.
//!
//! Every series a worker can produce is created when the worker is built:
//! one label set per consumed queue and registered task name, plus
//! `task="unknown"` for names the worker has no handler for (and for bodies
//! that do not decode), so a stray task name never creates a new series.
//! The hot path holds pre-resolved handles and only touches atomics.
//! `celeriac_task_errors_total` is the one family created on demand, on
//! the failure path: its `error_type` label takes the first
//! [`ERROR_TYPES_MAX`] kinds a worker sees, and `other` after that, so a
//! handler that puts ids in its error kind cannot flood Prometheus.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `celeriac_tasks_received_total` | counter | queue, task |
//! | `celeriac_tasks_started_total` | counter | queue, task |
//! | `celeriac_tasks_succeeded_total` | counter | queue, task |
//! | `celeriac_tasks_failed_total` | counter | queue, task |
//! | `celeriac_task_errors_total` | counter | queue, task, error_type |
//! | `celeriac_tasks_retried_total` | counter | queue, task |
//! | `celeriac_tasks_dead_lettered_total` | counter | queue, task, reason |
//! | `celeriac_tasks_expired_total` | counter | queue, task |
//! | `celeriac_tasks_duplicates_suppressed_total` | counter | queue, task |
//! | `celeriac_tasks_revoked_total` | counter | queue, task |
//! | `celeriac_broker_reconnects_total` | counter | |
//! | `celeriac_workflow_releases_total` | counter | |
//! | `celeriac_task_run_seconds` | histogram | queue, task |
//! | `celeriac_task_queue_wait_seconds` | histogram | queue, task |
//! | `celeriac_tasks_in_flight` | gauge | queue |
//! | `celeriac_worker_ready` | gauge | |
//! | `celeriac_store_up` | gauge | |
//! | `celeriac_queue_messages` | gauge | queue, kind |
//! | `celeriac_queue_consumers` | gauge | queue |
//! | `celeriac_control_requests_refused_total` | counter | |
//! | `celeriac_workers_lost_total` | counter | |
//! | `celeriac_workers_live` | gauge | |
//! | `celeriac_task_oldest_running_seconds` | gauge | queue |
//! | `celeriac_tasks_throttled_total` | counter | queue, task, reason |
//! | `celeriac_pool_in_use` | gauge | pool |
//!
//! Deadline and wait-threshold counters: [`urgency`].

mod urgency;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::DeadLetterReason;
use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::disposition::Disposition;

/// The `task` label of names without a handler and of undecodable bodies.
pub(crate) const UNKNOWN_TASK: &str = "unknown";

/// Distinct `error_type` labels a worker reports before it folds the rest
/// into `other`.
pub(crate) const ERROR_TYPES_MAX: usize = 32;

/// Buckets of the run-time histogram, in seconds: 1 ms to 1 h.
const RUN_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Buckets of the queue-wait histogram, in seconds: 1 ms to 2 h, with
/// resolution around the 300 s threshold of the queue-wait alert.
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 240.0, 300.0,
    450.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// The metrics of one worker, in a Prometheus registry of its own (so
/// several workers in one process do not collide).
#[derive(Debug)]
pub(crate) struct WorkerMetrics {
    registry: Registry,
    families: Families,
    tasks: Vec<Box<str>>,
    queues: HashMap<Arc<str>, Arc<QueueMetrics>>,
    pub(crate) reconnects: IntCounter,
    /// Stays at 0 until the worker releases workflow steps.
    #[allow(dead_code)]
    pub(crate) workflow_releases: IntCounter,
    pub(crate) worker_ready: IntGauge,
    pub(crate) store_up: IntGauge,
    /// Control requests not run: unverifiable signature or a replay.
    pub(crate) control_refused: IntCounter,
    /// Workers this worker moved to lost (each counted once cluster-wide).
    pub(crate) workers_lost: IntCounter,
    /// Live workers in the store's worker list, as last seen.
    pub(crate) workers_live: IntGauge,
    pub(crate) urgency: urgency::UrgencyMetrics,
    /// The error kinds given a label of their own so far.
    error_types: std::sync::Mutex<std::collections::HashSet<Box<str>>>,
    /// Throttled tasks and pool units held.
    pub(crate) policy: crate::metrics_policy::PolicyMetrics,
}

/// The handles of one consumed queue.
#[derive(Debug)]
pub(crate) struct QueueMetrics {
    tasks: HashMap<Box<str>, TaskMetrics>,
    unknown: TaskMetrics,
    pub(crate) in_flight: IntGauge,
    pub(crate) work_messages: IntGauge,
    pub(crate) dlq_messages: IntGauge,
    pub(crate) consumers: IntGauge,
    oldest_running: prometheus::Gauge,
    /// Start times (Unix ms) of the runs going on, by a number of their own.
    running: std::sync::Mutex<HashMap<u64, u64>>,
    next_run: std::sync::atomic::AtomicU64,
}

/// Marks a run as going on until dropped; see [`QueueMetrics::running`].
pub(crate) struct Running<'a> {
    queue: &'a QueueMetrics,
    id: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.queue.runs().remove(&self.id);
    }
}

/// The handles of one (queue, task) pair.
#[derive(Debug)]
pub(crate) struct TaskMetrics {
    pub(crate) received: IntCounter,
    pub(crate) started: IntCounter,
    pub(crate) succeeded: IntCounter,
    pub(crate) failed: IntCounter,
    pub(crate) retried: IntCounter,
    dead_lettered: [(DeadLetterReason, IntCounter); DeadLetterReason::ALL.len()],
    pub(crate) expired: IntCounter,
    pub(crate) duplicates_suppressed: IntCounter,
    pub(crate) revoked: IntCounter,
    pub(crate) run_seconds: Histogram,
    pub(crate) queue_wait_seconds: Histogram,
}

/// The labelled families the handles are resolved from.
#[derive(Debug)]
struct Families {
    received: IntCounterVec,
    started: IntCounterVec,
    errors: IntCounterVec,
    succeeded: IntCounterVec,
    failed: IntCounterVec,
    retried: IntCounterVec,
    dead_lettered: IntCounterVec,
    expired: IntCounterVec,
    duplicates_suppressed: IntCounterVec,
    revoked: IntCounterVec,
    run_seconds: HistogramVec,
    queue_wait_seconds: HistogramVec,
    in_flight: IntGaugeVec,
    queue_messages: IntGaugeVec,
    queue_consumers: IntGaugeVec,
    oldest_running: prometheus::GaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(registry, HistogramVec::new(opts, &["queue", "task"]))
}

/// Registers a collector whose name and labels are constants of this
/// module: an error here is a bug, caught by the unit tests.
fn register<C: Collector + Clone + 'static>(registry: &Registry, made: prometheus::Result<C>) -> C {
    let collector = made.expect("valid metric definition");
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

impl WorkerMetrics {
    /// Creates every series for `queues` × (`tasks` + unknown).
    pub(crate) fn new<'a>(queues: &[String], tasks: impl IntoIterator<Item = &'a str>) -> Self {
        let registry = Registry::new();
        let qt = &["queue", "task"];
        let families = Families {
            received: counter(
                &registry,
                "celeriac_tasks_received_total",
                "Deliveries received.",
                qt,
            ),
            started: counter(
                &registry,
                "celeriac_tasks_started_total",
                "Runs started (a handler was called).",
                qt,
            ),
            errors: counter(
                &registry,
                "celeriac_task_errors_total",
                "Failed runs by error kind (the first 32 kinds a worker sees, then `other`).",
                &["queue", "task", "error_type"],
            ),
            succeeded: counter(
                &registry,
                "celeriac_tasks_succeeded_total",
                "Runs that succeeded.",
                qt,
            ),
            failed: counter(
                &registry,
                "celeriac_tasks_failed_total",
                "Runs that raised, panicked or hit their time limit, retried or not.",
                qt,
            ),
            retried: counter(
                &registry,
                "celeriac_tasks_retried_total",
                "Retries scheduled.",
                qt,
            ),
            dead_lettered: counter(
                &registry,
                "celeriac_tasks_dead_lettered_total",
                "Messages the worker dead-lettered, by reason.",
                &["queue", "task", "reason"],
            ),
            expired: counter(
                &registry,
                "celeriac_tasks_expired_total",
                "Tasks dropped because they were past their expiry.",
                qt,
            ),
            duplicates_suppressed: counter(
                &registry,
                "celeriac_tasks_duplicates_suppressed_total",
                "Deliveries not run because their idempotency key already succeeded.",
                qt,
            ),
            revoked: counter(
                &registry,
                "celeriac_tasks_revoked_total",
                "Tasks not run because they were revoked.",
                qt,
            ),
            run_seconds: histogram(
                &registry,
                "celeriac_task_run_seconds",
                "Run time of a task's handler.",
                RUN_BUCKETS,
            ),
            queue_wait_seconds: histogram(
                &registry,
                "celeriac_task_queue_wait_seconds",
                "Time from publish, or from the ETA when later, to the start of the run.",
                WAIT_BUCKETS,
            ),
            in_flight: gauge(
                &registry,
                "celeriac_tasks_in_flight",
                "Deliveries being handled.",
                &["queue"],
            ),
            queue_messages: gauge(
                &registry,
                "celeriac_queue_messages",
                "Messages ready in the queue (kind=work) and its dead-letter queue (kind=dlq), \
                 as last sampled.",
                &["queue", "kind"],
            ),
            queue_consumers: gauge(
                &registry,
                "celeriac_queue_consumers",
                "Consumers of the work queue, as last sampled.",
                &["queue"],
            ),
            oldest_running: register(
                &registry,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "celeriac_task_oldest_running_seconds",
                        "How long the longest run going on has run (0 when none runs).",
                    ),
                    &["queue"],
                ),
            ),
        };
        let single = |name: &str, help: &str| {
            register(&registry, IntCounter::with_opts(Opts::new(name, help)))
        };
        let reconnects = single(
            "celeriac_broker_reconnects_total",
            "Reconnections after a lost broker connection.",
        );
        let workflow_releases = single(
            "celeriac_workflow_releases_total",
            "Workflow steps released by this worker.",
        );
        let flag = |name: &str, help: &str| {
            register(&registry, IntGauge::with_opts(Opts::new(name, help)))
        };
        let worker_ready = flag(
            "celeriac_worker_ready",
            "1 when the worker is connected, declared, consuming and its store answers.",
        );
        let store_up = flag(
            "celeriac_store_up",
            "1 when the state store answered its last call (also 1 without a store).",
        );
        let control_refused = single(
            "celeriac_control_requests_refused_total",
            "Control requests not run: their signature did not verify, or a replay.",
        );
        let workers_lost = single(
            "celeriac_workers_lost_total",
            "Workers this worker found silent for three heartbeats and marked lost \
             (each lost worker is counted by one worker of the cluster).",
        );
        let workers_live = flag(
            "celeriac_workers_live",
            "Live workers in the store's worker list, as last seen (0 without a store).",
        );
        let tasks: Vec<Box<str>> = tasks.into_iter().map(Box::from).collect();
        let urgency = urgency::UrgencyMetrics::new(&registry, queues, &tasks);
        let queues = queues
            .iter()
            .map(|queue| {
                let metrics = QueueMetrics::new(&families, queue, &tasks);
                (Arc::from(queue.as_str()), Arc::new(metrics))
            })
            .collect();
        WorkerMetrics {
            urgency,
            policy: crate::metrics_policy::PolicyMetrics::new(&registry),
            registry,
            families,
            tasks,
            queues,
            reconnects,
            workflow_releases,
            worker_ready,
            store_up,
            control_refused,
            workers_lost,
            workers_live,
            error_types: std::sync::Mutex::default(),
        }
    }

    /// Counts a failed run of `task` (a registered name, or `None` for
    /// one without a handler) by its error kind.
    pub(crate) fn count_error(&self, queue: &str, task: Option<&str>, error_type: &str) {
        let task = task
            .filter(|name| self.tasks.iter().any(|t| &**t == *name))
            .unwrap_or(UNKNOWN_TASK);
        let label = {
            let mut seen = self
                .error_types
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.contains(error_type) {
                error_type
            } else if seen.len() < ERROR_TYPES_MAX {
                seen.insert(Box::from(error_type));
                error_type
            } else {
                "other"
            }
        };
        self.families
            .errors
            .with_label_values(&[queue, task, label])
            .inc();
    }

    /// The handles of a consumed queue, resolved once per session. The
    /// worker consumes only the queues it was built with, so the fallback
    /// for another queue is never taken.
    pub(crate) fn queue(&self, queue: &str) -> Arc<QueueMetrics> {
        match self.queues.get(queue) {
            Some(metrics) => metrics.clone(),
            None => Arc::new(QueueMetrics::new(&self.families, queue, &self.tasks)),
        }
    }

    /// Sets the readiness gauges and renders the Prometheus text format.
    pub(crate) fn render(&self, ready: bool, store_up: bool) -> prometheus::Result<String> {
        let now = celeriac_schema::now_ms();
        for queue in self.queues.values() {
            queue.update_oldest(now);
        }
        self.worker_ready.set(i64::from(ready));
        self.store_up.set(i64::from(store_up));
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

impl QueueMetrics {
    fn new(families: &Families, queue: &str, tasks: &[Box<str>]) -> Self {
        let tasks = tasks
            .iter()
            .filter(|task| &***task != UNKNOWN_TASK)
            .map(|task| (task.clone(), TaskMetrics::new(families, queue, task)))
            .collect();
        QueueMetrics {
            tasks,
            unknown: TaskMetrics::new(families, queue, UNKNOWN_TASK),
            in_flight: families.in_flight.with_label_values(&[queue]),
            work_messages: families.queue_messages.with_label_values(&[queue, "work"]),
            dlq_messages: families.queue_messages.with_label_values(&[queue, "dlq"]),
            consumers: families.queue_consumers.with_label_values(&[queue]),
            oldest_running: families.oldest_running.with_label_values(&[queue]),
            running: std::sync::Mutex::default(),
            next_run: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes a run that started at `started_ms`, until the guard drops.
    pub(crate) fn running(&self, started_ms: u64) -> Running<'_> {
        let id = self
            .next_run
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.runs().insert(id, started_ms);
        Running { queue: self, id }
    }

    /// Sets the oldest-run gauge as of `now_ms`.
    fn update_oldest(&self, now_ms: u64) {
        let oldest = self.runs().values().min().copied();
        let age = oldest.map_or(0, |started| now_ms.saturating_sub(started));
        self.oldest_running.set(age as f64 / 1000.0);
    }

    /// The handles of `task` (`None`: the body did not decode); names
    /// without a handler share `task="unknown"`.
    pub(crate) fn task(&self, task: Option<&str>) -> &TaskMetrics {
        task.and_then(|name| self.tasks.get(name))
            .unwrap_or(&self.unknown)
    }
}

impl TaskMetrics {
    fn new(families: &Families, queue: &str, task: &str) -> Self {
        let labels = &[queue, task];
        TaskMetrics {
            received: families.received.with_label_values(labels),
            started: families.started.with_label_values(labels),
            succeeded: families.succeeded.with_label_values(labels),
            failed: families.failed.with_label_values(labels),
            retried: families.retried.with_label_values(labels),
            dead_lettered: DeadLetterReason::ALL.map(|reason| {
                let counter =
                    families
                        .dead_lettered
                        .with_label_values(&[queue, task, reason.as_str()]);
                (reason, counter)
            }),
            expired: families.expired.with_label_values(labels),
            duplicates_suppressed: families.duplicates_suppressed.with_label_values(labels),
            revoked: families.revoked.with_label_values(labels),
            run_seconds: families.run_seconds.with_label_values(labels),
            queue_wait_seconds: families.queue_wait_seconds.with_label_values(labels),
        }
    }

    /// Counts a disposition the broker confirmed: a retry or a dead letter.
    pub(crate) fn settled(&self, disposition: &Disposition) {
        match disposition {
            Disposition::Retry { .. } => self.retried.inc(),
            Disposition::DeadLetter { reason, .. } => {
                if let Some((_, counter)) = self.dead_lettered.iter().find(|(r, _)| r == reason) {
                    counter.inc();
                }
            }
            Disposition::Ack | Disposition::Delay { .. } => {}
        }
    }

    /// Observes the wait of a task that starts now: from its publication,
    /// or from its ETA when that is later.
    pub(crate) fn observe_wait(&self, created_at_ms: u64, eta_ms: Option<u64>, now_ms: u64) {
        let since = eta_ms.map_or(created_at_ms, |eta| eta.max(created_at_ms));
        let wait = Duration::from_millis(now_ms.saturating_sub(since));
        self.queue_wait_seconds.observe(wait.as_secs_f64());
    }
}

#[cfg(test)]
mod tests;

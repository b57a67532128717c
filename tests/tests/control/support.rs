//! A namespace with a Redis store, a producer and in-process workers whose
//! test task reports its runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celeriac_consumer::{Registry, TaskContext, TaskError, WorkerBuilder};
use celeriac_producer::control::{ControlOptions, RevokeOptions, Revoked};
use celeriac_producer::{Producer, SendOptions, TaskHandle};
use celeriac_schema::control::{Command, Inspect, KillSignal};
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_schema::{Task, TaskId};
use celeriac_tests::{broker, namespace, redis_store, InProcessWorker, TestNamespace};

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(20);

/// How long a test waits for a task delayed by [`LONG_COUNTDOWN`].
pub const LONG_WAIT: Duration = Duration::from_secs(60);

/// The countdown of a task revoked while it waits in the delay levels.
pub const LONG_COUNTDOWN: Duration = Duration::from_secs(30);

/// `test.sleep`: sleeps `ms` unless cancelled; records its start and end.
pub struct Sleep;

impl Task for Sleep {
    const NAME: &'static str = "test.sleep";
    type Input = u64;
    type Output = u64;
}

/// What the workers' handlers saw.
#[derive(Debug, Default)]
pub struct Runs {
    /// Task ids that started.
    pub started: Mutex<Vec<TaskId>>,
    /// Task ids that saw their cancellation.
    pub cancelled: Mutex<Vec<TaskId>>,
    /// Runs now.
    pub running: AtomicUsize,
    /// Most runs at once.
    pub peak: AtomicUsize,
    /// When each run started.
    pub starts: Mutex<Vec<std::time::Instant>>,
}

impl Runs {
    /// Whether `id` started.
    pub fn has_started(&self, id: TaskId) -> bool {
        self.started.lock().unwrap().contains(&id)
    }

    /// How many runs started.
    pub fn count(&self) -> usize {
        self.started.lock().unwrap().len()
    }
}

/// A registry with `test.sleep`, reporting to `runs`.
pub fn registry(runs: &Arc<Runs>) -> Registry {
    let mut registry = Registry::new();
    let runs = runs.clone();
    registry.register::<Sleep, _, _>(move |ms, ctx: TaskContext| {
        let runs = runs.clone();
        async move {
            runs.started.lock().unwrap().push(ctx.task_id());
            runs.starts.lock().unwrap().push(std::time::Instant::now());
            let now = runs.running.fetch_add(1, Ordering::SeqCst) + 1;
            runs.peak.fetch_max(now, Ordering::SeqCst);
            let result = tokio::select! {
                _ = ctx.cancelled() => {
                    runs.cancelled.lock().unwrap().push(ctx.task_id());
                    Err(TaskError::fatal("Cancelled", "the run was revoked"))
                }
                _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(ms),
            };
            runs.running.fetch_sub(1, Ordering::SeqCst);
            result
        }
    });
    celeriac_consumer::exec::register(
        &mut registry,
        Arc::new(celeriac_consumer::exec::ExecConfig::new().allow("sh")),
    );
    registry
}

/// A test's namespace, store, producer and workers.
pub struct Cluster {
    pub producer: Producer,
    /// `None` for a cluster without a store: revocations are broadcast
    /// only.
    pub store: Option<Arc<dyn Store>>,
    pub runs: Arc<Runs>,
    pub workers: Vec<InProcessWorker>,
    /// Last: its queues are deleted once the workers are gone.
    pub ns: TestNamespace,
}

impl Cluster {
    /// A namespace with a store and a producer, and no worker yet.
    pub async fn new(test: &str) -> Cluster {
        let ns = namespace(test);
        let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
        Cluster::on(ns, Some(store)).await
    }

    /// A namespace with a producer and no store: the producer and the
    /// workers started by [`Cluster::start_worker`] share nothing but the
    /// broker.
    pub async fn without_store(test: &str) -> Cluster {
        Cluster::on(namespace(test), None).await
    }

    async fn on(ns: TestNamespace, store: Option<Arc<dyn Store>>) -> Cluster {
        let mut builder = Producer::builder(&broker().await.url).namespace(&*ns);
        if let Some(store) = &store {
            builder = builder.store(store.clone());
        }
        let producer = builder
            .connect()
            .await
            .expect("a producer connects to the test broker");
        Cluster {
            producer,
            store,
            runs: Arc::new(Runs::default()),
            workers: Vec::new(),
            ns,
        }
    }

    /// Starts a worker `id` with the store (if the cluster has one),
    /// tuned by `configure`.
    pub async fn start_worker(
        &mut self,
        id: &str,
        configure: impl FnOnce(WorkerBuilder) -> WorkerBuilder,
    ) {
        let store = self.store.clone();
        let worker = InProcessWorker::start(&self.ns, registry(&self.runs), |b| {
            let b = b.worker_id(id).heartbeat(Duration::from_millis(300));
            configure(match store {
                Some(store) => b.store(store),
                None => b,
            })
        })
        .await;
        self.workers.push(worker);
    }

    /// Starts three workers named `ids`, each running two tasks at once.
    pub async fn three_workers(&mut self, ids: [&str; 3]) {
        for id in ids {
            self.start_worker(id, |b| b.concurrency(2)).await;
        }
    }

    /// Tasks the workers acked as revoked, all together.
    pub fn revoked_total(&self) -> u64 {
        self.workers.iter().map(|w| w.stats().revoked).sum()
    }

    /// Sends two `test.sleep` tasks of 10 ms due after `countdown`: one to
    /// revoke and one left alone to show that delayed tasks still run.
    pub async fn two_delayed_sleeps(
        &self,
        countdown: Duration,
    ) -> (TaskHandle<Sleep>, TaskHandle<Sleep>) {
        let options = SendOptions::new().countdown(countdown);
        let revoked = self.producer.send::<Sleep>(&10, &options).await.unwrap();
        let control = self.producer.send::<Sleep>(&10, &options).await.unwrap();
        (revoked, control)
    }

    /// Revokes the task `id` with `--terminate` (SIGTERM).
    pub async fn revoke_and_terminate(&self, id: TaskId) -> Revoked {
        self.producer
            .revoke(
                &[id.to_string()],
                &RevokeOptions::new().terminate(KillSignal::Term),
            )
            .await
            .unwrap()
    }

    /// Sends a `test.sleep` of a minute, waits until it runs, then revokes
    /// it with `--terminate` (SIGTERM): its handle, the revocation's
    /// answer, and when the revocation was sent.
    pub async fn terminate_a_running_sleep(&self) -> (TaskHandle<Sleep>, Revoked, Instant) {
        let handle = self
            .producer
            .send::<Sleep>(&60_000, &SendOptions::new())
            .await
            .unwrap();
        let runs = self.runs.clone();
        until("the task runs", || runs.has_started(handle.id())).await;
        let started = Instant::now();
        let done = self.revoke_and_terminate(handle.id()).await;
        (handle, done, started)
    }

    /// What `inspect revoked` answers from each of `workers`, as JSON.
    pub async fn held_revocations(&self, workers: [&str; 3]) -> Vec<(String, serde_json::Value)> {
        let replies = self
            .producer
            .control(
                Command::Inspect {
                    what: Inspect::Revoked,
                },
                &ControlOptions::new().destination(workers),
            )
            .await
            .unwrap();
        assert!(replies.missing.is_empty(), "{replies:?}");
        replies
            .replies
            .iter()
            .map(|r| {
                let held = serde_json::to_value(r.result.as_ref().unwrap()).unwrap();
                (r.worker.clone(), held)
            })
            .collect()
    }
}

/// Waits until `check` holds, at most [`WAIT`].
pub async fn until<F: FnMut() -> bool>(what: &str, check: F) {
    until_within(WAIT, what, check).await;
}

/// Waits until `check` holds, at most `timeout`.
pub async fn until_within<F: FnMut() -> bool>(timeout: Duration, what: &str, mut check: F) {
    let ok = celeriac_tests::eventually(timeout, || {
        let done = check();
        async move { done }
    })
    .await;
    assert!(ok, "timed out after {timeout:?} waiting until {what}");
}

/// Whether process `pid` is gone: no such process, or a zombie (dead,
/// waiting for a parent that may never reap it).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// The pid a program wrote to `path`, once it did.
pub async fn pid_in(path: &std::path::Path) -> u32 {
    let mut pid = None;
    until("the program wrote its child's pid", || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    })
    .await;
    pid.unwrap()
}

/// Runs the `celeriac` CLI on namespace `ns` with `args`, with the store
/// when `with_store`; the runtime keeps running the in-process workers
/// meanwhile.
pub async fn celeriac(ns: &str, args: &[&str], with_store: bool) -> std::process::Output {
    let mut command = tokio::process::Command::new(celeriac_tests::celeriac_cli());
    command
        .args(["--namespace", ns])
        .args(args)
        .env("AMQP_ADDR", &broker().await.url)
        .env_remove("REDIS_URL")
        .stdin(std::process::Stdio::null());
    if with_store {
        command.env("REDIS_URL", &celeriac_tests::redis().await.url);
    }
    command.output().await.expect("the celeriac CLI runs")
}

/// The exit code and output of a CLI run, for failure messages.
pub fn described(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The JSON Lines a CLI run printed.
pub fn json_lines(output: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{}", described(output)))
        })
        .collect()
}

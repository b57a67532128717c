//! A namespace with a Redis store, a producer and in-process workers whose
//! test task reports its runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_consumer::{Registry, TaskContext, TaskError, WorkerBuilder};
use celeriac_producer::Producer;
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_schema::{Task, TaskId};
use celeriac_tests::{broker, namespace, redis_store, InProcessWorker, TestNamespace};

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(20);

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
    pub store: Arc<dyn Store>,
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
        let producer = Producer::builder(&broker().await.url)
            .namespace(&*ns)
            .store(store.clone())
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

    /// Starts a worker `id` with the store, tuned by `configure`.
    pub async fn start_worker(
        &mut self,
        id: &str,
        configure: impl FnOnce(WorkerBuilder) -> WorkerBuilder,
    ) {
        let store = self.store.clone();
        let worker = InProcessWorker::start(&self.ns, registry(&self.runs), |b| {
            configure(
                b.worker_id(id)
                    .store(store)
                    .heartbeat(Duration::from_millis(300)),
            )
        })
        .await;
        self.workers.push(worker);
    }
}

/// Waits until `check` holds, at most [`WAIT`].
pub async fn until<F: FnMut() -> bool>(what: &str, mut check: F) {
    let ok = celeriac_tests::eventually(WAIT, || {
        let done = check();
        async move { done }
    })
    .await;
    assert!(ok, "timed out waiting until {what}");
}

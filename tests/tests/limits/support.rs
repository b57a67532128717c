//! A namespace with a Redis store, a producer and in-process workers whose
//! test task records when each run started and ended.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celeriac_consumer::{Registry, TaskContext, TaskError, WorkerBuilder};
use celeriac_producer::Producer;
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_schema::Task;
use celeriac_tests::{broker, namespace, redis_store, InProcessWorker, TestNamespace};

/// How long a test waits for something that should happen soon.
pub const WAIT: Duration = Duration::from_secs(30);

/// `test.work`: sleeps `ms`; records its run.
pub struct Work;

impl Task for Work {
    const NAME: &'static str = "test.work";
    type Input = u64;
    type Output = u64;
}

/// One run: tenant, pools asked for, start and end.
#[derive(Debug, Clone)]
pub struct Run {
    pub tenant: Option<String>,
    pub pooled: bool,
    pub attempt: u32,
    pub start: Instant,
    pub end: Instant,
}

/// What the workers' handlers saw.
#[derive(Debug, Default)]
pub struct Runs {
    pub done: Mutex<Vec<Run>>,
    /// Runs holding a pool unit now, and the most at once.
    pub pooled_now: AtomicUsize,
    pub pooled_peak: AtomicUsize,
}

impl Runs {
    pub fn all(&self) -> Vec<Run> {
        self.done.lock().unwrap().clone()
    }
}

pub fn registry(runs: &Arc<Runs>) -> Registry {
    let mut registry = Registry::new();
    let runs = runs.clone();
    registry.register::<Work, _, _>(move |ms, ctx: TaskContext| {
        let runs = runs.clone();
        async move {
            let start = Instant::now();
            let pooled = !ctx.envelope().pools.is_empty();
            if pooled {
                let now = runs.pooled_now.fetch_add(1, Ordering::SeqCst) + 1;
                runs.pooled_peak.fetch_max(now, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if pooled {
                runs.pooled_now.fetch_sub(1, Ordering::SeqCst);
            }
            runs.done.lock().unwrap().push(Run {
                tenant: ctx.envelope().tenant.clone(),
                pooled,
                attempt: ctx.attempt(),
                start,
                end: Instant::now(),
            });
            Ok::<_, TaskError>(ms)
        }
    });
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

    /// The sum over the workers of the samples of `metric` whose labels
    /// contain `labels`.
    pub fn metric_sum(&self, metric: &str, labels: &str) -> f64 {
        self.workers
            .iter()
            .flat_map(|w| {
                w.metrics()
                    .lines()
                    .filter(|l| l.starts_with(metric) && l.contains(labels))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

//! A namespace, a producer and a task that records the order it runs in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_producer::Producer;
use celeriac_schema::tolerance::TOLERANCE_CLASSES;
use celeriac_schema::Task;
use celeriac_tests::{broker, namespace, TestNamespace};

/// How long a test waits for something that should happen soon.
pub const WAIT: Duration = Duration::from_secs(20);

/// `test.mark`: records its input, then sleeps a little.
pub struct Mark;

impl Task for Mark {
    const NAME: &'static str = "test.mark";
    type Input = String;
    type Output = ();
}

/// A namespace whose class queues are deleted with it, and a producer.
pub async fn setup(test: &str) -> (TestNamespace, Producer) {
    let mut ns = namespace(test);
    let classes: Vec<String> = (0..TOLERANCE_CLASSES)
        .map(|k| ns.topology().tolerance_queue("default", k))
        .collect();
    for class in classes {
        ns = ns.with_raw_queue(&class);
    }
    let producer = Producer::builder(&broker().await.url)
        .namespace(&*ns)
        .connect()
        .await
        .expect("a producer connects to the test broker");
    (ns, producer)
}

/// A registry with `test.mark`, recording inputs in start order in `seen`;
/// each run takes `run`.
pub fn registry(seen: &Arc<Mutex<Vec<String>>>, run: Duration) -> Registry {
    let mut registry = Registry::new();
    let seen = seen.clone();
    registry.register::<Mark, _, _>(move |label: String, _ctx: TaskContext| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(label);
            tokio::time::sleep(run).await;
            Ok::<_, TaskError>(())
        }
    });
    registry
}

/// The value of the series `series` (name and labels) in `metrics`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

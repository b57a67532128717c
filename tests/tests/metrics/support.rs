//! A worker serving its metrics on loopback, a minimal HTTP client and a
//! reader of the Prometheus text format.

use std::net::SocketAddr;
use std::time::Duration;

use celeriac_consumer::{Registry, StatsSnapshot, Worker, WorkerHandle};
use celeriac_producer::Producer;
use celeriac_tests::{broker, eventually};

/// A registry with the built-in tasks.
pub fn builtins() -> Registry {
    let mut registry = Registry::new();
    celeriac_consumer::builtin::register(&mut registry);
    registry
}

/// Sends a `celeriac.ping` already past its expiry when it is sent: a
/// worker drops it without running it.
pub async fn send_expired(producer: &Producer) {
    let stale = producer
        .prepare::<celeriac_schema::builtin::Ping>(
            &(),
            &celeriac_producer::SendOptions::new().expires_in(Duration::from_millis(1)),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    producer.send_prepared(&stale).await.unwrap();
}

/// A producer on `namespace`.
pub async fn producer(namespace: &str) -> Producer {
    Producer::builder(&broker().await.url)
        .namespace(namespace)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("producer: {e}"))
}

/// A worker in the test process with its metrics server on a free
/// loopback port.
pub struct MetricsWorker {
    pub handle: WorkerHandle,
    pub addr: SocketAddr,
    run: tokio::task::JoinHandle<celeriac_consumer::Result<StatsSnapshot>>,
}

impl MetricsWorker {
    /// Starts the worker on `namespace`, sampling its queues every
    /// `sample`; returns before it is ready, so a test can watch `/readyz`
    /// flip.
    pub async fn start(namespace: &str, sample: Duration) -> Self {
        let worker = Worker::builder(&broker().await.url, builtins())
            .namespace(namespace)
            .worker_id(format!("{namespace}-worker"))
            .concurrency(8)
            .grace(Duration::from_secs(10))
            .metrics_addr(([127, 0, 0, 1], 0).into())
            .queue_sample_interval(sample)
            .build()
            .unwrap_or_else(|e| panic!("build the worker: {e}"));
        let handle = worker.handle();
        let addr = handle
            .metrics_addr()
            .expect("a worker built with metrics_addr reports its address");
        assert_ne!(addr.port(), 0, "the bound port is reported, not 0");
        let run = tokio::spawn(worker.run());
        MetricsWorker { handle, addr, run }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let ready = eventually(Duration::from_secs(15), || async {
            get(self.addr, "/readyz").await.0 == 200
        })
        .await;
        assert!(ready, "/readyz never answered 200");
    }

    /// `/metrics` now.
    pub async fn scrape(&self) -> Metrics {
        let (status, body) = get(self.addr, "/metrics").await;
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        Metrics(body)
    }

    /// Shuts the worker down and waits for it to stop.
    pub async fn stop(self) -> StatsSnapshot {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(20), self.run)
            .await
            .expect("the worker stops within its grace period")
            .expect("the worker task does not panic")
            .expect("the worker stops cleanly")
    }
}

pub use celeriac_tests::http::{get, get_with};

/// A scrape in the Prometheus text format.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series `name` with exactly `labels` (in any order).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        want.sort();
        self.series(name)
            .find(|(labels, _)| *labels == want)
            .map(|(_, value)| value)
    }

    /// The value of `name` with `labels`, which must exist.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in the scrape:\n{}", self.0))
    }

    /// Every series of `name`: sorted labels and value.
    pub fn series<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (Vec<(String, String)>, f64)> + 'a {
        self.0.lines().filter_map(move |line| {
            if line.starts_with('#') {
                return None;
            }
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let mut parsed: Vec<(String, String)> = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            parsed.sort();
            Some((parsed, value.trim().parse().ok()?))
        })
    }
}

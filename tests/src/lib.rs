//! Test support: a real broker for every test, a fresh namespace per test,
//! worker processes to start, signal and kill, and helpers to look into
//! queues.
//!
//! The broker comes from `AMQP_ADDR` when it is set (CI and machines with a
//! local RabbitMQ); otherwise a RabbitMQ container is started with
//! testcontainers. A test that can reach neither fails and says how to
//! provide one: it never passes silently.

use std::time::{Duration, Instant};

pub use ::redis as redis_client;
pub use lapin;

pub mod http;
pub mod latency;
pub mod scenarios;
pub mod tls;

mod broker;
mod namespace;
mod queues;
mod store;
pub mod test_tasks;
mod workers;

pub use broker::{broker, Broker, HOW_TO_PROVIDE_A_BROKER};
pub use namespace::{delete_redis_keys, namespace, TestNamespace};
pub use queues::{drain, header, header_int, header_str, queue_len, queue_stats};
pub use store::{redis, redis_client_for, redis_store, redis_tls, Redis, HOW_TO_PROVIDE_REDIS};
pub use workers::{
    celeriac_cli, celeriac_dlq_cli, read_record, record_file, store_cluster, InProcessWorker,
    StoreCluster, WorkerProcess,
};

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A xorshift64 generator: the same seed gives the same random DAG in
/// every run, with no dependency.
///
/// # Examples
///
/// ```
/// let mut a = celeriac_tests::XorShift::new(7);
/// let mut b = celeriac_tests::XorShift::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// ```
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded with `seed` (zero is replaced, as xorshift would stay at 0).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs a benchmark program's `measure` future on a multi-threaded runtime
/// (`worker_threads`, default one per CPU) and prints its report as pretty
/// JSON on stdout. Errors go to stderr, prefixed with the program's `name`,
/// and exit with `failure`.
pub fn print_report<R, F>(
    name: &str,
    failure: u8,
    worker_threads: Option<usize>,
    measure: F,
) -> std::process::ExitCode
where
    R: serde::Serialize,
    F: std::future::Future<Output = anyhow::Result<R>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(failure);
        }
    };
    let report = runtime
        .block_on(measure)
        .and_then(|report| Ok(serde_json::to_string_pretty(&report)?));
    match report {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::from(failure)
        }
    }
}

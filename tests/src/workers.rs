//! Workers for tests: processes of the test worker binary, workers inside
//! the test process, and the binaries of the workspace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{broker, eventually, namespace, redis, redis_store, TestNamespace};

/// A `celeriac-test-worker` process: the real worker binary plus the test
/// tasks of `src/bin/celeriac-test-worker.rs`.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    /// Starts a worker on `namespace` with extra arguments; `record` is the
    /// file the `test.record` task appends to.
    ///
    /// # Panics
    ///
    /// When the binary cannot be started.
    pub fn start(binary: &Path, url: &str, namespace: &str, record: &Path, args: &[&str]) -> Self {
        let child = Command::new(binary)
            .args(["--namespace", namespace])
            .args(args)
            .env("AMQP_ADDR", url)
            // A worker uses the state store only when a test asks for it.
            .env_remove("REDIS_URL")
            // Many workers run at once: no fixed metrics port unless asked.
            .env("CELERIAC_METRICS_ADDR", "off")
            .env("CELERIAC_TEST_RECORD", record)
            .env(
                "RUST_LOG",
                std::env::var("TEST_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        WorkerProcess { child }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`, ...).
    ///
    /// # Panics
    ///
    /// When `kill` cannot be run.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
        assert!(
            status.success(),
            "kill -{signal} {} failed",
            self.child.id()
        );
    }

    /// Waits for the process to exit, at most `timeout`; `None` if it
    /// did not.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A worker running inside the test process, so its counters can be read.
pub struct InProcessWorker {
    handle: celeriac_consumer::WorkerHandle,
    run: tokio::task::JoinHandle<celeriac_consumer::Result<celeriac_consumer::StatsSnapshot>>,
}

impl InProcessWorker {
    /// Builds a worker on `namespace` (tuned by `configure`), runs it and
    /// waits until it consumes.
    pub async fn start(
        namespace: &str,
        registry: celeriac_consumer::Registry,
        configure: impl FnOnce(celeriac_consumer::WorkerBuilder) -> celeriac_consumer::WorkerBuilder,
    ) -> Self {
        let builder = celeriac_consumer::Worker::builder(&broker().await.url, registry)
            .namespace(namespace)
            .grace(Duration::from_secs(5));
        let worker = configure(builder)
            .build()
            .unwrap_or_else(|e| panic!("the in-process worker cannot be built: {e}"));
        let handle = worker.handle();
        let run = tokio::spawn(worker.run());
        let ready = eventually(Duration::from_secs(15), || async { handle.is_ready() }).await;
        assert!(ready, "the in-process worker never became ready");
        InProcessWorker { handle, run }
    }

    /// The worker's counters so far.
    pub fn stats(&self) -> celeriac_consumer::StatsSnapshot {
        self.handle.stats()
    }

    /// Its metrics in the Prometheus text format.
    pub fn metrics(&self) -> String {
        self.handle.metrics()
    }

    /// Whether it consumes (its readiness).
    pub fn is_ready(&self) -> bool {
        self.handle.is_ready()
    }

    /// Shuts the worker down and waits, at most 15 s, without judging how
    /// it stopped (for tests about something else).
    pub async fn shutdown(self) {
        self.handle.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.run).await;
    }

    /// Shuts the worker down and returns its final counters.
    pub async fn stop(self) -> celeriac_consumer::StatsSnapshot {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(15), self.run)
            .await
            .expect("the worker stops within its grace period")
            .expect("the worker task does not panic")
            .expect("the worker stops cleanly")
    }
}

/// A worker process with the Redis store and a producer sharing that store,
/// in a namespace of its own: the setup of the end-to-end tests that send
/// tasks or workflows and read their results.
pub struct StoreCluster {
    /// Sends to the worker's queues and reads results from the store.
    pub producer: celeriac_producer::Producer,
    /// The worker; stopped when the cluster is dropped.
    pub worker: WorkerProcess,
    /// Last, so that its queues are deleted once the worker is gone.
    pub ns: TestNamespace,
}

/// Starts `worker_bin` (normally `env!("CARGO_BIN_EXE_celeriac-test-worker")`)
/// on the Redis store with `worker_args` after `--redis-url`, in the
/// namespace of `test`, and connects a producer with the same store.
///
/// # Panics
///
/// When the broker or Redis cannot be reached (with how to provide them).
pub async fn store_cluster(test: &str, worker_bin: &Path, worker_args: &[&str]) -> StoreCluster {
    let ns = namespace(test);
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let store = std::sync::Arc::new(
        redis_store(&ns, celeriac_schema::store::StoreSettings::default()).await,
    );
    let mut args = vec!["--redis-url", redis_url.as_str()];
    args.extend_from_slice(worker_args);
    let worker = WorkerProcess::start(worker_bin, &broker.url, &ns, &record_file(test), &args);
    // A publish the broker nacks (a quorum queue declared a moment ago,
    // on a broker busy with every other test's) is sent again rather than
    // failing the test: these tests are about the worker, not the confirm.
    let producer = celeriac_producer::Producer::builder(&broker.url)
        .namespace(&*ns)
        .store(store)
        .failover(std::time::Duration::from_secs(10))
        .connect()
        .await
        .expect("a producer connects to the test broker");
    StoreCluster {
        producer,
        worker,
        ns,
    }
}

/// The `celeriac` CLI binary, which cargo builds beside the test binaries
/// (`target/<profile>/celeriac`) when it builds the workspace.
///
/// # Panics
///
/// When it is missing, with the command that builds it.
pub fn celeriac_cli() -> PathBuf {
    workspace_binary(
        "celeriac",
        "cargo build -p celeriac-consumer --bin celeriac",
    )
}

/// The `celeriac-dlq` binary, which cargo builds beside the test binaries
/// when it builds the workspace.
///
/// # Panics
///
/// When it is missing, with the command that builds it.
pub fn celeriac_dlq_cli() -> PathBuf {
    workspace_binary("celeriac-dlq", "cargo build -p celeriac-dlq")
}

fn workspace_binary(name: &str, build: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running test binary");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .expect("a test binary lives two levels below the target directory");
    assert!(
        path.exists(),
        "{} is missing: build it with `{build}`",
        path.display()
    );
    path
}

/// Lines of a record file written by `test.record` (`{task_id} {attempt}
/// {worker pid}` each).
///
/// Only whole lines count: a worker may be appending while this reads, and a
/// write that crosses a page boundary can be seen half done, so a last line
/// without its newline is left for the next read.
pub fn read_record(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| whole_lines(&s))
        .unwrap_or_default()
}

/// The newline-terminated lines of `text`, without their newlines.
fn whole_lines(text: &str) -> Vec<String> {
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole.lines().map(str::to_owned).collect()
}

/// A fresh, empty record file path under the target directory.
pub fn record_file(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("celeriac-tests");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{test}-{}.log", uuid::Uuid::now_v7().simple()));
    let _ = std::fs::remove_file(&path);
    path
}

#[cfg(test)]
mod tests {
    use super::whole_lines;

    #[test]
    fn a_record_line_still_being_written_is_left_out() {
        assert_eq!(whole_lines("a 0 1\nb 0 1\n"), ["a 0 1", "b 0 1"]);
        assert_eq!(whole_lines("a 0 1\nb 0"), ["a 0 1"]);
        assert!(whole_lines("a 0").is_empty());
        assert!(whole_lines("").is_empty());
    }
}

//! `celeriac beat`: two replicas (one killed and restarted mid-run) enqueue
//! every tick exactly once; a tick whose replica died between claiming it
//! and submitting its run is taken over and enqueued once; the overlap
//! policies skip, queue and allow; a child scheduled less often than its
//! parent is refused.

#![allow(clippy::unwrap_used)]

mod replicas;
mod schedules;
mod serving;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celeriac_producer::beat::{
    Beat, BeatEntry, BeatOptions, BeatState, BeatStats, RedisBeatState, TickClaim,
};
use celeriac_producer::schedule::{Overlap, Schedule};
use celeriac_producer::Producer;
use celeriac_schema::store::{Store, StoreSettings, TaskRecord, WorkflowState};
use celeriac_schema::workflow::{node_task_id, Node, Workflow};
use celeriac_schema::{TaskId, TaskState};
use celeriac_tests::{
    broker, celeriac_cli, namespace, record_file, redis, redis_store, WorkerProcess,
};

/// A `celeriac beat` process whose log goes to a file.
struct BeatProcess {
    child: Child,
    log: PathBuf,
}

impl BeatProcess {
    async fn start(ns: &str, files: &[&Path], replica: &str) -> BeatProcess {
        BeatProcess::start_with(ns, files, replica, &["--metrics-addr", "off"]).await
    }

    /// Starts beat with `extra` arguments (its metrics server's, say).
    async fn start_with(ns: &str, files: &[&Path], replica: &str, extra: &[&str]) -> BeatProcess {
        let log = record_file(&format!("beat-{replica}"));
        let child = Command::new(celeriac_cli())
            .arg("beat")
            .args(files)
            .args(["--namespace", ns, "--replica", replica])
            .args(extra)
            .env("AMQP_ADDR", &broker().await.url)
            .env("REDIS_URL", &redis().await.url)
            .env("RUST_LOG", "info,lapin=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        BeatProcess { child, log }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until its log holds `needle` (beat starts slowly on a busy
    /// machine), failing the test after `timeout`.
    async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(needle) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "beat did not log {needle:?} within {timeout:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it with SIGTERM and asserts a clean exit.
    fn stop(mut self) -> String {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "beat did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "beat exited with {status}:\n{log}");
        assert!(log.contains("beat stopped"), "{log}");
        log
    }

    /// Kills it with SIGKILL.
    fn kill(mut self) -> String {
        self.signal("KILL");
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BeatProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `(entry, tick, workflow id)` of every `submitted` line of a beat log.
fn submitted(log: &str) -> Vec<(String, i64, TaskId)> {
    log.lines()
        .filter(|line| line.contains(" submitted "))
        .map(|line| {
            (
                field(line, "entry").to_owned(),
                field(line, "tick").parse().unwrap(),
                field(line, "workflow").parse().unwrap(),
            )
        })
        .collect()
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let pattern = format!(" {name}=");
    let start = line
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        + pattern.len();
    line[start..].split_whitespace().next().unwrap_or("")
}

fn write_flow(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn flow_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("celeriac-tests")
        .join(format!("{test}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn worker(ns: &str, redis_url: &str, url: &str) -> WorkerProcess {
    WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        url,
        ns,
        &record_file("beat-worker"),
        &["--redis-url", redis_url],
    )
}

/// Sleeps until `frac` of a second past the next whole second, far from
/// the ticks of a one-second schedule.
async fn sleep_to_mid_second(frac: f64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = now.as_secs_f64().fract();
    let wait = if into < frac {
        frac - into
    } else {
        1.0 - into + frac
    };
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
}

/// Waits until every workflow finished; returns each run's node record.
async fn finished_runs(store: &Arc<dyn Store>, runs: &[TaskId], node: &str) -> Vec<TaskRecord> {
    let mut records = Vec::new();
    for &run in runs {
        let done = store
            .wait_workflow(run, Duration::from_secs(20))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("workflow {run} did not finish"));
        assert_eq!(done.state, WorkflowState::Succeeded, "{done:?}");
        let record = store.get(node_task_id(run, node)).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Succeeded);
        assert_eq!(record.runs, 1, "node of {run} ran {} times", record.runs);
        records.push(record);
    }
    records
}

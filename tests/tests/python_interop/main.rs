//! The wire contract across languages: tasks enqueued by a Python producer
//! (`tests/python/celeriac_producer.py`, pika and msgpack), written from
//! `broker-schema/SPEC.md` alone, run on the Rust worker; signed by Python
//! (SPEC.md section 15), they run on a worker that requires signatures,
//! and a wrong or missing signature is dead-lettered as `bad-signature`;
//! a Python client of the event stream (`tests/python/celeriac_events.py`,
//! section 17) counts the completions of the tasks it sent, and a Python
//! reader of the store (`tests/python/celeriac_store.py`, redis-py, from
//! SPEC.md section 18) reads the results of tasks it sent and waits for
//! them on the completion channel.
//!
//! The producer runs in a venv under the target directory
//! (`target/python-venv`) with the pinned packages of
//! `tests/python/requirements.txt`, set up on first use by
//! `tests/python/setup_venv.py` and rebuilt when the requirements change
//! (`CELERIAC_PYTHON_VENV` puts it elsewhere); `CELERIAC_PYTHON` names a
//! Python that already has them instead. When the
//! packages cannot be installed the tests fail and say how to provide them.

#![allow(clippy::unwrap_used)]

mod events;
mod results;
mod signing;
mod tasks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use celeriac_schema::store::{Store, StoreSettings, TaskRecord};
use celeriac_schema::{now_ms, TaskId, TaskState};
use celeriac_tests::{
    broker, drain, eventually, header_int, header_str, namespace, queue_len, read_record,
    record_file, redis, redis_store, WorkerProcess,
};

/// Echo tasks sent from Python, each with its own input.
const ECHO_TASKS: usize = 50;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
}

fn python_dir() -> PathBuf {
    repo_root().join("tests").join("python")
}

/// A Python 3 with the pinned pika and msgpack, set up once per process.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(given) = std::env::var("CELERIAC_PYTHON") {
            if !given.is_empty() {
                let check = Command::new(&given)
                    .args(["-c", "import pika, msgpack"])
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run CELERIAC_PYTHON={given}: {e}"));
                assert!(
                    check.status.success(),
                    "CELERIAC_PYTHON={given} cannot import pika and msgpack \
                     (install tests/python/requirements.txt into it): {}",
                    String::from_utf8_lossy(&check.stderr)
                );
                return PathBuf::from(given);
            }
        }
        // CARGO_TARGET_TMPDIR is `<target>/tmp`: the venv goes beside it.
        let venv = match std::env::var_os("CELERIAC_PYTHON_VENV") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("the target tmp dir has a parent")
                .join("python-venv"),
        };
        let out = Command::new("python3")
            .arg(python_dir().join("setup_venv.py"))
            .arg(&venv)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run python3 to set up {} ({e}); the interop tests need \
                     Python 3.11+ with its venv module (`apt-get install python3 python3-venv`), \
                     or CELERIAC_PYTHON set to a Python that has pika and msgpack",
                    venv.display()
                )
            });
        assert!(
            out.status.success(),
            "the Python producer's packages are not available ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Runs the Python producer on namespace `ns` with `args`; returns the task
/// ids it printed, in order.
fn produce(url: &str, ns: &str, args: &[&str]) -> Vec<TaskId> {
    let out = Command::new(python())
        .arg(python_dir().join("celeriac_producer.py"))
        .args(["--amqp-addr", url, "--namespace", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run the Python producer: {e}"));
    assert!(
        out.status.success(),
        "the Python producer failed ({}) with {args:?}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            line.parse()
                .unwrap_or_else(|e| panic!("the producer printed {line:?}, not a task id: {e}"))
        })
        .collect()
}

async fn record_of(store: &dyn Store, id: TaskId) -> Option<TaskRecord> {
    store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("store get {id}: {e}"))
}

/// Waits until every task of `ids` reached a final state; returns their
/// records.
async fn finished(store: &dyn Store, ids: &[TaskId], timeout: Duration) -> Vec<TaskRecord> {
    let mut records = HashMap::new();
    let deadline = Instant::now() + timeout;
    while records.len() < ids.len() && Instant::now() < deadline {
        for id in ids {
            if records.contains_key(id) {
                continue;
            }
            if let Some(record) = record_of(store, *id).await {
                if record.state.is_terminal() {
                    records.insert(*id, record);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing: Vec<_> = ids.iter().filter(|id| !records.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} tasks sent from Python did not finish within {timeout:?}: {missing:?}",
        missing.len(),
        ids.len()
    );
    ids.iter().map(|id| records.remove(id).unwrap()).collect()
}

/// The messages (ready and unacked) in each queue of namespace `ns`.
async fn messages_by_queue(ns: &str) -> HashMap<String, u64> {
    let out = broker()
        .await
        .rabbitmqctl(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages",
        ])
        .await;
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let count = words.next()?.parse().ok()?;
            name.starts_with(&format!("{ns}."))
                .then(|| (name.to_owned(), count))
        })
        .collect()
}

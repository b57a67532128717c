//! Programs as tasks on the cluster: a Rust producer sends `celeriac.exec`
//! tasks that a real worker process runs as a Python script, a Bash script
//! and a compiled program; a program off the allowlist is dead-lettered as
//! forbidden; a workflow node that runs a program gets its dependencies'
//! results on stdin. The sandbox (secrets, exec user, network, argument
//! patterns, start-up refusals) is in `exec/sandbox.rs`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use celeriac_producer::{Error, SendOptions, TaskHandle};
use celeriac_schema::exec::{Exec, ExecInput, ExecSpec};
use celeriac_schema::headers;
use celeriac_schema::workflow::{InputFrom, Node, Workflow};
use celeriac_tests::{
    broker, drain, eventually, header_str, queue_len, record_file, store_cluster, StoreCluster,
};
use serde_json::{json, Value};

#[path = "exec/sandbox.rs"]
mod sandbox;

const WAIT: Duration = Duration::from_secs(30);

fn program(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("exec-programs")
        .join(name)
}

fn python_script() -> String {
    program("stats.py").display().to_string()
}

fn bash_script() -> String {
    program("wordcount.sh").display().to_string()
}

fn compiled() -> &'static str {
    env!("CARGO_BIN_EXE_celeriac-exec-sample")
}

/// A worker process with a store, allowed to run `python3`, the Bash
/// script (by path: it runs through its `#!` line) and the compiled
/// sample, and nothing else.
struct Cluster(StoreCluster);

async fn cluster(test: &str) -> Cluster {
    let allow = format!("python3,{},{}", bash_script(), compiled());
    Cluster(
        store_cluster(
            test,
            Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
            &[
                "--concurrency",
                "4",
                "--exec-allow",
                &allow,
                "--exec-memory-limit",
                "1G",
                "--exec-cpu-limit",
                "60s",
            ],
        )
        .await,
    )
}

impl std::ops::Deref for Cluster {
    type Target = StoreCluster;
    fn deref(&self) -> &StoreCluster {
        &self.0
    }
}

impl Cluster {
    async fn send(&self, spec: ExecSpec, input: Value) -> TaskHandle<Exec> {
        let input = ExecInput::new(spec, celeriac_schema::to_value(&input).unwrap());
        // One retry at most: a failing program fails fast.
        let options = SendOptions::new().max_retries(0);
        let mut attempts = 0;
        loop {
            match self.producer.send::<Exec>(&input, &options).await {
                Ok(handle) => return handle,
                // A busy broker may nack a publish; the caller sends again,
                // as the error's documentation says.
                Err(e) if e.is_transient() && attempts < 3 => {
                    attempts += 1;
                    println!("send failed ({e}); sending again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("send failed: {e}"),
            }
        }
    }
}

/// A result as JSON, to compare with `json!`.
fn as_json(value: rmpv::Value) -> Value {
    serde_json::to_value(value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_script_runs_as_a_task() {
    let c = cluster("exec-python").await;
    let spec = ExecSpec::new("python3").args([python_script()]);
    let handle = c.send(spec.clone(), json!({"numbers": [1, 2, 3, 4]})).await;
    let out = as_json(handle.wait(WAIT).await.unwrap());
    assert_eq!(
        out,
        json!({"count": 4, "sum": 10, "mean": 2.5, "language": "python"})
    );

    // Its failure comes back with the exit status and stderr.
    let handle = c.send(spec, json!({"numbers": []})).await;
    match handle.wait(WAIT).await {
        Err(Error::TaskFailed { failure, .. }) => {
            assert_eq!(failure.error_type, "ExitStatus");
            assert!(
                failure.message.contains("exited with status 2"),
                "{failure}"
            );
            assert!(failure.message.contains("no numbers"), "{failure}");
        }
        other => panic!("expected the task to fail, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bash_script_runs_as_a_task() {
    let c = cluster("exec-bash").await;
    let handle = c
        .send(ExecSpec::new(bash_script()), json!("the quick brown fox"))
        .await;
    let out = as_json(handle.wait(WAIT).await.unwrap());
    assert_eq!(
        out,
        json!({"words": 4, "longest": "quick", "language": "bash"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compiled_program_runs_as_a_task() {
    let c = cluster("exec-compiled").await;
    let handle = c
        .send(ExecSpec::new(compiled()), json!({"a": 1, "b": [2, 3.5]}))
        .await;
    let out = as_json(handle.wait(WAIT).await.unwrap());
    assert_eq!(
        out,
        json!({"total": 6.5, "keys": ["a", "b"], "language": "rust"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_off_the_allowlist_is_dead_lettered_as_forbidden() {
    let c = cluster("exec-forbidden").await;
    let marker = record_file("exec-forbidden-marker");
    let spec = ExecSpec::new("touch").args([marker.display().to_string()]);
    let handle = c.send(spec, Value::Null).await;
    match handle.wait(WAIT).await {
        Err(Error::TaskFailed { failure, .. }) => {
            assert_eq!(failure.error_type, "Forbidden", "{failure}");
        }
        other => panic!("expected the task to fail, got {other:?}"),
    }
    let (_conn, channel) = broker().await.channel().await;
    let dlq = c.ns.topology().dead_letter_queue("default");
    let arrived = eventually(WAIT, || async { queue_len(&channel, &dlq).await >= 1 }).await;
    assert!(arrived, "nothing reached {dlq}");
    let dead = drain(&channel, &dlq).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header_str(&dead[0], headers::REASON), "forbidden");
    assert_eq!(header_str(&dead[0], headers::ERROR_TYPE), "Forbidden");
    assert!(!marker.exists(), "the forbidden program ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_node_receives_its_dependencies_results_on_stdin() {
    let c = cluster("exec-workflow").await;
    let mut wf = Workflow::new();
    wf.push(Node::exec(
        "py",
        ExecSpec::new("python3").args([python_script()]),
        celeriac_schema::to_value(&json!({"numbers": [1, 2, 3, 4]})).unwrap(),
    ));
    wf.push(Node::exec(
        "sh",
        ExecSpec::new(bash_script()),
        rmpv::Value::from("one two three"),
    ));
    wf.push(
        Node::exec("total", ExecSpec::new(compiled()), rmpv::Value::Nil)
            .after(["py", "sh"])
            .input_from(InputFrom::ByName),
    );
    let handle = c.producer.submit(&wf, &[]).await.unwrap();
    let out: Value = handle.wait_as(WAIT).await.unwrap();
    // 4 + 10 + 2.5 from Python, 3 from Bash.
    assert_eq!(
        out,
        json!({"total": 19.5, "keys": ["py", "sh"], "language": "rust"})
    );
}

/// Whether `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_takes_its_running_program_with_it() {
    let c = cluster("exec-worker-killed").await;
    let pid_file = std::env::temp_dir().join(format!(
        "celeriac-exec-killed-{}.pid",
        celeriac_schema::TaskId::new()
    ));
    let spec = ExecSpec::new("python3").args([
        "-c".to_owned(),
        "import os, sys, time\n\
         open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n\
         os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n\
         time.sleep(600)"
            .to_owned(),
        pid_file.display().to_string(),
    ]);
    let _handle = c.send(spec, Value::Null).await;
    assert!(
        eventually(Duration::from_secs(20), || async { pid_file.exists() }).await,
        "the program never started"
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&pid_file);
    assert!(!ended(pid), "the program runs while its worker does");

    c.worker.signal("KILL");
    assert!(
        eventually(Duration::from_secs(5), || async { ended(pid) }).await,
        "program {pid} outlived its SIGKILLed worker"
    );
}

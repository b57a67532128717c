//! YAML workflows on the cluster: the example flows submitted through the
//! API and through `celeriac submit --wait`, run by a real worker process
//! allowed to run `python3` and `bash`, every node's state checked.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use celeriac_producer::flow::Flow;
use celeriac_schema::store::{NodeProgress, WorkflowState};
use celeriac_schema::TaskId;
use celeriac_tests::{broker, celeriac_cli, redis, store_cluster, StoreCluster};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/flows")
        .join(name)
}

/// A worker with a store that may run `python3` and `bash`, as the README
/// tells users to start one for these flows.
async fn cluster(test: &str) -> StoreCluster {
    store_cluster(
        test,
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &["--concurrency", "4", "--exec-allow", "python3,bash"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_flow_runs_on_the_cluster() {
    let c = cluster("flow-hello").await;
    let flow = Flow::from_path(example("hello.yaml")).unwrap();
    let workflow = flow.workflow(TaskId::new());
    let handle = c.producer.submit(&workflow, &[]).await.unwrap();
    let result = handle.wait(WAIT).await.unwrap();
    assert_eq!(
        serde_json::to_value(&result).unwrap()["delivered_bytes"]
            .as_u64()
            .map(|n| n > 0),
        Some(true),
        "{result:?}"
    );

    let status = handle.status().await.unwrap().unwrap();
    assert_eq!(status.workflow.state, WorkflowState::Succeeded);
    let mut seen = BTreeMap::new();
    for node in &status.nodes {
        assert_eq!(node.progress, NodeProgress::Succeeded, "{}", node.id);
        assert_eq!(node.attempts(), 1, "{}", node.id);
        seen.insert(node.id.clone(), ());
    }
    let expected: Vec<&str> = flow.tasks().iter().map(|t| t.id.as_str()).collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort_unstable();
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        expected_sorted
    );

    // The same results as in-process: the input rule is the same.
    let results: BTreeMap<String, Value> = status
        .nodes
        .iter()
        .map(|n| {
            let record = n.record.as_ref().unwrap();
            (n.id.clone(), celeriac_producer::status::result_json(record))
        })
        .collect();
    assert_eq!(
        results["greet"],
        json!({"greetings": ["hello, world", "bonjour, world", "hallo, world"]})
    );
    assert_eq!(results["report.count"], json!({"greetings": 3, "words": 6}));
    assert_eq!(results["report.summary"], json!("3 greetings counted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeriac_submit_waits_and_shows_failures_retries_and_skips() {
    let c = cluster("flow-failing").await;
    let output = Command::new(celeriac_cli())
        .args(["submit", "--wait", "--timeout", "60s", "--json"])
        .arg(example("failing.yaml"))
        .args(["--namespace", &c.ns])
        .env("AMQP_ADDR", &broker().await.url)
        .env("REDIS_URL", &redis().await.url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("failed: broken"), "{stderr}");
    let status: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(status["state"], "failed");
    let nodes: BTreeMap<String, (Value, Value)> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                (n["progress"].clone(), n["attempts"].clone()),
            )
        })
        .collect();
    assert_eq!(nodes["flaky"], (json!("succeeded"), json!(2)));
    assert_eq!(nodes["broken"], (json!("failed"), json!(2)));
    assert_eq!(nodes["notify"], (json!("skipped"), json!(0)));
    assert_eq!(nodes["archive"], (json!("skipped"), json!(0)));
    assert_eq!(nodes["independent"], (json!("succeeded"), json!(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeriac_submit_prints_the_workflow_id() {
    let c = cluster("flow-submit-id").await;
    let output = Command::new(celeriac_cli())
        .arg("submit")
        .arg(example("hello.yaml"))
        .args(["--namespace", &c.ns])
        .env("AMQP_ADDR", &broker().await.url)
        .env("REDIS_URL", &redis().await.url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id: TaskId = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    let handle = c.producer.workflow(id).unwrap();
    handle.wait(WAIT).await.unwrap();
    let status = handle.status().await.unwrap().unwrap();
    assert_eq!(status.workflow.state, WorkflowState::Succeeded);
    assert_eq!(status.nodes.len(), 9);
}

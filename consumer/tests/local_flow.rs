//! YAML workflows run in-process, and the events a run reports.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use celeriac_consumer::exec::ExecConfig;
use celeriac_consumer::local::{FlowOptions, LocalEvent, LocalEventKind};
use celeriac_consumer::{LocalError, LocalScheduler, LocalTask, TaskError, TaskStatus};
use celeriac_producer::flow::Flow;
use serde_json::json;
use tokio::sync::mpsc;

async fn drain(mut events: mpsc::UnboundedReceiver<LocalEvent>) -> Vec<LocalEvent> {
    let mut all = Vec::new();
    while let Some(event) = events.recv().await {
        all.push(event);
    }
    all
}

/// Each task's events, as short strings.
fn by_task(events: &[LocalEvent]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for e in events {
        let text = match &e.kind {
            LocalEventKind::Started { attempt } => format!("started {attempt}"),
            LocalEventKind::Retrying { attempt, error } => {
                format!("retrying {attempt} {}", error.kind())
            }
            LocalEventKind::Succeeded { attempts } => format!("succeeded {attempts}"),
            LocalEventKind::Failed { attempts, error } => {
                format!("failed {attempts} {}", error.kind())
            }
            LocalEventKind::Skipped { error } => format!("skipped {}", error.kind()),
            other => format!("{other:?}"),
        };
        out.entry(e.task.to_string()).or_default().push(text);
    }
    out
}

#[tokio::test]
async fn every_state_change_is_reported_in_order() {
    let mut dag = LocalScheduler::with_max_workers(2);
    dag.add_task("a", LocalTask::blocking(|_| Ok::<_, TaskError>(1)), &[], 0)
        .unwrap();
    dag.add_task(
        "flaky",
        LocalTask::blocking(|ctx| {
            if ctx.attempt() == 1 {
                Err(TaskError::new("Flaky", "first attempt fails"))
            } else {
                Ok(2)
            }
        }),
        &["a"],
        1,
    )
    .unwrap();
    dag.add_task(
        "broken",
        LocalTask::blocking(|_| Err::<(), _>(TaskError::new("Broken", "always"))),
        &[],
        1,
    )
    .unwrap();
    dag.add_task(
        "after",
        LocalTask::blocking(|_| Ok::<_, TaskError>(())),
        &["broken"],
        0,
    )
    .unwrap();
    dag.add_task(
        "later",
        LocalTask::blocking(|_| Ok::<_, TaskError>(())),
        &["after"],
        0,
    )
    .unwrap();
    let events = dag.events();
    let results = dag.run().await.unwrap();
    let events = drain(events).await;
    let seen = by_task(&events);
    assert_eq!(seen["a"], ["started 1", "succeeded 1"]);
    assert_eq!(
        seen["flaky"],
        ["started 1", "retrying 1 Flaky", "started 2", "succeeded 2"]
    );
    assert_eq!(
        seen["broken"],
        [
            "started 1",
            "retrying 1 Broken",
            "started 2",
            "failed 2 Broken"
        ]
    );
    assert_eq!(seen["after"], ["skipped DependencyFailed"]);
    assert_eq!(seen["later"], ["skipped DependencyFailed"]);
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(results["flaky"].attempts, 2);
}

#[tokio::test]
async fn cancelled_tasks_are_reported_skipped() {
    let mut dag = LocalScheduler::new();
    dag.add_task("a", LocalTask::blocking(|_| Ok::<_, TaskError>(())), &[], 0)
        .unwrap();
    dag.add_task(
        "b",
        LocalTask::blocking(|_| Ok::<_, TaskError>(())),
        &["a"],
        0,
    )
    .unwrap();
    dag.cancel_handle().cancel("a");
    let events = dag.events();
    dag.run().await.unwrap();
    let seen = by_task(&drain(events).await);
    assert_eq!(seen["a"], ["skipped Cancelled"]);
    assert_eq!(seen["b"], ["skipped Cancelled"]);
}

#[tokio::test]
async fn without_a_listener_nothing_is_reported_and_the_run_is_the_same() {
    let mut dag = LocalScheduler::new();
    dag.add_task("a", LocalTask::blocking(|_| Ok::<_, TaskError>(5)), &[], 0)
        .unwrap();
    let events = dag.events();
    drop(events);
    let results = dag.run().await.unwrap();
    assert_eq!(results["a"].result, Some(json!(5)));
}

const FLOW: &str = r#"
name: mixed
tasks:
  numbers:
    run: [sh, -c, 'echo "[1, 2, 3]"']
  total:
    needs: [numbers]
    run: [python3, -c, "import json,sys; d=json.load(sys.stdin); print(sum(d['numbers']))"]
  greeting:
    task: celeriac.echo
    input: {hello: world}
  pipeline:
    needs: [total]
    sequence:
      - double: {run: [python3, -c, "import json,sys; print(json.load(sys.stdin)['total'] * 2)"]}
      - echo: {task: celeriac.echo}
  tree:
    task: celeriac.echo
    subtasks:
      left: {run: [sh, -c, 'echo left']}
      right: {run: [sh, -c, 'cat'], needs: [left]}
"#;

#[tokio::test]
async fn a_flow_runs_programs_and_handlers_with_the_input_rule() {
    let flow = Flow::parse(FLOW, "mixed.yaml").unwrap();
    let results = LocalScheduler::from_flow(&flow, FlowOptions::new())
        .unwrap()
        .run()
        .await
        .unwrap();
    for (id, r) in &results {
        assert_eq!(r.status, TaskStatus::Success, "{id}: {r:?}");
    }
    assert_eq!(results["numbers"].result, Some(json!([1, 2, 3])));
    assert_eq!(results["total"].result, Some(json!(6)));
    assert_eq!(results["greeting"].result, Some(json!({"hello": "world"})));
    assert_eq!(results["pipeline.double"].result, Some(json!(12)));
    // A step after the first gets the previous step's result as is.
    assert_eq!(results["pipeline.echo"].result, Some(json!(12)));
    // `right` needs `left`: it reads {"tree.left": "left"} on stdin.
    assert_eq!(
        results["tree.right"].result,
        Some(json!({"tree.left": "left"}))
    );
    assert_eq!(
        results["tree"].result,
        Some(json!({"tree.left": "left", "tree.right": {"tree.left": "left"}}))
    );
}

#[tokio::test]
async fn failures_retry_and_skip_dependents() {
    let flow = Flow::parse(
        r#"
name: failing
tasks:
  bad: {run: [sh, -c, 'echo oops >&2; exit 3'], retries: 1}
  after: {task: celeriac.echo, needs: [bad]}
  fine: {task: celeriac.noop}
"#,
        "failing.yaml",
    )
    .unwrap();
    let results = LocalScheduler::from_flow(&flow, FlowOptions::new())
        .unwrap()
        .run()
        .await
        .unwrap();
    let bad = &results["bad"];
    assert_eq!(bad.status, TaskStatus::Failed);
    assert_eq!(bad.attempts, 2);
    let error = bad.error.as_ref().unwrap();
    assert_eq!(error.kind(), "ExitStatus");
    assert!(error.message().contains("oops"), "{error}");
    assert_eq!(results["after"].status, TaskStatus::Skipped);
    assert_eq!(results["fine"].status, TaskStatus::Success);
}

#[tokio::test]
async fn time_limits_apply_to_programs_and_handlers() {
    let flow = Flow::parse(
        r#"
name: slow
tasks:
  program: {run: [sleep, "30"], timeout: 0.3}
  handler: {task: celeriac.sleep, input: {ms: 30000}, timeout: 0.3}
"#,
        "slow.yaml",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let results = LocalScheduler::from_flow(&flow, FlowOptions::new())
        .unwrap()
        .run()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    for id in ["program", "handler"] {
        let r = &results[id];
        assert_eq!(r.status, TaskStatus::Failed, "{id}");
        assert_eq!(
            r.error.as_ref().map(|e| e.kind()),
            Some("TimeLimitExceeded"),
            "{id}"
        );
    }
}

#[tokio::test]
async fn the_allowlist_and_the_registry_are_honoured() {
    let flow = Flow::parse(
        "name: n\ntasks:\n  a: {run: [sh, -c, 'echo hi']}\n  b: {run: [true]}\n",
        "n.yaml",
    )
    .unwrap();
    let options = FlowOptions::new().exec(ExecConfig::new().allow("true"));
    let results = LocalScheduler::from_flow(&flow, options)
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(
        results["a"].error.as_ref().map(|e| e.kind()),
        Some("Forbidden")
    );
    assert_eq!(results["a"].attempts, 1);
    assert_eq!(results["b"].status, TaskStatus::Success);

    let flow = Flow::parse("name: n\ntasks:\n  a: {task: no.such.task}\n", "n.yaml").unwrap();
    let err = LocalScheduler::from_flow(&flow, FlowOptions::new()).unwrap_err();
    assert!(
        matches!(&err, LocalError::UnknownHandler { task, handler, .. } if task == "a" && handler == "no.such.task"),
        "{err}"
    );
    assert!(err.to_string().contains("celeriac.echo"), "{err}");
}

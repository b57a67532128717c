//! Delay tolerance in the in-process scheduler (SPEC.md section 19.8):
//! urgent tasks first, then the earliest deadline; starts after the
//! deadline are reported.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_consumer::{LocalScheduler, LocalTask, TaskError, TaskOptions};

/// A task that records its id in `order`, then sleeps `ms`.
fn recording(order: &Arc<Mutex<Vec<&'static str>>>, id: &'static str, ms: u64) -> LocalTask {
    let order = order.clone();
    LocalTask::new(move |_ctx| {
        let order = order.clone();
        async move {
            order.lock().unwrap().push(id);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, TaskError>(id)
        }
    })
}

#[tokio::test]
async fn urgent_tasks_start_first_then_the_earliest_deadline() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut dag = LocalScheduler::with_max_workers(1);
    let tasks: [(&str, Option<u64>); 5] = [
        ("lazy", Some(60_000)),
        ("urgent-1", None),
        ("soon", Some(5_000)),
        ("urgent-2", None),
        ("later", Some(30_000)),
    ];
    for (id, tolerance) in tasks {
        let mut options = TaskOptions::new();
        if let Some(ms) = tolerance {
            options = options.tolerance(Duration::from_millis(ms));
        }
        dag.add_task_with(id, recording(&order, id, 1), options)
            .unwrap();
    }
    let results = dag.run().await.unwrap();
    assert!(results.values().all(|r| r.is_success()));
    assert!(results.values().all(|r| !r.deadline_missed), "{results:?}");
    assert_eq!(
        *order.lock().unwrap(),
        ["urgent-1", "urgent-2", "soon", "later", "lazy"]
    );
}

#[tokio::test]
async fn a_task_started_after_its_deadline_is_reported() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut dag = LocalScheduler::with_max_workers(1);
    dag.add_task_with("busy", recording(&order, "busy", 150), TaskOptions::new())
        .unwrap();
    dag.add_task_with(
        "tight",
        recording(&order, "tight", 1),
        TaskOptions::new().tolerance(Duration::from_millis(20)),
    )
    .unwrap();
    dag.add_task_with(
        "loose",
        recording(&order, "loose", 1),
        TaskOptions::new().tolerance(Duration::from_secs(60)),
    )
    .unwrap();
    // Ready once `busy` succeeded: its deadline counts from then.
    dag.add_task_with(
        "after",
        recording(&order, "after", 1),
        TaskOptions::new()
            .depends_on(["busy"])
            .tolerance(Duration::from_secs(60)),
    )
    .unwrap();
    let results = dag.run().await.unwrap();
    assert_eq!(order.lock().unwrap()[0], "busy");
    assert!(results["tight"].is_success());
    assert!(results["tight"].deadline_missed, "{:?}", results["tight"]);
    assert!(!results["loose"].deadline_missed);
    assert!(!results["after"].deadline_missed);
    assert!(!results["busy"].deadline_missed);
    let missed: Vec<&String> = results
        .iter()
        .filter(|(_, r)| r.deadline_missed)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(missed, ["tight"]);
    let json = serde_json::to_value(&results["tight"]).unwrap();
    assert_eq!(json["deadline_missed"], true);
    let json = serde_json::to_value(&results["loose"]).unwrap();
    assert!(json.get("deadline_missed").is_none(), "{json}");
}

#[tokio::test]
async fn a_flow_file_carries_its_tolerance_into_the_scheduler() {
    let text = "name: t\ndefaults: {tolerance: 60}\ntasks:\n  \
                a: {task: celeriac.echo, input: 1}\n  \
                b: {task: celeriac.echo, input: 2, tolerance: 0.5}\n";
    let flow = celeriac_producer::flow::Flow::parse(text, "t.yaml").unwrap();
    let tolerances: Vec<Option<Duration>> = flow.tasks().iter().map(|t| t.tolerance).collect();
    assert_eq!(
        tolerances,
        [
            Some(Duration::from_secs(60)),
            Some(Duration::from_millis(500))
        ]
    );
    assert_eq!(flow.tasks()[1].node().tolerance_ms, Some(500));
    let options = celeriac_consumer::local::FlowOptions::new();
    let results = LocalScheduler::from_flow(&flow, options)
        .unwrap()
        .run()
        .await
        .unwrap();
    assert!(results
        .values()
        .all(|r| r.is_success() && !r.deadline_missed));
}

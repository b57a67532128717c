//! Building the graph: refusals before anything runs, and results
//! flowing along its edges.

use super::*;

#[tokio::test]
async fn empty_dag_yields_an_empty_map() {
    let results = run(LocalScheduler::new()).await;
    assert!(results.is_empty());
}

#[tokio::test]
async fn single_task() {
    let mut s = LocalScheduler::new();
    s.add_task("only", ok(json!({"x": 1})), &[], 0).unwrap();
    let results = run(s).await;
    assert_eq!(results.len(), 1);
    assert_outcome(&results, "only", TaskStatus::Success, 1);
    assert_eq!(results["only"].result, Some(json!({"x": 1})));
    assert_eq!(results["only"].error, None);
}

#[tokio::test]
async fn default_pool_is_four_workers() {
    assert_eq!(LocalScheduler::new().max_workers(), 4);
    assert_eq!(LocalScheduler::default().max_workers(), 4);
}

#[tokio::test]
async fn duplicate_id_is_refused() {
    let mut s = LocalScheduler::new();
    s.add_task("a", ok(json!(1)), &[], 0).unwrap();
    let err = s.add_task("a", ok(json!(2)), &[], 0).unwrap_err();
    assert_eq!(err, LocalError::DuplicateTask { id: "a".into() });
    assert!(err.to_string().contains("`a`"), "{err}");
    let err = s
        .add_task_with("a", ok(json!(3)), TaskOptions::new())
        .unwrap_err();
    assert_eq!(err, LocalError::DuplicateTask { id: "a".into() });
    assert_eq!(s.len(), 1);
}

#[tokio::test]
async fn cycle_is_refused_by_name_before_anything_runs() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut s = LocalScheduler::new();
    s.add_task("e", counted(&ran), &[], 0).unwrap();
    s.add_task("a", counted(&ran), &["c"], 0).unwrap();
    s.add_task("b", counted(&ran), &["a"], 0).unwrap();
    s.add_task("c", counted(&ran), &["b"], 0).unwrap();
    let err = s.run().await.unwrap_err();
    assert_eq!(
        err,
        LocalError::Graph(DagError::Cycle {
            path: vec!["a".into(), "b".into(), "c".into()]
        })
    );
    assert!(err.to_string().contains("a -> b -> c -> a"), "{err}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn missing_dependency_is_refused_by_name_before_anything_runs() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut s = LocalScheduler::new();
    s.add_task("a", counted(&ran), &[], 0).unwrap();
    s.add_task("b", counted(&ran), &["a", "ghost"], 0).unwrap();
    let err = s.run().await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`b`") && msg.contains("`ghost`"), "{msg}");
    assert_eq!(
        err,
        LocalError::Graph(DagError::UnknownDependency {
            node: "b".into(),
            dependency: "ghost".into()
        })
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn results_flow_to_dependents_by_name() {
    let mut s = LocalScheduler::new();
    s.add_task("a", ok(json!(1)), &[], 0).unwrap();
    s.add_task("b", ok(json!("bee")), &[], 0).unwrap();
    s.add_task(
        "join",
        LocalTask::new(|ctx| async move {
            assert_eq!(ctx.inputs().len(), 2);
            assert_eq!(ctx.input("missing"), None);
            Ok::<_, TaskError>(json!({
                "a": ctx.input("a").cloned(),
                "order": ctx.inputs().map(|(id, _)| id.to_owned()).collect::<Vec<_>>(),
                "all": ctx.inputs_object(),
            }))
        }),
        &["b", "a"],
        0,
    )
    .unwrap();
    let results = run(s).await;
    assert_eq!(
        results["join"].result,
        Some(json!({"a": 1, "order": ["b", "a"], "all": {"a": 1, "b": "bee"}}))
    );
}

#[tokio::test]
async fn diamond_sums_through_its_edges() {
    let mut s = LocalScheduler::new();
    s.add_task("d", sum_plus_one(), &["b", "c"], 0).unwrap();
    s.add_task("b", sum_plus_one(), &["a"], 0).unwrap();
    s.add_task("c", sum_plus_one(), &["a"], 0).unwrap();
    s.add_task("a", sum_plus_one(), &[], 0).unwrap();
    s.add_task("e", sum_plus_one(), &[], 0).unwrap();
    let results = run(s).await;
    let values: HashMap<&str, Option<i64>> = results
        .iter()
        .map(|(id, r)| (id.as_str(), r.result.as_ref().and_then(Value::as_i64)))
        .collect();
    assert_eq!(
        values,
        HashMap::from([
            ("a", Some(1)),
            ("b", Some(2)),
            ("c", Some(2)),
            ("d", Some(5)),
            ("e", Some(1))
        ])
    );
}

#[tokio::test]
async fn results_serialize_as_json() {
    let mut s = LocalScheduler::new();
    s.add_task("a", failing("Broken"), &[], 0).unwrap();
    s.add_task("b", ok(json!([1, 2])), &[], 0).unwrap();
    let results = run(s).await;
    assert_eq!(
        serde_json::to_value(&results["a"]).unwrap(),
        json!({"status": "failed", "result": null, "attempts": 1,
               "error": {"kind": "Broken", "message": "a failed on attempt 1"}})
    );
    assert_eq!(
        serde_json::to_value(&results["b"]).unwrap(),
        json!({"status": "success", "result": [1, 2], "attempts": 1, "error": null})
    );
    assert_eq!(TaskStatus::Skipped.to_string(), "skipped");
}

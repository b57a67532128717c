//! `tolerance:` in workflow files: inherited like the other settings,
//! carried into the cluster node, and refused when zero, negative, too
//! long or not a number.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use celeriac_producer::flow::Flow;

fn flow(tasks: &str) -> Result<Flow, celeriac_producer::flow::FlowError> {
    Flow::parse(&format!("name: t\n{tasks}"), "t.yaml")
}

#[test]
fn tolerance_is_inherited_and_reaches_the_node() {
    let parsed = flow(
        "defaults: {tolerance: 120}\ntasks:\n  \
         a: {task: celeriac.echo}\n  \
         b: {task: celeriac.echo, tolerance: 1.5}\n",
    )
    .unwrap();
    let tasks = parsed.tasks();
    assert_eq!(tasks[0].tolerance, Some(Duration::from_secs(120)));
    assert_eq!(tasks[1].tolerance, Some(Duration::from_millis(1_500)));
    assert_eq!(tasks[0].node().tolerance_ms, Some(120_000));
    assert_eq!(tasks[1].node().tolerance_ms, Some(1_500));
    let without = flow("tasks:\n  a: {task: celeriac.echo}\n").unwrap();
    assert_eq!(without.tasks()[0].node().tolerance_ms, None);
}

#[test]
fn bad_tolerances_are_refused_with_the_key_named() {
    for (value, expected) in [
        ("0", "at least 1 ms"),
        ("-5", "positive number of seconds"),
        ("1e12", "longest supported tolerance"),
        ("soon", "a number of seconds"),
        (".nan", "positive number of seconds"),
    ] {
        let err = flow(&format!(
            "tasks:\n  a: {{task: celeriac.echo, tolerance: {value}}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("tolerance"), "{value}: {err}");
        assert!(err.contains(expected), "{value}: {err}");
    }
}

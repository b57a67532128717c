//! Every error of the flow reader, with its place: unreadable files,
//! syntax, top-level keys, tasks, needs, cycles and schedules.

use super::*;

#[test]
fn unreadable_files_say_so() {
    let err = Flow::from_path("/nonexistent/flow.yaml").unwrap_err();
    assert!(err.is_read_error());
    assert_eq!(err.line(), None);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/flow.yaml: cannot read the file:"),
        "{err}"
    );
}

#[test]
fn syntax_errors_have_a_place() {
    let err = error("name: n\ntasks: [a, b\n", 3, 1, "");
    assert!(matches!(err.kind(), FlowErrorKind::Syntax { .. }), "{err}");
    let err = error("name: n\nname: m\ntasks: {}\n", 2, 1, "");
    assert!(err.to_string().contains("duplicated key"), "{err}");
    error("", 1, 1, "");
    let err = error("name: n\ntasks: {a: {task: t}}\n---\nname: m\n", 4, 1, "");
    assert!(err.to_string().contains("one YAML document"), "{err}");
}

#[test]
fn top_level_errors() {
    let err = error("tasks: {a: {task: t}}\n", 1, 1, "");
    assert_eq!(err.to_string(), "flow.yaml:1:1: missing key \"name\"");
    error("name: n\n", 1, 1, "");
    let err = error("name: [n]\ntasks: {a: {task: t}}\n", 1, 7, "name");
    assert_eq!(
        err.to_string(),
        "flow.yaml:1:7: name: expected a string, found a list"
    );
    error("name: a b\ntasks: {a: {task: t}}\n", 1, 7, "name");
    let err = error("name: n\ntask: {a: {task: t}}\n", 2, 1, "");
    assert_eq!(
        err.to_string(),
        "flow.yaml:2:1: unknown key \"task\" (did you mean \"tasks\"?)"
    );
    error("name: n\ntasks: {}\n", 2, 8, "tasks");
    error("name: n\ntasks: [a]\n", 2, 8, "tasks");
    error(
        "name: n\noverlap: never\ntasks: {a: {task: t}}\n",
        2,
        10,
        "overlap",
    );
    error(
        "name: n\ndefaults: {retries: 1, timeot: 3}\ntasks: {a: {task: t}}\n",
        2,
        24,
        "defaults",
    );
    error("- a\n- b\n", 1, 1, "");
}

#[test]
fn task_errors() {
    // No kind, two kinds.
    let err = error("name: n\ntasks:\n  a: {needs: []}\n", 3, 6, "tasks.a");
    assert!(err.to_string().contains("needs one of `run`"), "{err}");
    let err = error(
        "name: n\ntasks:\n  a: {run: x, task: y}\n",
        3,
        15,
        "tasks.a",
    );
    assert!(
        err.to_string()
            .contains("`run` and `task` cannot be used together"),
        "{err}"
    );
    // A task that is not a mapping.
    let err = error("name: n\ntasks:\n  a: run\n", 3, 6, "tasks.a");
    assert_eq!(
        err.to_string(),
        "flow.yaml:3:6: tasks.a: expected a mapping (the task's settings), found a string"
    );
    // Bad names.
    error("name: n\ntasks:\n  a.b: {task: t}\n", 3, 3, "tasks");
    error("name: n\ntasks:\n  [a]: {task: t}\n", 3, 3, "tasks");
    // Unknown keys, at every depth.
    let err = error(
        "name: n\ntasks:\n  a:\n    task: t\n    subtasks:\n      b: {task: t, neds: [c]}\n",
        6,
        20,
        "tasks.a.subtasks.b",
    );
    assert_eq!(
        err.to_string(),
        "flow.yaml:6:20: tasks.a.subtasks.b: unknown key \"neds\" (did you mean \"needs\"?)"
    );
    error(
        "name: n\ntasks:\n  s:\n    sequence:\n      - a: {task: t, colour: red}\n",
        5,
        22,
        "tasks.s.sequence[0].a",
    );
    // Keys that do not go with the kind.
    let err = error(
        "name: n\ntasks:\n  a: {task: t, env: {A: b}}\n",
        3,
        16,
        "tasks.a",
    );
    assert!(
        err.to_string().contains("only applies to a `run` task"),
        "{err}"
    );
    let err = error(
        "name: n\ntasks:\n  s:\n    input: 1\n    parallel: {a: {task: t}}\n",
        4,
        5,
        "tasks.s",
    );
    assert!(
        err.to_string().contains("not allowed on a parallel block"),
        "{err}"
    );
    // Values.
    error("name: n\ntasks:\n  a: {run: []}\n", 3, 12, "tasks.a.run");
    error(
        "name: n\ntasks:\n  a: {run: {x: 1}}\n",
        3,
        12,
        "tasks.a.run",
    );
    error(
        "name: n\ntasks:\n  a: {run: [x, [y]]}\n",
        3,
        16,
        "tasks.a.run",
    );
    error(
        "name: n\ntasks:\n  a: {run: x, format: xml}\n",
        3,
        23,
        "tasks.a.format",
    );
    error(
        "name: n\ntasks:\n  a: {run: x, env: [A]}\n",
        3,
        20,
        "tasks.a.env",
    );
    error(
        "name: n\ntasks:\n  a: {run: x, env: {A: [1]}}\n",
        3,
        24,
        "tasks.a.env.A",
    );
    error(
        "name: n\ntasks:\n  a: {task: t, retries: -1}\n",
        3,
        25,
        "tasks.a.retries",
    );
    error(
        "name: n\ntasks:\n  a: {task: t, retries: two}\n",
        3,
        25,
        "tasks.a.retries",
    );
    error(
        "name: n\ntasks:\n  a: {task: t, timeout: 0}\n",
        3,
        25,
        "tasks.a.timeout",
    );
    error(
        "name: n\ntasks:\n  a: {task: t, timeout: 10s}\n",
        3,
        25,
        "tasks.a.timeout",
    );
    let err = error(
        "name: n\ntasks:\n  a: {task: t, timeout: 5, soft_timeout: 5}\n",
        3,
        28,
        "tasks.a.soft_timeout",
    );
    assert!(err.to_string().contains("must be shorter"), "{err}");
    error(
        "name: n\ntasks:\n  a: {task: 'x y'}\n",
        3,
        13,
        "tasks.a.task",
    );
    error(
        "name: n\ntasks:\n  a: {task: t, queue: ''}\n",
        3,
        23,
        "tasks.a.queue",
    );
    error(
        "name: n\ntasks:\n  a: {task: t, needs: {b: 1}}\n",
        3,
        23,
        "tasks.a.needs",
    );
    // Empty blocks and bad steps.
    error(
        "name: n\ntasks:\n  s: {sequence: []}\n",
        3,
        17,
        "tasks.s.sequence",
    );
    error(
        "name: n\ntasks:\n  s: {parallel: {}}\n",
        3,
        17,
        "tasks.s.parallel",
    );
    error(
        "name: n\ntasks:\n  s: {task: t, subtasks: {}}\n",
        3,
        26,
        "tasks.s.subtasks",
    );
    let err = error(
        "name: n\ntasks:\n  s:\n    sequence:\n      - {a: {task: t}, b: {task: t}}\n",
        5,
        9,
        "tasks.s.sequence[0]",
    );
    assert!(
        err.to_string().contains("a step is a mapping with one key"),
        "{err}"
    );
    error(
        "name: n\ntasks:\n  s:\n    sequence:\n      - a: {task: t}\n      - a: {task: t}\n",
        6,
        9,
        "tasks.s.sequence[1]",
    );
}

#[test]
fn needs_errors() {
    let err = error(
        "name: n\ntasks:\n  count: {task: t}\n  report:\n    task: t\n    needs: [cnt]\n",
        6,
        13,
        "tasks.report.needs",
    );
    assert_eq!(
        err.to_string(),
        "flow.yaml:6:13: tasks.report.needs: unknown task \"cnt\""
    );
    assert_eq!(
        err.kind(),
        &FlowErrorKind::UnknownTask { name: "cnt".into() }
    );
    // A subtask's sibling name is not visible from outside.
    error(
        "name: n\ntasks:\n  p:\n    task: t\n    subtasks: {c: {task: t}}\n  q: {task: t, needs: [c]}\n",
        6,
        24,
        "tasks.q.needs",
    );
    let err = error(
        "name: n\ntasks:\n  a: {task: t, needs: a}\n",
        3,
        23,
        "tasks.a.needs",
    );
    assert!(err.to_string().contains("cannot need itself"), "{err}");
    let err = error(
        "name: n\ntasks:\n  p:\n    task: t\n    subtasks:\n      c: {task: t, needs: [p]}\n",
        6,
        28,
        "tasks.p.subtasks.c.needs",
    );
    assert!(err.to_string().contains("which contains it"), "{err}");
    let err = error(
        "name: n\ntasks:\n  s:\n    needs: [s.a]\n    sequence:\n      - a: {task: t}\n",
        4,
        13,
        "tasks.s.needs",
    );
    assert!(err.to_string().contains("which is inside it"), "{err}");
}

#[test]
fn cycles_are_named() {
    let err = error(
        "name: n\ntasks:\n  a: {task: t, needs: [c]}\n  b: {task: t, needs: [a]}\n  c: {task: t, needs: [b]}\n",
        3,
        24,
        "tasks.a.needs",
    );
    assert_eq!(
        err.to_string(),
        "flow.yaml:3:24: tasks.a.needs: the tasks need each other in a cycle: a -> b -> c -> a"
    );
    assert_eq!(
        err.kind(),
        &FlowErrorKind::Cycle {
            path: vec!["a".into(), "b".into(), "c".into()]
        }
    );
    // Through a block: the sequence's steps wait for each other.
    let err = error(
        "name: n\ntasks:\n  s:\n    sequence:\n      - one: {task: t, needs: [two]}\n      - two: {task: t}\n",
        5,
        32,
        "tasks.s.sequence[0].one.needs",
    );
    assert!(matches!(err.kind(), FlowErrorKind::Cycle { .. }), "{err}");
    // Between a subtask and a task that needs its parent.
    let err = error(
        "name: n\ntasks:\n  p:\n    task: t\n    subtasks:\n      c: {task: t, needs: [q]}\n  q: {task: t, needs: [p]}\n",
        7,
        24,
        "tasks.q.needs",
    );
    assert!(
        err.to_string().contains("cycle: p -> q -> p.c -> p"),
        "{err}"
    );
}

#[test]
fn schedule_errors() {
    let err = error(
        "name: n\nschedule: 0.1\ntasks: {a: {task: t}}\n",
        2,
        11,
        "schedule",
    );
    assert!(
        matches!(err.kind(), FlowErrorKind::Schedule { .. }),
        "{err}"
    );
    error(
        "name: n\nschedule: '61 * * * *'\ntasks: {a: {task: t}}\n",
        2,
        11,
        "schedule",
    );
    error(
        "name: n\nschedule: [1]\ntasks: {a: {task: t}}\n",
        2,
        11,
        "schedule",
    );
    // A child scheduled less often than the workflow.
    let err = error(
        "name: n\nschedule: 60\ntasks:\n  a: {task: t, schedule: 3600}\n",
        4,
        26,
        "tasks.a.schedule",
    );
    assert!(
        err.to_string()
            .contains("less often (every 3600s) than the workflow (every 60s)"),
        "{err}"
    );
    // ... than its nearest scheduled ancestor, a block or a parent.
    let err = error(
        "name: n\nschedule: 86400\ntasks:\n  s:\n    schedule: 60\n    parallel:\n      a: {task: t, schedule: '@hourly'}\n",
        7,
        30,
        "tasks.s.parallel.a.schedule",
    );
    assert!(err.to_string().contains("than `s`"), "{err}");
    error(
        "name: n\ntasks:\n  p:\n    task: t\n    schedule: 60\n    subtasks:\n      c: {task: t, schedule: 61}\n",
        7,
        30,
        "tasks.p.subtasks.c.schedule",
    );
    // More often is fine, and so is a child with no scheduled ancestor.
    flow("name: n\nschedule: 3600\ntasks:\n  a: {task: t, schedule: 60}\n  b: {task: t}\n");
    flow("name: n\ntasks:\n  a: {task: t, schedule: 86400}\n");
}

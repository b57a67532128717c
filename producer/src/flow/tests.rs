//! Tests of the flow reader: parsing, every error with its place, blocks,
//! subtasks, inputs, schedules and compiling to the cluster model.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use celeriac_schema::exec::{ExecFormat, ExecInput};
use celeriac_schema::workflow::InputFrom;
use celeriac_schema::TaskId;

use super::*;
use crate::schedule::Overlap;

fn flow(text: &str) -> Flow {
    match Flow::parse(text, "flow.yaml") {
        Ok(flow) => flow,
        Err(e) => panic!("{e}"),
    }
}

/// The error for `text`, checked to be at `line`:`column` under `key`.
#[track_caller]
fn error(text: &str, line: usize, column: usize, key: &str) -> FlowError {
    let err = match Flow::parse(text, "flow.yaml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    };
    assert_eq!(
        (err.line(), err.column(), err.key()),
        (Some(line), Some(column), key),
        "{err}"
    );
    err
}

fn deps(flow: &Flow, id: &str) -> Vec<String> {
    flow.task(id)
        .map(|t| t.dependencies.clone())
        .unwrap_or_else(|| panic!("no task {id}"))
}

fn ids(flow: &Flow) -> Vec<&str> {
    flow.tasks().iter().map(|t| t.id.as_str()).collect()
}

const FULL: &str = r#"
name: report
schedule: 3600
overlap: queue
defaults:
  retries: 1
  timeout: 60
  soft_timeout: 50
  queue: default
tasks:
  fetch:
    run: [python3, fetch.py]
    input: {pages: 3, tags: [a, b], ratio: 0.5, ok: true, none: ~}
    format: msgpack
    env: {KEY: value, N: 3}
    retries: 2
    timeout: 10
    soft_timeout: 2.5
    schedule: 60
  count:
    task: celeriac.echo
    needs: [fetch]
  report:
    run: bash report.sh --fast
    needs: [count]
    subtasks:
      chart: {run: [python3, chart.py]}
      table: {run: [python3, table.py], needs: [chart]}
  publish:
    needs: [report]
    queue: slow
    sequence:
      - upload: {run: [bash, upload.sh]}
      - notify: {run: [bash, notify.sh], queue: fast}
  checks:
    parallel:
      lint: {run: [bash, lint.sh]}
      test: {run: [bash, test.sh]}
"#;

#[test]
fn a_full_file_is_read() {
    let f = flow(FULL);
    assert_eq!(f.name(), "report");
    assert_eq!(f.file(), "flow.yaml");
    assert_eq!(f.overlap(), Overlap::Queue);
    assert_eq!(
        f.schedule().map(Schedule::period),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        ids(&f),
        [
            "fetch",
            "count",
            "report.chart",
            "report.table",
            "report",
            "publish.upload",
            "publish.notify",
            "checks.lint",
            "checks.test"
        ]
    );

    let fetch = f.task("fetch").unwrap();
    let TaskKind::Exec(spec) = &fetch.kind else {
        panic!("fetch is a program")
    };
    assert_eq!(spec.program, "python3");
    assert_eq!(spec.args, ["fetch.py"]);
    assert_eq!(spec.format, ExecFormat::Msgpack);
    assert_eq!(spec.env.get("KEY").map(String::as_str), Some("value"));
    assert_eq!(spec.env.get("N").map(String::as_str), Some("3"));
    assert_eq!(fetch.retries, 2);
    assert_eq!(fetch.timeout, Some(Duration::from_secs(10)));
    assert_eq!(fetch.soft_timeout, Some(Duration::from_millis(2500)));
    assert_eq!(fetch.queue.as_deref(), Some("default"));
    assert_eq!(fetch.position, Position::new(11, 3));
    assert_eq!(
        fetch.schedule.as_ref().map(Schedule::period),
        Some(Duration::from_secs(60))
    );
    let input = fetch.input.clone().unwrap();
    let json = serde_json::to_value(&input).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"pages": 3, "tags": ["a", "b"], "ratio": 0.5, "ok": true, "none": null})
    );

    let count = f.task("count").unwrap();
    assert_eq!(count.kind, TaskKind::Handler("celeriac.echo".into()));
    assert_eq!(count.retries, 1);
    assert_eq!(count.timeout, Some(Duration::from_secs(60)));
    assert_eq!(count.soft_timeout, Some(Duration::from_secs(50)));

    let TaskKind::Exec(report) = &f.task("report").unwrap().kind else {
        panic!("report is a program")
    };
    assert_eq!(report.program, "bash");
    assert_eq!(report.args, ["report.sh", "--fast"]);

    // Block settings are defaults for their members.
    assert_eq!(
        f.task("publish.upload").unwrap().queue.as_deref(),
        Some("slow")
    );
    assert_eq!(
        f.task("publish.notify").unwrap().queue.as_deref(),
        Some("fast")
    );
    assert_eq!(
        f.task("checks.lint").unwrap().queue.as_deref(),
        Some("default")
    );
}

#[test]
fn blocks_and_subtasks_become_edges() {
    let f = flow(FULL);
    assert!(deps(&f, "fetch").is_empty());
    assert_eq!(deps(&f, "count"), ["fetch"]);
    // The parent's needs apply to the parent and its first subtasks.
    assert_eq!(deps(&f, "report.chart"), ["count"]);
    assert_eq!(deps(&f, "report.table"), ["report.chart"]);
    assert_eq!(
        deps(&f, "report"),
        ["report.chart", "report.table", "count"]
    );
    // A sequence: the block's needs on the first step, each step after the
    // one before.
    assert_eq!(deps(&f, "publish.upload"), ["report"]);
    assert_eq!(deps(&f, "publish.notify"), ["publish.upload"]);
    assert!(deps(&f, "checks.lint").is_empty());
    assert!(deps(&f, "checks.test").is_empty());
}

#[test]
fn needing_a_block_means_needing_its_exits() {
    let f = flow(
        r#"
name: n
tasks:
  seq:
    sequence:
      - a: {task: t}
      - b: {task: t}
  par:
    parallel:
      c: {task: t}
      d: {task: t}
  tree:
    task: t
    subtasks:
      e: {task: t}
  after_seq: {task: t, needs: [seq]}
  after_par: {task: t, needs: [par]}
  after_tree: {task: t, needs: [tree]}
  after_step: {task: t, needs: [seq.a, par.d]}
  nested:
    needs: [after_seq]
    sequence:
      - inner:
          parallel:
            x: {task: t}
            y: {task: t}
      - last: {task: t}
"#,
    );
    assert_eq!(deps(&f, "after_seq"), ["seq.b"]);
    assert_eq!(deps(&f, "after_par"), ["par.c", "par.d"]);
    assert_eq!(deps(&f, "after_tree"), ["tree"]);
    assert_eq!(deps(&f, "after_step"), ["seq.a", "par.d"]);
    assert_eq!(deps(&f, "nested.inner.x"), ["after_seq"]);
    assert_eq!(deps(&f, "nested.inner.y"), ["after_seq"]);
    assert_eq!(
        deps(&f, "nested.last"),
        ["nested.inner.x", "nested.inner.y"]
    );
    assert!(f.workflow(TaskId::new()).validate().is_ok());
}

#[test]
fn members_that_need_a_sibling_wait_for_it_not_for_the_block() {
    let f = flow(
        r#"
name: n
tasks:
  first: {task: t}
  par:
    needs: [first]
    parallel:
      a: {task: t}
      b: {task: t, needs: [a]}
"#,
    );
    assert_eq!(deps(&f, "par.a"), ["first"]);
    assert_eq!(deps(&f, "par.b"), ["par.a"]);
}

#[test]
fn inputs_follow_the_rules() {
    let f = flow(
        r#"
name: n
tasks:
  root: {task: t}
  given: {task: t, needs: [root], input: [1, 2]}
  byname: {task: t, needs: [root, given]}
  seq:
    needs: [root]
    sequence:
      - one: {task: t}
      - two: {task: t}
      - three: {task: t, input: fixed}
      - four: {task: t, needs: [byname]}
      - fan:
          parallel:
            p: {task: t}
            q: {task: t}
      - five: {task: t}
"#,
    );
    let from = |id: &str| f.task(id).map(|t| t.input_from);
    assert_eq!(from("root"), Some(InputFrom::Given));
    assert_eq!(f.task("root").and_then(|t| t.input.clone()), None);
    assert_eq!(from("given"), Some(InputFrom::Given));
    assert_eq!(from("byname"), Some(InputFrom::ByName));
    // The first step takes the block's needs by name.
    assert_eq!(from("seq.one"), Some(InputFrom::ByName));
    assert_eq!(from("seq.two"), Some(InputFrom::Result));
    assert_eq!(from("seq.three"), Some(InputFrom::Given));
    // A step with needs of its own has more than the previous result.
    assert_eq!(from("seq.four"), Some(InputFrom::ByName));
    assert_eq!(deps(&f, "seq.four"), ["seq.three", "byname"]);
    assert_eq!(from("seq.fan.p"), Some(InputFrom::Result));
    // After a parallel step there are several results: by name.
    assert_eq!(from("seq.five"), Some(InputFrom::ByName));
    assert!(f.workflow(TaskId::new()).validate().is_ok());
}

#[test]
fn compiles_to_the_cluster_model() {
    let f = flow(FULL);
    let id = TaskId::new();
    let wf = f.workflow(id);
    assert_eq!(wf.id, id);
    assert_eq!(wf.nodes.len(), 9);
    assert!(wf.validate().is_ok());

    let fetch = wf.node("fetch").unwrap();
    assert_eq!(fetch.task, "celeriac.exec");
    assert_eq!(fetch.retry.map(|r| r.max_retries), Some(2));
    assert_eq!(fetch.hard_time_limit_ms, Some(10_000));
    assert_eq!(fetch.soft_time_limit_ms, Some(2_500));
    assert_eq!(fetch.queue.as_deref(), Some("default"));
    let envelope = fetch.envelope(id, fetch.input.clone());
    let input: ExecInput = celeriac_schema::from_value(&envelope.input, "input").unwrap();
    assert_eq!(input.spec.program, "python3");
    assert_eq!(input.spec.format, ExecFormat::Msgpack);

    let count = wf.node("count").unwrap();
    assert_eq!(count.task, "celeriac.echo");
    assert!(count.exec.is_none());
    assert_eq!(count.dependencies, ["fetch"]);
    assert_eq!(count.input_from, InputFrom::ByName);
    assert_eq!(
        wf.node("publish.notify").unwrap().input_from,
        InputFrom::Result
    );
}

#[test]
fn scheduled_entries_run_with_what_they_need() {
    let f = flow(FULL);
    let scheduled = f.scheduled();
    assert_eq!(scheduled.len(), 2);
    assert_eq!(scheduled[0].entry, None);
    assert_eq!(scheduled[0].schedule.period(), Duration::from_secs(3600));
    assert_eq!(scheduled[1].entry.as_deref(), Some("fetch"));
    assert_eq!(scheduled[1].overlap, Overlap::Queue);

    let node_ids = |entry: &str| -> Vec<String> {
        let wf = f.workflow_for(Some(entry), TaskId::new()).unwrap();
        assert!(wf.validate().is_ok(), "{entry}");
        wf.nodes.into_iter().map(|n| n.id).collect()
    };
    assert_eq!(node_ids("fetch"), ["fetch"]);
    assert_eq!(
        node_ids("report"),
        ["fetch", "count", "report.chart", "report.table", "report"]
    );
    assert_eq!(
        node_ids("report.table"),
        ["fetch", "count", "report.chart", "report.table"]
    );
    assert_eq!(node_ids("checks"), ["checks.lint", "checks.test"]);
    assert_eq!(f.workflow_for(None, TaskId::new()).unwrap().nodes.len(), 9);
    assert!(f.workflow_for(Some("repo"), TaskId::new()).is_none());
    assert!(f.workflow_for(Some("report.c"), TaskId::new()).is_none());
}

#[test]
fn cron_and_interval_schedules() {
    let f = flow(
        r#"
name: n
schedule: "0 * * * *"
tasks:
  a: {task: t, schedule: "*/5 * * * *"}
  b: {task: t, schedule: 1.5}
  c: {task: t, schedule: "120"}
"#,
    );
    let periods: Vec<Duration> = f.scheduled().iter().map(|s| s.schedule.period()).collect();
    assert_eq!(
        periods,
        [
            Duration::from_secs(3600),
            Duration::from_secs(300),
            Duration::from_millis(1500),
            Duration::from_secs(120)
        ]
    );
}

#[test]
fn program_paths_resolve_against_the_file_directory() {
    let dir = std::env::temp_dir().join(format!("celeriac-flow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("script.py"), "print(1)").unwrap();
    std::fs::write(
        dir.join("f.yaml"),
        "name: n\ntasks:\n  a: {run: [python3, script.py, missing.py, -x]}\n  b: {run: ./bin/tool}\n  c: {run: [/usr/bin/env, ./script.py]}\n",
    )
    .unwrap();
    let f = Flow::from_path(dir.join("f.yaml")).unwrap();
    let spec = |id: &str| match &f.task(id).unwrap().kind {
        TaskKind::Exec(spec) => spec.clone(),
        TaskKind::Handler(_) => panic!("{id} is a program"),
    };
    let script = dir.join("script.py").to_string_lossy().into_owned();
    assert_eq!(spec("a").program, "python3");
    assert_eq!(spec("a").args, [script.as_str(), "missing.py", "-x"]);
    assert_eq!(
        spec("b").program,
        dir.join("bin/tool").to_string_lossy().into_owned()
    );
    assert_eq!(spec("c").program, "/usr/bin/env");
    assert_eq!(spec("c").args, [script.as_str()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

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

#[test]
fn a_cross_level_soft_limit_that_is_too_long_is_dropped() {
    let f = flow("name: n\ndefaults: {soft_timeout: 50}\ntasks:\n  a: {task: t, timeout: 10}\n  b: {task: t, timeout: 100}\n");
    assert_eq!(f.task("a").unwrap().soft_timeout, None);
    assert_eq!(
        f.task("b").unwrap().soft_timeout,
        Some(Duration::from_secs(50))
    );
}

#[test]
fn anchors_and_tags_are_understood() {
    let f = flow(
        "name: n\ndefaults: {retries: 0}\ntasks:\n  a: &base {task: t, retries: 3}\n  b: *base\n  c: {task: t, input: !!str 12}\n",
    );
    assert_eq!(f.task("b").unwrap().retries, 3);
    assert_eq!(f.task("c").unwrap().input, Some(rmpv::Value::from("12")));
}

#[test]
fn the_examples_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/flows");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let f = Flow::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                f.workflow(TaskId::new()).validate().is_ok(),
                "{}",
                path.display()
            );
        }
    }
}

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

mod errors;

//! `celeriac run --local` as a user runs it: a process, its output and its
//! exit status.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flows")
}

fn celeriac(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        // From elsewhere than the file's directory: paths resolve against it.
        .current_dir(std::env::temp_dir())
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The summary table's row of `node`: its words.
fn row(out: &str, node: &str) -> Vec<String> {
    let after_header = out
        .split("NODE ")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary table in:\n{out}"));
    after_header
        .lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("no row for {node} in:\n{out}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_quick_start_example_succeeds() {
    let file = examples().join("hello.yaml");
    let output = celeriac(&["run", "--local", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let out = stdout(&output);
    for node in [
        "greet",
        "shout",
        "checks.python",
        "checks.bash",
        "report.count",
        "report.summary",
        "report",
        "publish.render",
        "publish.deliver",
    ] {
        let r = row(&out, node);
        assert_eq!(r[1], "success", "{node}: {r:?}");
        assert_eq!(r[2], "1", "{node}: {r:?}");
        // Live lines: it started and it succeeded.
        assert!(
            out.lines()
                .any(|l| l.contains("started") && l.ends_with(node)),
            "{node}"
        );
        assert!(
            out.lines()
                .any(|l| l.contains("succeeded") && l.contains(&format!(" {node} "))),
            "{node}"
        );
    }
    assert!(
        out.contains("hello: 9 succeeded, 0 failed, 0 skipped"),
        "{out}"
    );
    assert!(out.contains("\"delivered_bytes\""), "{out}");
    // Not a terminal, NO_COLOR: no escape sequences.
    assert!(!out.contains('\x1b'));
    // Subtasks ran before their parent, the sequence in order.
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle} not in:\n{out}"))
    };
    assert!(at("succeeded  report.summary") < at("started    report\n"));
    assert!(at("succeeded  report.count") < at("started    report.summary"));
    assert!(at("succeeded  publish.render") < at("started    publish.deliver"));
}

#[test]
fn a_failing_flow_exits_1_with_retries_and_skips() {
    let file = examples().join("failing.yaml");
    let output = celeriac(&["run", "--local", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert_eq!(row(&out, "flaky")[1..3], ["success", "2"]);
    assert_eq!(row(&out, "broken")[1..3], ["failed", "2"]);
    assert_eq!(row(&out, "notify")[1..3], ["skipped", "0"]);
    assert_eq!(row(&out, "archive")[1..3], ["skipped", "0"]);
    assert_eq!(row(&out, "independent")[1..3], ["success", "1"]);
    assert!(out.contains("retrying   flaky"), "{out}");
    assert!(out.contains("connection refused"), "{out}");
    assert!(
        out.contains("failing: 2 succeeded, 1 failed, 2 skipped"),
        "{out}"
    );
}

#[test]
fn json_lines_report_events_results_and_a_summary() {
    let file = examples().join("failing.yaml");
    let output = celeriac(&["run", "--local", "--json", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let results: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "result").collect();
    assert_eq!(results.len(), 5);
    let broken = results.iter().find(|r| r["node"] == "broken").unwrap();
    assert_eq!(broken["status"], "failed");
    assert_eq!(broken["attempts"], 2);
    assert_eq!(broken["error"]["kind"], "ExitStatus");
    let independent = results.iter().find(|r| r["node"] == "independent").unwrap();
    assert_eq!(independent["result"], "still here");
    assert!(lines
        .iter()
        .any(|l| l["type"] == "event" && l["event"] == "retrying" && l["node"] == "flaky"));
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(
        (
            &summary["succeeded"],
            &summary["failed"],
            &summary["skipped"]
        ),
        (&2.into(), &1.into(), &2.into())
    );
}

#[test]
fn an_invalid_file_exits_2_with_its_position() {
    let dir = std::env::temp_dir().join(format!("celeriac-run-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("flow.yaml");
    std::fs::write(
        &file,
        "name: bad\ntasks:\n  count: {task: celeriac.echo}\n  report:\n    run: [bash, report.sh]\n    needs: [cnt]\n",
    )
    .unwrap();
    let output = celeriac(&["run", "--local", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("flow.yaml:6:13: tasks.report.needs: unknown task \"cnt\""),
        "{err}"
    );
    assert!(output.stdout.is_empty());

    // An unknown handler is refused before anything runs.
    std::fs::write(&file, "name: bad\ntasks:\n  a: {task: no.such.handler}\n").unwrap();
    let output = celeriac(&["run", "--local", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no.such.handler"));

    // A missing file.
    let output = celeriac(&["run", "--local", dir.join("nope.yaml").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read the file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_without_local_points_to_submit() {
    let file = examples().join("hello.yaml");
    let output = celeriac(&["run", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("--local") && err.contains("submit"), "{err}");
}

#[test]
fn the_allowlist_restricts_programs() {
    let file = examples().join("hello.yaml");
    let output = celeriac(&[
        "run",
        "--local",
        "--allow",
        "python3",
        file.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert_eq!(row(&out, "greet")[1], "success");
    assert_eq!(row(&out, "checks.bash")[1], "failed");
    assert!(out.contains("Forbidden"), "{out}");
}

#[test]
fn allowlist_patterns_admit_scripts_and_refuse_code() {
    // Canonical: a wildcard never matches a path with a `..` component.
    let dir = examples().canonicalize().unwrap();
    let file = dir.join("hello.yaml");
    let entry = format!("python3 {}/scripts/*.py", dir.display());
    let output = celeriac(&[
        "run",
        "--local",
        "--allow",
        &entry,
        "--allow",
        "bash",
        file.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert_eq!(row(&out, "greet")[1], "success");
    assert_eq!(
        row(&out, "checks.python")[1],
        "failed",
        "python3 -c is refused"
    );
    assert!(out.contains("allowed only as"), "{out}");

    let output = celeriac(&[
        "run",
        "--local",
        "--allow",
        "python3 ... x",
        file.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("may only end the entry"), "{err}");
}

#[test]
fn submit_dry_run_prints_the_compiled_workflow() {
    let file = examples().join("hello.yaml");
    let output = celeriac(&["submit", "--dry-run", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let workflow: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let nodes = workflow["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 9);
    let report = nodes.iter().find(|n| n["id"] == "report").unwrap();
    assert_eq!(report["task"], "celeriac.exec");
    assert_eq!(
        report["dependencies"],
        serde_json::json!(["report.count", "report.summary", "shout"])
    );
    assert_eq!(report["exec"]["program"], "bash");
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `celeriac ... | head -0`: the pipe's read end is closed before the
    // command writes anything.
    let file = examples().join("hello.yaml");
    for args in [
        vec!["submit", "--dry-run", file.to_str().unwrap()],
        vec!["run", "--local", file.to_str().unwrap()],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_celeriac"))
            .current_dir(std::env::temp_dir())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

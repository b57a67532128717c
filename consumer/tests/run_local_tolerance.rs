//! `celeriac run --local` with `tolerance:`: urgent nodes first, late
//! starts reported in the text and JSON summaries.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn run(flow: &str, extra: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!(
        "celeriac-run-tolerance-{}-{}",
        std::process::id(),
        extra.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("flow.yaml");
    std::fs::write(&file, flow).unwrap();
    let mut args = vec!["run", "--local", "--max-workers", "1"];
    args.extend_from_slice(extra);
    args.push(file.to_str().unwrap());
    let output = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .env("NO_COLOR", "1")
        .args(&args)
        .output()
        .unwrap();
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

const FLOW: &str = "name: late\ntasks:\n  \
                    tight: {run: [sh, -c, 'echo tight'], tolerance: 0.05}\n  \
                    slow: {run: [sh, -c, 'sleep 0.3; echo slow']}\n";

#[test]
fn a_late_node_is_named_in_the_summary() {
    let output = run(FLOW, &[]);
    assert_eq!(output.status.code(), Some(0));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("1 started after their deadline: tight"),
        "{out}"
    );
    assert!(
        out.contains("late: 2 succeeded, 0 failed, 0 skipped"),
        "{out}"
    );
}

#[test]
fn the_json_summary_counts_late_nodes() {
    let output = run(FLOW, &["--json"]);
    assert_eq!(output.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["deadline_missed"], 1);
    let started: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "event" && l["event"] == "started")
        .filter_map(|l| l["node"].as_str())
        .collect();
    assert_eq!(started, ["slow", "tight"], "urgent first: {lines:?}");
}

#[test]
fn a_zero_tolerance_is_an_invalid_file() {
    let output = run(
        "name: bad\ntasks:\n  a: {run: [sh, -c, 'true'], tolerance: 0}\n",
        &["--json", "--allow", "sh"],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("tolerance"), "{err}");
}

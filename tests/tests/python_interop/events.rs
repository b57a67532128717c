//! A Python client of the event stream counts completions.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_counts_completions_on_the_event_stream() {
    let ns = namespace("py-events");
    let broker = broker().await;
    let record = record_file("py-events");
    let mut worker = WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &broker.url,
        &ns,
        &record,
        &["--events", "--grace", "5s"],
    );
    // The Python client (SPEC.md section 17 alone) binds, sends, counts.
    let out = Command::new(python())
        .arg(python_dir().join("celeriac_events.py"))
        .args(["--amqp-addr", &broker.url, "--namespace", &ns])
        .args([
            "--task",
            "celeriac.echo",
            "--count",
            "20",
            "--timeout-s",
            "60",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run the Python events client: {e}"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the Python events client printed no report ({e}, {}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["sent"].as_array().unwrap().len(), 20, "{report:#}");
    assert_eq!(
        report["succeeded"].as_array().unwrap().len(),
        20,
        "{report:#}"
    );
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
    worker.signal("TERM");
    let status = worker.wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker stops cleanly: {status:?}"
    );
}

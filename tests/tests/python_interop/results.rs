//! Python reads results and waits through the specified store layout.

use super::*;

/// Runs `tests/python/send_and_read.py` on namespace `ns`: one JSON line
/// per case, by case name.
fn send_and_read(amqp: &str, redis_url: &str, ns: &str) -> HashMap<String, serde_json::Value> {
    let out = Command::new(python())
        .arg(python_dir().join("send_and_read.py"))
        .args(["--amqp-addr", amqp, "--redis-url", redis_url])
        .args(["--namespace", ns, "--timeout", "60"])
        .output()
        .unwrap_or_else(|e| panic!("run send_and_read.py: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "send_and_read.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
            (v["case"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reads_results_and_waits_through_the_specified_store_layout() {
    let ns = namespace("py-store");
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let record = record_file("py-store");
    let mut worker = WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &broker.url,
        &ns,
        &record,
        &["--redis-url", &redis_url, "--grace", "5s"],
    );
    let cases = send_and_read(&broker.url, &redis_url, &ns);

    // The rich result, as Python read it: what JSON cannot say is tagged.
    let rich = &cases["rich"];
    let got = &rich["record"];
    assert_eq!(got["state"], "succeeded", "{rich}");
    assert_eq!(got["runs"], 1);
    assert_eq!(got["result_stored"], true);
    assert_eq!(got["result"]["blob"], serde_json::json!({"$bin": "AP8="}));
    assert_eq!(
        got["result"]["big"],
        serde_json::json!({"$int": "18446744073709551615"})
    );
    assert_eq!(
        got["result"]["tag"],
        serde_json::json!({"$ext": {"type": 5, "data": "AQI="}})
    );
    assert_eq!(got["result"]["text"], "h\u{e9}llo");
    // The same record as Rust reads it and `celeriac status --json` shows it.
    let id: TaskId = rich["sent"].as_str().unwrap().parse().unwrap();
    let rust = record_of(&*store, id).await.expect("recorded");
    let status = celeriac_producer::status::to_json(&rust);
    assert_eq!(status["result"], got["result"]);
    assert_eq!(status["state"], got["state"]);
    let history: Vec<&str> = got["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["started", "succeeded"], "{got}");

    // A wait that only the completion channel could end early: it ended
    // once the task, due 1.5 s after it was sent, had run, long before the
    // 60 s timeout at which the wait would first have read again.
    let woken = &cases["woken"];
    assert_eq!(woken["record"]["state"], "succeeded", "{woken}");
    assert_eq!(woken["record"]["result"], "later");
    let waited = woken["waited_ms"].as_u64().expect("waited_ms");
    assert!(
        (1_000..30_000).contains(&waited),
        "the wait ended after {waited} ms: the channel did not wake it"
    );

    // A second task with a succeeded key: Python follows the key to the
    // task that ran; nothing is recorded under the second id.
    let first = &cases["key-first"];
    let second = &cases["key-second"];
    assert_eq!(first["record"]["state"], "succeeded");
    assert_eq!(second["record"]["id"], first["sent"], "{second}");
    assert_eq!(second["record"]["result"], "first");
    let second_id: TaskId = second["sent"].as_str().unwrap().parse().unwrap();
    assert!(record_of(&*store, second_id).await.is_none());

    // Tasks that never ran: their states and reasons, as specified.
    let unknown = &cases["unknown"]["record"];
    assert_eq!(unknown["state"], "failed", "{unknown}");
    assert_eq!(unknown["runs"], 0);
    assert_eq!(unknown["error"]["type"], "UnknownTask");
    let expired = &cases["expired"]["record"];
    assert_eq!(expired["state"], "expired", "{expired}");
    assert_eq!(expired["runs"], 0);
    assert_eq!(expired["error"]["type"], "Expired");

    worker.signal("TERM");
    let status = worker.wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker stops cleanly: {status:?}"
    );
}

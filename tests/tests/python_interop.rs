//! The wire contract across languages: tasks enqueued by a Python producer
//! (`tests/python/celeriac_producer.py`, pika and msgpack), written from
//! `broker-schema/SPEC.md` alone, run on the Rust worker; signed by Python
//! (SPEC.md section 15), they run on a worker that requires signatures,
//! and a wrong or missing signature is dead-lettered as `bad-signature`;
//! a Python client of the event stream (`tests/python/celeriac_events.py`,
//! section 17) counts the completions of the tasks it sent, and a Python
//! reader of the store (`tests/python/celeriac_store.py`, redis-py, from
//! SPEC.md section 18) reads the results of tasks it sent and waits for
//! them on the completion channel.
//!
//! The producer runs in a venv under the target directory
//! (`target/python-venv`) with the pinned packages of
//! `tests/python/requirements.txt`, set up on first use by
//! `tests/python/setup_venv.py` and rebuilt when the requirements change
//! (`CELERIAC_PYTHON_VENV` puts it elsewhere); `CELERIAC_PYTHON` names a
//! Python that already has them instead. When the
//! packages cannot be installed the tests fail and say how to provide them.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use celeriac_schema::store::{Store, StoreSettings, TaskRecord};
use celeriac_schema::{now_ms, TaskId, TaskState};
use celeriac_tests::{
    broker, drain, eventually, header_int, header_str, namespace, queue_len, read_record,
    record_file, redis, redis_store, WorkerProcess,
};

/// Echo tasks sent from Python, each with its own input.
const ECHO_TASKS: usize = 50;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
}

fn python_dir() -> PathBuf {
    repo_root().join("tests").join("python")
}

/// A Python 3 with the pinned pika and msgpack, set up once per process.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(given) = std::env::var("CELERIAC_PYTHON") {
            if !given.is_empty() {
                let check = Command::new(&given)
                    .args(["-c", "import pika, msgpack"])
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run CELERIAC_PYTHON={given}: {e}"));
                assert!(
                    check.status.success(),
                    "CELERIAC_PYTHON={given} cannot import pika and msgpack \
                     (install tests/python/requirements.txt into it): {}",
                    String::from_utf8_lossy(&check.stderr)
                );
                return PathBuf::from(given);
            }
        }
        // CARGO_TARGET_TMPDIR is `<target>/tmp`: the venv goes beside it.
        let venv = match std::env::var_os("CELERIAC_PYTHON_VENV") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("the target tmp dir has a parent")
                .join("python-venv"),
        };
        let out = Command::new("python3")
            .arg(python_dir().join("setup_venv.py"))
            .arg(&venv)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run python3 to set up {} ({e}); the interop tests need \
                     Python 3.11+ with its venv module (`apt-get install python3 python3-venv`), \
                     or CELERIAC_PYTHON set to a Python that has pika and msgpack",
                    venv.display()
                )
            });
        assert!(
            out.status.success(),
            "the Python producer's packages are not available ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Runs the Python producer on namespace `ns` with `args`; returns the task
/// ids it printed, in order.
fn produce(url: &str, ns: &str, args: &[&str]) -> Vec<TaskId> {
    let out = Command::new(python())
        .arg(python_dir().join("celeriac_producer.py"))
        .args(["--amqp-addr", url, "--namespace", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run the Python producer: {e}"));
    assert!(
        out.status.success(),
        "the Python producer failed ({}) with {args:?}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            line.parse()
                .unwrap_or_else(|e| panic!("the producer printed {line:?}, not a task id: {e}"))
        })
        .collect()
}

async fn record_of(store: &dyn Store, id: TaskId) -> Option<TaskRecord> {
    store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("store get {id}: {e}"))
}

/// Waits until every task of `ids` reached a final state; returns their
/// records.
async fn finished(store: &dyn Store, ids: &[TaskId], timeout: Duration) -> Vec<TaskRecord> {
    let mut records = HashMap::new();
    let deadline = Instant::now() + timeout;
    while records.len() < ids.len() && Instant::now() < deadline {
        for id in ids {
            if records.contains_key(id) {
                continue;
            }
            if let Some(record) = record_of(store, *id).await {
                if record.state.is_terminal() {
                    records.insert(*id, record);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing: Vec<_> = ids.iter().filter(|id| !records.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} tasks sent from Python did not finish within {timeout:?}: {missing:?}",
        missing.len(),
        ids.len()
    );
    ids.iter().map(|id| records.remove(id).unwrap()).collect()
}

/// The messages (ready and unacked) in each queue of namespace `ns`.
async fn messages_by_queue(ns: &str) -> HashMap<String, u64> {
    let out = broker()
        .await
        .rabbitmqctl(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages",
        ])
        .await;
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let count = words.next()?.parse().ok()?;
            name.starts_with(&format!("{ns}."))
                .then(|| (name.to_owned(), count))
        })
        .collect()
}

#[test]
fn the_python_producer_passes_its_unit_checks() {
    let out = Command::new(python())
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(python_dir())
        .output()
        .unwrap_or_else(|e| panic!("run the Python unit checks: {e}"));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Python unit checks failed:\n{report}");
    assert!(report.contains("OK"), "no Python check ran:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_sent_from_python_run_on_the_rust_worker() {
    let ns = namespace("py-interop");
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let record = record_file("py-interop");

    // Python declares the topology (section 7) and enqueues before any
    // worker exists: the worker's own declarations must then match.
    let inputs: Vec<serde_json::Value> = (0..ECHO_TASKS)
        .map(|i| {
            serde_json::json!({
                "n": i,
                "name": format!("task-{i} \u{e9}t\u{e9}"),
                "ratio": i as f64 + 0.5,
                "negative": -(i as i64) - 1,
                "list": [i, null, true, "x"],
                "nested": {"deep": [{"k": i}]},
            })
        })
        .collect();
    let input_args: Vec<String> = inputs
        .iter()
        .flat_map(|input| ["--input".to_owned(), input.to_string()])
        .collect();
    let mut args = vec!["--declare", "--task", "celeriac.echo"];
    args.extend(input_args.iter().map(String::as_str));
    let echo_ids = produce(&broker.url, &ns, &args);
    assert_eq!(echo_ids.len(), ECHO_TASKS, "one id per task");

    let mut worker = WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &broker.url,
        &ns,
        &record,
        &[
            "--redis-url",
            &redis_url,
            "--run-lease-ttl",
            "2s",
            "--concurrency",
            "8",
            "--grace",
            "5s",
        ],
    );

    // A delayed task through the cascade (section 9), declaring again.
    let before_delayed = now_ms();
    let delayed = produce(
        &broker.url,
        &ns,
        &[
            "--declare",
            "--task",
            "celeriac.echo",
            "--input",
            "\"later\"",
            "--countdown-ms",
            "1500",
        ],
    );
    // One keyed task sent twice: two envelopes, two ids, one key.
    let keyed = produce(
        &broker.url,
        &ns,
        &[
            "--task",
            "test.effect",
            "--input",
            r#"{"n": 21, "ms": 300}"#,
            "--key",
            "py-order-42",
            "--count",
            "2",
        ],
    );
    assert_eq!(keyed.len(), 2);
    assert_ne!(keyed[0], keyed[1]);
    // An envelope without its required `created_at`.
    let malformed = produce(
        &broker.url,
        &ns,
        &[
            "--task",
            "celeriac.echo",
            "--input",
            "1",
            "--omit",
            "created_at",
        ],
    );

    // Every echo succeeded once with its input as result.
    let records = finished(&*store, &echo_ids, Duration::from_secs(60)).await;
    for ((id, record), input) in echo_ids.iter().zip(&records).zip(&inputs) {
        assert_eq!(
            record.state,
            TaskState::Succeeded,
            "{id}: {:?}",
            record.error
        );
        assert_eq!(record.task, "celeriac.echo");
        assert_eq!(record.queue, "default");
        assert_eq!(record.runs, 1, "{id} ran once");
        let result: serde_json::Value = record.decode_result().unwrap().unwrap();
        assert_eq!(&result, input, "{id}: the result is the input");
    }

    // The delayed one ran, and not before its countdown.
    let delayed_record = finished(&*store, &delayed, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(delayed_record.state, TaskState::Succeeded);
    assert_eq!(
        delayed_record.decode_result::<String>().unwrap().as_deref(),
        Some("later")
    );
    let started = delayed_record.started_at.expect("a start time");
    assert!(
        started >= before_delayed + 1500,
        "started {} ms after it was sent, before its 1500 ms countdown",
        started - before_delayed
    );

    // The malformed envelope is dead-lettered as such, untouched.
    let (_conn, channel) = broker.channel().await;
    let dlq = format!("{}.dlq.default", &*ns);
    assert!(
        eventually(Duration::from_secs(20), || async {
            queue_len(&channel, &dlq).await == 1
        })
        .await,
        "the envelope without created_at reaches {dlq}"
    );
    let dead = drain(&channel, &dlq).await;
    assert_eq!(dead.len(), 1, "only the malformed envelope is dead");
    let letter = &dead[0];
    assert_eq!(
        letter
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some(malformed[0].to_string().as_str())
    );
    assert_eq!(header_str(letter, "celeriac-reason"), "malformed");
    assert_eq!(header_str(letter, "celeriac-queue"), "default");
    assert_eq!(header_int(letter, "celeriac-attempts"), 0);
    let body: rmpv::Value = rmp_serde::from_slice(&letter.delivery.data).unwrap();
    let fields: Vec<&str> = body
        .as_map()
        .expect("the body is a map")
        .iter()
        .filter_map(|(k, _)| k.as_str())
        .collect();
    assert!(fields.contains(&"task") && !fields.contains(&"created_at"));
    assert!(record_of(&*store, malformed[0]).await.is_none());

    // The keyed pair: once nothing is left in any queue but the dead letter
    // taken above, exactly one of the two ran, once.
    let drained = eventually(Duration::from_secs(30), || async {
        messages_by_queue(&ns).await.values().all(|&n| n == 0)
    })
    .await;
    assert!(
        drained,
        "queues still hold messages: {:?}",
        messages_by_queue(&ns).await
    );
    worker.signal("TERM");
    let status = worker.wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker stops cleanly: {status:?}"
    );
    let mut ran = Vec::new();
    for id in &keyed {
        if let Some(record) = record_of(&*store, *id).await {
            ran.push((*id, record));
        }
    }
    assert_eq!(
        ran.len(),
        1,
        "one of the two tasks with key py-order-42 has a record"
    );
    let (ran_id, ran_record) = &ran[0];
    assert_eq!(ran_record.state, TaskState::Succeeded);
    assert_eq!(ran_record.runs, 1);
    assert_eq!(ran_record.idempotency_key.as_deref(), Some("py-order-42"));
    assert_eq!(ran_record.decode_result::<u64>().unwrap(), Some(42));
    let starts: Vec<String> = read_record(&record)
        .into_iter()
        .filter(|line| line.starts_with("start "))
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "the keyed task's handler ran once: {starts:?}"
    );
    assert!(starts[0].contains(&ran_id.to_string()));
}

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

/// Writes a key file with one key under the target directory.
fn key_file(name: &str, key_id: &str, secret_b64: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-keys");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.keys", uuid::Uuid::now_v7().simple()));
    std::fs::write(&path, format!("# {name}\n{key_id} {secret_b64}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_signed_tasks_run_and_badly_signed_ones_are_dead_lettered() {
    let ns = namespace("py-signed");
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let record = record_file("py-signed");
    // The same key id on both sides; the wrong file holds another secret.
    let keys = key_file(
        "good",
        "py-2025",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    let wrong = key_file(
        "wrong",
        "py-2025",
        "Y2VsZXJpYWMgZ29sZGVuIHByZXZpb3VzIGtleSAzMiE=",
    );
    let keys_arg = keys.to_str().unwrap();

    let mut args = vec![
        "--declare",
        "--task",
        "celeriac.echo",
        "--signing-keys",
        keys_arg,
    ];
    let inputs = [
        r#"{"signed": 1, "text": "d\u00e9j\u00e0"}"#,
        "[1, 2, 3]",
        "null",
    ];
    for input in &inputs {
        args.extend(["--input", input]);
    }
    let signed = produce(&broker.url, &ns, &args);
    // A keyed task with a delay: more signed headers, through the cascade.
    let keyed = produce(
        &broker.url,
        &ns,
        &[
            "--task",
            "celeriac.echo",
            "--input",
            "\"keyed\"",
            "--key",
            "py-signed-key",
            "--countdown-ms",
            "300",
            "--signing-keys",
            keys_arg,
        ],
    );
    let forged = produce(
        &broker.url,
        &ns,
        &[
            "--task",
            "celeriac.echo",
            "--input",
            "\"forged\"",
            "--signing-keys",
            wrong.to_str().unwrap(),
        ],
    );
    let unsigned = produce(
        &broker.url,
        &ns,
        &["--task", "celeriac.echo", "--input", "\"unsigned\""],
    );

    let mut worker = WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &broker.url,
        &ns,
        &record,
        &[
            "--redis-url",
            &redis_url,
            "--signing-keys",
            keys_arg,
            "--grace",
            "5s",
        ],
    );
    let mut ran = signed.clone();
    ran.extend(&keyed);
    for (record, id) in finished(&*store, &ran, Duration::from_secs(60))
        .await
        .iter()
        .zip(&ran)
    {
        assert_eq!(
            record.state,
            TaskState::Succeeded,
            "{id}: {:?}",
            record.error
        );
    }

    let (_conn, channel) = broker.channel().await;
    let dlq = format!("{}.dlq.default", &*ns);
    assert!(
        eventually(Duration::from_secs(20), || async {
            queue_len(&channel, &dlq).await == 2
        })
        .await,
        "the forged and the unsigned task reach {dlq}"
    );
    let dead = drain(&channel, &dlq).await;
    for (ids, says) in [
        (&forged, "does not match"),
        (&unsigned, "no `celeriac-signature`"),
    ] {
        let letter = dead
            .iter()
            .find(|l| {
                l.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str())
                    == Some(ids[0].to_string().as_str())
            })
            .unwrap_or_else(|| panic!("no dead letter for {}", ids[0]));
        assert_eq!(header_str(letter, "celeriac-reason"), "bad-signature");
        assert_eq!(header_str(letter, "celeriac-error-type"), "SignatureError");
        let message = header_str(letter, "celeriac-error-message");
        assert!(message.contains(says), "{message}");
        assert!(record_of(&*store, ids[0]).await.is_none(), "it never ran");
    }
    worker.signal("TERM");
    let status = worker.wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker stops cleanly: {status:?}"
    );
    let _ = std::fs::remove_file(&keys);
    let _ = std::fs::remove_file(&wrong);
}

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

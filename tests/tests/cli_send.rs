//! `celeriac send`: a task sent from the shell runs on a worker and `--wait`
//! prints its result; bad JSON is a usage error; a key sent twice names the
//! first task; a failed task's error is shown.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use celeriac_tests::{broker, celeriac_cli, namespace, record_file, redis, WorkerProcess};

async fn send(ns: &str, args: &[&str]) -> Output {
    let out = Command::new(celeriac_cli())
        .arg("send")
        .args(args)
        .args(["--namespace", ns])
        .env("AMQP_ADDR", &broker().await.url)
        .env("REDIS_URL", &redis().await.url)
        .output()
        .unwrap();
    out
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn worker(ns: &str, redis_url: &str, url: &str) -> WorkerProcess {
    WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        url,
        ns,
        &record_file("cli-send"),
        &["--redis-url", redis_url],
    )
}

#[tokio::test]
async fn send_wait_key_and_failures() {
    let ns = namespace("cli-send");
    let url = broker().await.url.clone();
    let redis_url = redis().await.url.clone();
    let _worker = worker(&ns, &redis_url, &url);

    // --wait prints the result as JSON.
    let out = send(
        &ns,
        &[
            "celeriac.echo",
            "--input",
            r#"{"a": [1, 2, "x"]}"#,
            "--wait",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result,
        serde_json::json!({"a": [1, 2, "x"]}),
        "{}",
        text(&out)
    );

    // --json --wait: id, state and result.
    let out = send(&ns, &["celeriac.echo", "--input", "7", "--wait", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["result"], 7);
    assert!(
        v["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok(),
        "{v}"
    );

    // Bad JSON: exit 2, nothing sent.
    let out = send(&ns, &["celeriac.echo", "--input", "{not json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not valid JSON"),
        "{}",
        text(&out)
    );

    // The same key twice: the same id, printed plain and as JSON.
    let first = send(&ns, &["celeriac.echo", "--input", "1", "--key", "k-1"]).await;
    assert!(first.status.success(), "{}", text(&first));
    let first_id = String::from_utf8_lossy(&first.stdout).trim().to_owned();
    assert!(first_id.parse::<uuid::Uuid>().is_ok(), "{}", text(&first));
    let second = send(
        &ns,
        &["celeriac.echo", "--input", "2", "--key", "k-1", "--json"],
    )
    .await;
    assert!(second.status.success(), "{}", text(&second));
    let v: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(v["id"], first_id.as_str(), "{}", text(&second));

    // A task that fails while waited for: exit 1 with its error.
    let out = send(
        &ns,
        &[
            "celeriac.fail",
            "--input",
            r#"{"message": "no such user", "fatal": true}"#,
            "--wait",
            "--timeout",
            "20s",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such user"),
        "{}",
        text(&out)
    );

    // --countdown and --retries are accepted and the task still runs.
    let out = send(
        &ns,
        &[
            "celeriac.echo",
            "--input",
            "\"later\"",
            "--countdown",
            "1s",
            "--retries",
            "2",
            "--wait",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"later\"");
}

#[tokio::test]
async fn an_unreachable_broker_exits_1() {
    let ns = namespace("cli-send-unreachable");
    let out = Command::new(celeriac_cli())
        .args(["send", "celeriac.noop", "--no-store", "--namespace", &ns])
        // Nothing listens on port 1.
        .env("AMQP_ADDR", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("could not reach the broker"),
        "{}",
        text(&out)
    );
}

//! `celeriac exporter`: every queue of the namespace, consumed or not, read
//! from the broker's management API.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::builtin::Noop;
use celeriac_tests::{broker, celeriac_cli, namespace};

use crate::support::{get, get_with, producer};

/// A running exporter, killed on drop.
struct Exporter {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Exporter {
    async fn start(ns: &str, extra: &[&str]) -> Exporter {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(celeriac_cli())
            .args(["exporter", "--namespace", ns, "--interval", "1s"])
            .args(["--listen", &addr.to_string()])
            .args(extra)
            .env("AMQP_ADDR", &broker().await.url)
            .env_remove("CELERIAC_METRICS_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Exporter { child, addr }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `check` until it returns something, failing the test after
/// `timeout`.
async fn poll<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not seen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Three tasks sent to a queue no worker consumes show up with no
/// consumer; another namespace's queues do not.
#[tokio::test]
async fn unconsumed_queues_are_exported_with_their_depth() {
    let ns = namespace("exporter");
    let other = namespace("exporter-other");
    let sender = producer(&ns).await;
    let orphan = SendOptions::new().queue("orphan");
    for _ in 0..3 {
        sender
            .send::<Noop>(&rmpv::Value::Nil, &orphan)
            .await
            .unwrap();
    }
    producer(&other)
        .await
        .send::<Noop>(&rmpv::Value::Nil, &SendOptions::new().queue("elsewhere"))
        .await
        .unwrap();
    let exporter = Exporter::start(&ns, &[]).await;
    let messages = r#"celeriac_broker_queue_messages{kind="work",queue="orphan"}"#;
    let body = poll(Duration::from_secs(30), || async {
        let body = get(exporter.addr, "/metrics").await.1;
        (value(&body, messages) == Some(3.0)).then_some(body)
    })
    .await;
    assert_eq!(
        value(
            &body,
            r#"celeriac_broker_queue_consumers{kind="work",queue="orphan"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &body,
            r#"celeriac_broker_queue_messages{kind="dlq",queue="orphan"}"#
        ),
        Some(0.0)
    );
    assert_eq!(value(&body, "celeriac_exporter_up"), Some(1.0));
    assert!(
        !body.contains("elsewhere"),
        "another namespace leaked in:\n{body}"
    );
    assert_eq!(get(exporter.addr, "/readyz").await.0, 200);
}

/// With the management API out of reach the exporter is not ready and says
/// why, and `/metrics` shows it down.
#[tokio::test]
async fn an_unreachable_management_api_is_reported() {
    let ns = namespace("exporter-down");
    let dir = std::env::temp_dir().join(format!("exporter-token-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let exporter = Exporter::start(
        &ns,
        &[
            "--management-url",
            "http://127.0.0.1:9",
            "--metrics-token-file",
            token.to_str().unwrap(),
        ],
    )
    .await;
    let answer = poll(Duration::from_secs(20), || async {
        let answer = get(exporter.addr, "/readyz").await;
        (answer.0 == 503).then_some(answer)
    })
    .await;
    assert!(answer.1.contains("cannot read the queues"), "{}", answer.1);
    assert_eq!(get(exporter.addr, "/metrics").await.0, 401);
    let (status, body) = get_with(
        exporter.addr,
        "/metrics",
        "Authorization: Bearer s3cret\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(value(&body, "celeriac_exporter_up"), Some(0.0), "{body}");
}

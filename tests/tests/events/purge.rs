//! `celeriac purge`: empties exactly the named work queue; with a store,
//! its tasks waiting in the delay levels are dropped when they come due;
//! without `--yes` on a non-terminal it refuses and removes nothing; it
//! gives up on a silent broker after its `--timeout`.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::{Producer, SendOptions};
use celeriac_schema::builtin::Echo;
use celeriac_schema::events::EventKind;
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_schema::TaskState;
use celeriac_tests::{
    broker, celeriac_cli, eventually, namespace, queue_len, redis, redis_store, InProcessWorker,
};

use crate::support::{builtins, has, Tap};

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `celeriac purge` with stdin not a terminal; with the store when
/// `with_store`.
async fn purge(ns: &str, args: &[&str], with_store: bool) -> Output {
    let mut cmd = Command::new(celeriac_cli());
    cmd.arg("purge")
        .args(args)
        .args(["--namespace", ns])
        .env("AMQP_ADDR", &broker().await.url)
        .env_remove("REDIS_URL")
        .stdin(Stdio::null());
    if with_store {
        cmd.env("REDIS_URL", &redis().await.url);
    }
    cmd.output().unwrap()
}

async fn send_to(producer: &Producer, queue: &str, n: usize) {
    for i in 0..n {
        producer
            .send::<Echo>(&rmpv::Value::from(i), &SendOptions::new().queue(queue))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_empties_exactly_the_named_queue_and_its_delayed_tasks_never_run() {
    let ns = namespace("ev-purge").with_queue("a").with_queue("b");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let producer = Producer::builder(&broker().await.url)
        .namespace(ns.name())
        .store(store.clone())
        .connect()
        .await
        .unwrap();
    send_to(&producer, "a", 5).await;
    send_to(&producer, "b", 3).await;
    let delayed = producer
        .send::<Echo>(
            &rmpv::Value::from("delayed"),
            &SendOptions::new()
                .queue("a")
                .countdown(Duration::from_secs(3)),
        )
        .await
        .unwrap()
        .id();
    let (_conn, channel) = broker().await.channel().await;
    let (a, b) = (ns.topology().work_queue("a"), ns.topology().work_queue("b"));
    assert_eq!(queue_len(&channel, &a).await, 5);

    let out = purge(&ns, &["--queue", "a", "--yes", "--json"], true).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["purged"], 5, "{}", text(&out));
    assert_eq!(report["queue"], "a");
    assert_eq!(report["broker_queue"], a.as_str());
    assert_eq!(report["delayed"], "marked");
    assert_eq!(queue_len(&channel, &a).await, 0, "the named queue is empty");
    assert_eq!(
        queue_len(&channel, &b).await,
        3,
        "the other queue keeps its tasks"
    );
    let marks = store.purge_marks().await.unwrap();
    assert!(marks.iter().any(|(q, _)| q == "a"), "{marks:?}");

    // A worker of queue `a`: a task sent after the purge runs; the
    // delayed one, sent before, is dropped when it comes due.
    let mut tap = Tap::bind(&ns).await;
    let worker = InProcessWorker::start(&ns, builtins(), |w| {
        w.queues(["a"]).store(store.clone()).events(true)
    })
    .await;
    let after = producer
        .send::<Echo>(&rmpv::Value::from("after"), &SendOptions::new().queue("a"))
        .await
        .unwrap();
    let result: rmpv::Value = after.wait(Duration::from_secs(15)).await.unwrap();
    assert_eq!(result, rmpv::Value::from("after"));
    let dropped = tap
        .until(Duration::from_secs(15), |seen| {
            has(seen, delayed, EventKind::Revoked)
        })
        .await;
    assert!(dropped, "events: {:?}", tap.seen);
    let revoked = tap.of(delayed).last().copied().unwrap().clone();
    assert_eq!(revoked.kind, EventKind::Revoked);
    assert_eq!(revoked.reason.as_deref(), Some("purged"));
    assert!(!has(&tap.seen, delayed, EventKind::Started), "it never ran");
    let record = store.get(delayed).await.unwrap().expect("a record");
    assert_eq!(record.state, TaskState::Revoked);
    assert_eq!(
        record.error.map(|e| e.error_type).as_deref(),
        Some("Purged")
    );
    let stats = worker.stop().await;
    assert_eq!(stats.purged, 1);
    assert_eq!(stats.succeeded, 1, "only the task sent after the purge ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_without_yes_refuses_on_a_non_terminal_and_without_a_store_says_so() {
    let ns = namespace("ev-purge-refuse").with_queue("c");
    let producer = Producer::builder(&broker().await.url)
        .namespace(ns.name())
        .connect()
        .await
        .unwrap();
    send_to(&producer, "c", 2).await;
    let (_conn, channel) = broker().await.channel().await;
    let c = ns.topology().work_queue("c");

    let out = purge(&ns, &["--queue", "c"], true).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        text(&out)
    );
    assert_eq!(queue_len(&channel, &c).await, 2, "nothing was removed");

    // An unknown queue: exit 3.
    let out = purge(&ns, &["--queue", "nope", "--yes"], false).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // A bad name: exit 2.
    let out = purge(&ns, &["--queue", "no spaces", "--yes"], false).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Without a store: purged, and the delayed tasks are said to stay.
    let out = purge(&ns, &["--queue", "c", "--yes"], false).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("purged 2 tasks from {c}")),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no state store"),
        "{}",
        text(&out)
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            queue_len(&channel, &c).await == 0
        })
        .await
    );
}

/// Runs `celeriac purge` against the broker at `amqp_addr`, without a store.
fn purge_at(ns: &str, amqp_addr: &str, args: &[&str]) -> (Output, Duration) {
    let started = std::time::Instant::now();
    let out = Command::new(celeriac_cli())
        .arg("purge")
        .args(args)
        .args(["--namespace", ns])
        .env("AMQP_ADDR", amqp_addr)
        .env_remove("REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_gives_up_on_a_silent_broker_after_its_timeout() {
    let ns = namespace("ev-purge-timeout").with_queue("d");
    let producer = Producer::builder(&broker().await.url)
        .namespace(ns.name())
        .connect()
        .await
        .unwrap();
    send_to(&producer, "d", 2).await;
    let (_conn, channel) = broker().await.channel().await;
    let d = ns.topology().work_queue("d");

    // A timeout the broker meets: purged as usual.
    let out = purge(
        &ns,
        &["--queue", "d", "--yes", "--json", "--timeout", "10s"],
        false,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["purged"], 2, "{}", text(&out));
    assert_eq!(queue_len(&channel, &d).await, 0);

    // Not a duration: a usage error.
    let out = purge(&ns, &["--queue", "d", "--yes", "--timeout", "soon"], false).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // A broker that accepts the connection and never answers: the kernel
    // completes the handshake, nothing speaks AMQP.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = format!("amqp://guest:guest@{}/%2f", silent.local_addr().unwrap());
    let (out, took) = purge_at(
        &ns,
        &silent_addr,
        &["--queue", "d", "--yes", "--timeout", "1s"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no answer from the broker") && stderr.contains("within 1s"),
        "{}",
        text(&out)
    );
    assert!(stderr.contains("nothing purged"), "{}", text(&out));
    assert!(
        !stderr.contains("guest:guest"),
        "the password is not shown: {stderr}"
    );
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(4)).contains(&took),
        "gave up after the timeout: {took:?}"
    );
    drop(silent);

    // Nothing listening: a clear error at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = format!("amqp://guest:guest@{}/%2f", closed.local_addr().unwrap());
    drop(closed);
    let (out, took) = purge_at(
        &ns,
        &closed_addr,
        &["--queue", "d", "--yes", "--timeout", "3s"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: "),
        "{}",
        text(&out)
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}

//! A live worker's `/metrics` agree with what the test sent; `/healthz`
//! and `/readyz` follow the worker's life.

use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::builtin::{Echo, Fail, FailInput, Ping, Sleep, SleepInput};
use celeriac_schema::{Backoff, RetryPolicy};
use celeriac_tests::{broker, eventually};
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;

use crate::support::{get, producer, send_expired, Metrics, MetricsWorker};

const PINGS: u32 = 20;
const ECHOES: u32 = 10;
/// Fail once, retry once, fail again: dead-lettered as retries-exhausted.
const RETRIED_FAILS: u32 = 3;
/// Fail once without retry: dead-lettered as rejected.
const FATAL_FAILS: u32 = 1;

fn q(task: &str) -> [(&'static str, &str); 2] {
    [("queue", "default"), ("task", task)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_worker_counts_what_it_was_sent() {
    let ns = celeriac_tests::namespace("metrics-live");
    let worker = MetricsWorker::start(&ns, Duration::from_millis(200)).await;
    let (status, body) = get(worker.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"), "/healthz");
    worker.wait_ready().await;
    let before = worker.scrape().await;
    assert_eq!(before.value("celeriac_worker_ready", &[]), 1.0);
    assert_eq!(
        before.value("celeriac_store_up", &[]),
        1.0,
        "without a store, the store is not reported down"
    );
    for task in ["celeriac.ping", "celeriac.echo", "celeriac.fail", "unknown"] {
        assert_eq!(
            before.value("celeriac_tasks_received_total", &q(task)),
            0.0,
            "{task} is pre-initialised to zero"
        );
    }

    let producer = producer(&ns).await;
    for _ in 0..PINGS {
        producer
            .send::<Ping>(&(), &SendOptions::new())
            .await
            .unwrap();
    }
    for i in 0..ECHOES {
        let input = rmpv::Value::from(format!("echo {i}"));
        producer
            .send::<Echo>(&input, &SendOptions::new())
            .await
            .unwrap();
    }
    let retry_once = RetryPolicy {
        max_retries: 1,
        backoff: Backoff::fixed(Duration::from_millis(100)),
    };
    for fatal in std::iter::repeat_n(false, RETRIED_FAILS as usize)
        .chain(std::iter::repeat_n(true, FATAL_FAILS as usize))
    {
        let input = FailInput {
            message: "the bank said no".into(),
            fatal,
        };
        producer
            .send::<Fail>(&input, &SendOptions::new().retry(retry_once))
            .await
            .unwrap();
    }
    // A name no handler is registered for, and a body that is not an
    // envelope: both count under task="unknown".
    let stray = producer
        .prepare_value("test.nobody-home", rmpv::Value::Nil, &SendOptions::new())
        .unwrap();
    producer.send_prepared(&stray).await.unwrap();
    let (_conn, channel) = broker().await.channel().await;
    channel
        .basic_publish(
            "".into(),
            ns.topology().work_queue("default").as_str().into(),
            BasicPublishOptions::default(),
            b"not msgpack at all",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // Past its expiry by the time it is sent.
    send_expired(&producer).await;

    let dead = RETRIED_FAILS + FATAL_FAILS + 2;
    let done = eventually(Duration::from_secs(30), || async {
        let s = worker.handle.stats();
        s.succeeded == u64::from(PINGS + ECHOES)
            && s.dead_lettered == u64::from(dead)
            && s.expired == 1
            && s.in_flight == 0
    })
    .await;
    assert!(
        done,
        "the worker did not finish the run: {:?}",
        worker.handle.stats()
    );

    let m = worker.scrape().await;
    let fail_runs = f64::from(2 * RETRIED_FAILS + FATAL_FAILS);
    let counters: &[(&str, &str, f64)] = &[
        (
            "celeriac_tasks_received_total",
            "celeriac.ping",
            f64::from(PINGS + 1),
        ),
        (
            "celeriac_tasks_received_total",
            "celeriac.echo",
            f64::from(ECHOES),
        ),
        ("celeriac_tasks_received_total", "celeriac.fail", fail_runs),
        ("celeriac_tasks_received_total", "unknown", 2.0),
        ("celeriac_tasks_received_total", "celeriac.sleep", 0.0),
        (
            "celeriac_tasks_succeeded_total",
            "celeriac.ping",
            f64::from(PINGS),
        ),
        (
            "celeriac_tasks_succeeded_total",
            "celeriac.echo",
            f64::from(ECHOES),
        ),
        ("celeriac_tasks_succeeded_total", "celeriac.fail", 0.0),
        ("celeriac_tasks_failed_total", "celeriac.fail", fail_runs),
        ("celeriac_tasks_failed_total", "celeriac.ping", 0.0),
        ("celeriac_tasks_failed_total", "unknown", 0.0),
        (
            "celeriac_tasks_retried_total",
            "celeriac.fail",
            f64::from(RETRIED_FAILS),
        ),
        ("celeriac_tasks_expired_total", "celeriac.ping", 1.0),
        (
            "celeriac_tasks_duplicates_suppressed_total",
            "celeriac.ping",
            0.0,
        ),
        ("celeriac_tasks_revoked_total", "celeriac.ping", 0.0),
        (
            "celeriac_task_run_seconds_count",
            "celeriac.ping",
            f64::from(PINGS),
        ),
        (
            "celeriac_task_run_seconds_count",
            "celeriac.echo",
            f64::from(ECHOES),
        ),
        (
            "celeriac_task_run_seconds_count",
            "celeriac.fail",
            fail_runs,
        ),
        ("celeriac_task_run_seconds_count", "unknown", 0.0),
        (
            "celeriac_task_queue_wait_seconds_count",
            "celeriac.ping",
            f64::from(PINGS),
        ),
        (
            "celeriac_task_queue_wait_seconds_count",
            "celeriac.echo",
            f64::from(ECHOES),
        ),
        (
            "celeriac_task_queue_wait_seconds_count",
            "celeriac.fail",
            fail_runs,
        ),
    ];
    for (name, task, expected) in counters {
        assert_eq!(
            m.value(name, &q(task)),
            *expected,
            "{name}{{task=\"{task}\"}}"
        );
    }
    let dead_letters: &[(&str, &str, f64)] = &[
        (
            "celeriac.fail",
            "retries-exhausted",
            f64::from(RETRIED_FAILS),
        ),
        ("celeriac.fail", "rejected", f64::from(FATAL_FAILS)),
        ("unknown", "unknown-task", 1.0),
        ("unknown", "malformed", 1.0),
        ("celeriac.ping", "retries-exhausted", 0.0),
    ];
    for (task, reason, expected) in dead_letters {
        let labels = [("queue", "default"), ("task", task), ("reason", reason)];
        assert_eq!(
            m.value("celeriac_tasks_dead_lettered_total", &labels),
            *expected,
            "dead letters of {task} for {reason}"
        );
    }
    let all_dead: f64 = m
        .series("celeriac_tasks_dead_lettered_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        all_dead,
        f64::from(dead),
        "no dead letters counted elsewhere"
    );
    // The retried run waited in the delay cascade: its wait is counted from
    // the retry's ETA, so no wait is anywhere near the retry's age.
    let wait_sum = m.value("celeriac_task_queue_wait_seconds_sum", &q("celeriac.fail"));
    assert!(wait_sum < 30.0, "queue wait sum {wait_sum}");
    let over_3600 = [
        ("queue", "default"),
        ("task", "celeriac.ping"),
        ("le", "3600"),
    ];
    assert_eq!(
        m.value("celeriac_task_queue_wait_seconds_bucket", &over_3600),
        f64::from(PINGS),
        "the wait histogram has buckets up to an hour"
    );
    // Bounded cardinality: the stray name made no series of its own.
    assert!(
        !m.0.contains("nobody-home"),
        "a series for the unknown task name"
    );
    let tasks: std::collections::BTreeSet<String> = m
        .series("celeriac_tasks_received_total")
        .filter_map(|(labels, _)| {
            labels
                .into_iter()
                .find(|(k, _)| k == "task")
                .map(|(_, v)| v)
        })
        .collect();
    let expected: std::collections::BTreeSet<String> = [
        "celeriac.echo",
        "celeriac.fail",
        "celeriac.noop",
        "celeriac.panic",
        "celeriac.ping",
        "celeriac.sleep",
        "unknown",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(tasks, expected, "task label values");
    assert_eq!(m.value("celeriac_broker_reconnects_total", &[]), 0.0);
    assert_eq!(m.value("celeriac_workflow_releases_total", &[]), 0.0);
    assert_eq!(
        m.value("celeriac_tasks_in_flight", &[("queue", "default")]),
        0.0
    );

    // The queue sample: the dead letters wait in the DLQ, the work queue is
    // empty and has this worker as its consumer.
    let seen = std::sync::Mutex::new(None);
    let sampled = eventually(Duration::from_secs(10), || async {
        let m = worker.scrape().await;
        let dlq = m.value(
            "celeriac_queue_messages",
            &[("queue", "default"), ("kind", "dlq")],
        );
        let work = m.value(
            "celeriac_queue_messages",
            &[("queue", "default"), ("kind", "work")],
        );
        let consumers = m.value("celeriac_queue_consumers", &[("queue", "default")]);
        *seen.lock().unwrap() = Some((dlq, work, consumers));
        (dlq, work, consumers) == (f64::from(dead), 0.0, 1.0)
    })
    .await;
    let last = seen.into_inner().unwrap();
    assert!(
        sampled,
        "queue sample (dlq, work, consumers) = {last:?}, expected ({dead}, 0, 1)"
    );

    // Shutdown: not ready at once, still alive and scraped while the
    // in-flight task drains, gone once the worker stopped.
    producer
        .send::<Sleep>(&SleepInput { ms: 2_000 }, &SendOptions::new())
        .await
        .unwrap();
    let running = eventually(Duration::from_secs(10), || async {
        worker
            .scrape()
            .await
            .get("celeriac_tasks_in_flight", &[("queue", "default")])
            == Some(1.0)
    })
    .await;
    assert!(running, "the sleep task never showed in flight");
    worker.handle.shutdown();
    let (status, body) = get(worker.addr, "/readyz").await;
    assert_eq!(status, 503, "/readyz after shutdown began: {body}");
    assert!(body.contains("shutting down"), "/readyz body {body:?}");
    assert_eq!(
        get(worker.addr, "/healthz").await.0,
        200,
        "/healthz while draining"
    );
    let draining = worker.scrape().await;
    assert_eq!(draining.value("celeriac_worker_ready", &[]), 0.0);
    assert_eq!(
        draining.value("celeriac_tasks_in_flight", &[("queue", "default")]),
        1.0
    );
    let addr = worker.addr;
    let stats = worker.stop().await;
    assert_eq!(
        stats.succeeded,
        u64::from(PINGS + ECHOES + 1),
        "the sleep finished in the grace"
    );
    assert_eq!(
        get(addr, "/metrics").await.0,
        0,
        "the server stops with the worker"
    );
}

#[tokio::test]
async fn a_worker_without_a_broker_is_alive_but_not_ready() {
    let ns = celeriac_tests::namespace("metrics-no-broker");
    let worker = celeriac_consumer::Worker::builder(
        "amqp://guest:guest@127.0.0.1:1/%2f",
        crate::support::builtins(),
    )
    .namespace(&*ns)
    .metrics_addr(([127, 0, 0, 1], 0).into())
    .build()
    .unwrap();
    let handle = worker.handle();
    let addr = handle.metrics_addr().unwrap();
    let run = tokio::spawn(worker.run());
    let up = eventually(Duration::from_secs(5), || async {
        get(addr, "/healthz").await.0 == 200
    })
    .await;
    assert!(up, "/healthz never answered 200");
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503, "/readyz without a broker: {body}");
    assert!(body.contains("not connected"), "/readyz body {body:?}");
    assert_eq!(
        Metrics(get(addr, "/metrics").await.1).value("celeriac_worker_ready", &[]),
        0.0
    );
    assert_eq!(get(addr, "/nowhere").await.0, 404);
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stops")
        .expect("no panic")
        .expect("clean stop");
}

#[tokio::test]
async fn a_taken_metrics_address_is_an_error_at_build() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err =
        celeriac_consumer::Worker::builder("amqp://127.0.0.1:1/%2f", crate::support::builtins())
            .metrics_addr(addr)
            .build()
            .expect_err("binding a taken port fails");
    assert!(
        matches!(err, celeriac_consumer::Error::MetricsServer { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_drops_while_the_worker_reconnects() {
    let ns = celeriac_tests::namespace("metrics-reconnect");
    let worker = MetricsWorker::start(&ns, Duration::from_millis(200)).await;
    worker.wait_ready().await;
    let broker = broker().await;
    // Only this worker's connection, found by its connection name.
    let listing = broker
        .rabbitmqctl(&["list_connections", "-q", "pid", "client_properties"])
        .await;
    let wanted = format!("celeriac-worker {ns}-worker");
    let pid = listing
        .lines()
        .find(|line| line.contains(&wanted))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no connection named {wanted:?} in:\n{listing}"))
        .to_owned();

    // Watch /readyz closely while the connection goes.
    let addr = worker.addr;
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = tokio::spawn({
        let watching = watching.clone();
        async move {
            let mut not_ready = Vec::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = get(addr, "/readyz").await;
                if status == 503 {
                    not_ready.push(body);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            not_ready
        }
    });
    broker
        .rabbitmqctl(&["close_connection", &pid, "test: connection lost"])
        .await;
    let back = eventually(Duration::from_secs(15), || async {
        let m = worker.scrape().await;
        m.get("celeriac_broker_reconnects_total", &[]) == Some(1.0)
            && m.get("celeriac_worker_ready", &[]) == Some(1.0)
    })
    .await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let not_ready = watcher.await.unwrap();
    assert!(
        back,
        "the worker did not reconnect and become ready: {:?}",
        worker.handle.stats()
    );
    assert!(
        not_ready.iter().any(|body| body.contains("not connected")),
        "/readyz never said 503 while reconnecting: {not_ready:?}"
    );
    assert_eq!(get(addr, "/readyz").await.0, 200, "ready again");
    worker.stop().await;
}

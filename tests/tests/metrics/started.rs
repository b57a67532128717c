//! `celeriac_tasks_started_total{queue,task}` on a live worker's
//! `/metrics`: a run is counted when it begins (a run still going
//! included), each retry is a run of its own, and a delivery that never
//! runs (expired) is not counted.

use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::builtin::{Fail, FailInput, Ping, Sleep, SleepInput};
use celeriac_schema::{Backoff, RetryPolicy};
use celeriac_tests::eventually;

use crate::support::{producer, send_expired, MetricsWorker};

const STARTED: &str = "celeriac_tasks_started_total";
const PINGS: u32 = 5;

fn q(task: &str) -> [(&'static str, &str); 2] {
    [("queue", "default"), ("task", task)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_counts_each_run_as_it_begins() {
    let ns = celeriac_tests::namespace("metrics-started");
    let worker = MetricsWorker::start(&ns, Duration::from_millis(200)).await;
    worker.wait_ready().await;
    let before = worker.scrape().await;
    for task in [
        "celeriac.ping",
        "celeriac.sleep",
        "celeriac.fail",
        "unknown",
    ] {
        assert_eq!(
            before.value(STARTED, &q(task)),
            0.0,
            "{task} is pre-initialised to zero"
        );
    }

    let producer = producer(&ns).await;
    // Counted while it runs, before it succeeds.
    producer
        .send::<Sleep>(&SleepInput { ms: 3_000 }, &SendOptions::new())
        .await
        .unwrap();
    let running = eventually(Duration::from_secs(15), || async {
        let m = worker.scrape().await;
        m.value(STARTED, &q("celeriac.sleep")) == 1.0
            && m.value("celeriac_tasks_succeeded_total", &q("celeriac.sleep")) == 0.0
    })
    .await;
    assert!(running, "the running sleep is not counted as started");

    for _ in 0..PINGS {
        producer
            .send::<Ping>(&(), &SendOptions::new())
            .await
            .unwrap();
    }
    // Fails, is retried once, fails again: two runs.
    let retry_once = RetryPolicy {
        max_retries: 1,
        backoff: Backoff::fixed(Duration::from_millis(100)),
    };
    let input = FailInput {
        message: "the bank said no".into(),
        fatal: false,
    };
    producer
        .send::<Fail>(&input, &SendOptions::new().retry(retry_once))
        .await
        .unwrap();
    // Past its expiry when it arrives: never runs.
    send_expired(&producer).await;

    let done = eventually(Duration::from_secs(30), || async {
        let s = worker.handle.stats();
        s.succeeded == u64::from(PINGS) + 1
            && s.dead_lettered == 1
            && s.expired == 1
            && s.in_flight == 0
    })
    .await;
    assert!(
        done,
        "the worker did not finish: {:?}",
        worker.handle.stats()
    );

    let m = worker.scrape().await;
    for (task, runs) in [
        ("celeriac.ping", f64::from(PINGS)),
        ("celeriac.sleep", 1.0),
        ("celeriac.fail", 2.0),
        ("unknown", 0.0),
    ] {
        assert_eq!(m.value(STARTED, &q(task)), runs, "started {task}");
        // Every run that began also ended, and was timed.
        assert_eq!(
            m.value("celeriac_task_run_seconds_count", &q(task)),
            runs,
            "timed runs of {task}"
        );
    }
    assert_eq!(
        m.value("celeriac_tasks_expired_total", &q("celeriac.ping")),
        1.0
    );
    assert_eq!(
        m.value("celeriac_tasks_received_total", &q("celeriac.ping")),
        f64::from(PINGS) + 1.0,
        "the expired ping was received, not started"
    );
    let all: f64 = m.series(STARTED).map(|(_, v)| v).sum();
    assert_eq!(all, f64::from(PINGS) + 3.0, "no runs counted elsewhere");
    worker.stop().await;
}

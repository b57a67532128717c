//! Worker events (`worker.online`, `worker.heartbeat`, `worker.offline`)
//! under `worker.#`, with the fields of SPEC.md section 17.3, and the
//! `task.revoked` events of a revocation by the control plane.

use std::collections::BTreeSet;
use std::time::Duration;

use celeriac_producer::control::RevokeOptions;
use celeriac_producer::SendOptions;
use celeriac_schema::builtin::{Echo, Sleep, SleepInput};
use celeriac_schema::control::KillSignal;
use celeriac_schema::events::{Event, EventKind, WorkerEvent, WorkerEventKind};
use celeriac_schema::now_ms;
use celeriac_tests::{namespace, InProcessWorker};

use crate::support::{builtins, has, producer, Tap};

const WAIT: Duration = Duration::from_secs(20);

fn worker_events(seen: &[Event]) -> Vec<&WorkerEvent> {
    seen.iter()
        .filter_map(|e| match e {
            Event::Worker(w) => Some(w),
            Event::Task(_) => None,
        })
        .collect()
}

fn count(seen: &[Event], kind: WorkerEventKind) -> usize {
    worker_events(seen)
        .iter()
        .filter(|w| w.kind == kind)
        .count()
}

#[tokio::test]
async fn a_worker_announces_itself_online_then_beats_then_goes_offline() {
    let started = now_ms();
    let ns = namespace("ev-workers");
    let mut tap = Tap::bind_to(&ns, &["worker.#"]).await;
    let producer = producer(&ns).await;
    // Task events stay off: worker events are published whatever
    // `--events` says.
    let worker = InProcessWorker::start(&ns, builtins(), |b| {
        b.worker_id("ev-beater")
            .concurrency(3)
            .heartbeat(Duration::from_millis(200))
    })
    .await;
    producer
        .send::<Echo>(&rmpv::Value::from(1), &SendOptions::new())
        .await
        .unwrap();
    let beating = tap
        .until(WAIT, |seen| {
            count(seen, WorkerEventKind::Heartbeat) >= 3
                && worker_events(seen).last().is_some_and(|w| w.processed == 1)
        })
        .await;
    assert!(beating, "online, then heartbeats: {:#?}", tap.seen);
    let stats = worker.stop().await;
    assert_eq!(stats.succeeded, 1);
    let offline = tap
        .until(WAIT, |seen| count(seen, WorkerEventKind::Offline) == 1)
        .await;
    assert!(offline, "offline at a graceful stop: {:#?}", tap.seen);
    let stopped = now_ms();

    assert!(
        tap.raw.iter().all(|(key, _)| key.starts_with("worker.")),
        "only what `worker.#` selects: {:?}",
        tap.raw.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let events = worker_events(&tap.seen);
    let kinds: Vec<WorkerEventKind> = events.iter().map(|w| w.kind).collect();
    assert_eq!(kinds[0], WorkerEventKind::Online, "{kinds:?}");
    assert_eq!(
        kinds[kinds.len() - 1],
        WorkerEventKind::Offline,
        "{kinds:?}"
    );
    assert!(
        kinds[1..kinds.len() - 1]
            .iter()
            .all(|k| *k == WorkerEventKind::Heartbeat),
        "{kinds:?}"
    );

    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let first = events[0];
    assert!(
        (started..=first.at).contains(&first.started_at),
        "{first:?}"
    );
    for event in &events {
        assert_eq!(event.worker, "ev-beater");
        assert_eq!(event.hostname, hostname.trim());
        assert_eq!(event.pid, std::process::id());
        assert_eq!(event.queues, ["default"]);
        assert_eq!(event.concurrency, 3);
        assert_eq!(event.in_flight, 0, "{event:?}");
        assert_eq!(event.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(event.heartbeat_ms, 200);
        assert_eq!(event.started_at, first.started_at, "one start");
        assert!(
            (event.started_at..=stopped).contains(&event.at),
            "{event:?}"
        );
        assert!(event.processed <= 1, "{event:?}");
    }
    assert_eq!(events[events.len() - 1].processed, 1, "the offline counts");
    for pair in events.windows(2) {
        assert!(pair[0].at <= pair[1].at, "in order: {pair:?}");
    }
    let beats: Vec<u64> = events
        .iter()
        .filter(|w| w.kind == WorkerEventKind::Heartbeat)
        .map(|w| w.at)
        .collect();
    for gap in beats.windows(2).map(|w| w[1] - w[0]) {
        assert!(gap >= 100, "one heartbeat per period of 200 ms: {beats:?}");
    }

    // On the wire: exactly the documented fields, named, `kind` as in the
    // routing key.
    let documented: BTreeSet<&str> = [
        "kind",
        "worker",
        "hostname",
        "pid",
        "queues",
        "concurrency",
        "in_flight",
        "processed",
        "started_at",
        "at",
        "version",
        "heartbeat_ms",
    ]
    .into();
    for (key, body) in &tap.raw {
        let value = rmpv::decode::read_value(&mut body.as_slice()).unwrap();
        let map = value.as_map().expect("a map with named fields");
        let names: BTreeSet<&str> = map.iter().map(|(k, _)| k.as_str().unwrap()).collect();
        assert_eq!(names, documented, "{key}");
        let kind = map
            .iter()
            .find(|(k, _)| k.as_str() == Some("kind"))
            .and_then(|(_, v)| v.as_str())
            .unwrap();
        assert_eq!(format!("worker.{kind}"), *key);
    }
}

#[tokio::test]
async fn a_control_revoke_publishes_task_revoked() {
    let ns = namespace("ev-revoked");
    let mut tap = Tap::bind_to(&ns, &["task.#"]).await;
    let producer = producer(&ns).await;
    let worker = InProcessWorker::start(&ns, builtins(), |b| {
        b.events(true).worker_id("ev-revoker").concurrency(2)
    })
    .await;

    // Waiting in the delay levels: acked without running when it comes due.
    let delayed = producer
        .send::<Echo>(
            &rmpv::Value::from("never"),
            &SendOptions::new().countdown(Duration::from_secs(2)),
        )
        .await
        .unwrap()
        .id();
    let done = producer
        .revoke(&[delayed.to_string()], &RevokeOptions::new())
        .await
        .unwrap();
    assert_eq!(done.replies.replies.len(), 1);
    // Running: stopped at once with KILL.
    let running = producer
        .send::<Sleep>(&SleepInput { ms: 60_000 }, &SendOptions::new())
        .await
        .unwrap()
        .id();
    let started = tap
        .until(WAIT, |seen| has(seen, running, EventKind::Started))
        .await;
    assert!(started, "{:#?}", tap.seen);
    producer
        .revoke(
            &[running.to_string()],
            &RevokeOptions::new().terminate(KillSignal::Kill),
        )
        .await
        .unwrap();
    let revoked = tap
        .until(WAIT, |seen| {
            has(seen, delayed, EventKind::Revoked) && has(seen, running, EventKind::Revoked)
        })
        .await;
    assert!(revoked, "{:#?}", tap.seen);

    use EventKind::{Received, Revoked, Started};
    assert_eq!(tap.worker_kinds(delayed), [Received, Revoked]);
    assert_eq!(tap.worker_kinds(running), [Received, Started, Revoked]);
    for (id, task) in [(delayed, "celeriac.echo"), (running, "celeriac.sleep")] {
        let event = tap
            .of(id)
            .into_iter()
            .find(|e| e.kind == Revoked)
            .unwrap()
            .clone();
        assert_eq!(event.reason.as_deref(), Some("revoked"), "{event:?}");
        assert_eq!(event.worker.as_deref(), Some("ev-revoker"));
        assert_eq!(event.task, task);
        assert_eq!(event.queue, "default");
        assert_eq!(event.attempt, 0);
        assert_eq!(event.key, id.to_string());
        assert_eq!(event.error_type, None, "{event:?}");
        assert_eq!(event.runtime_ms, None, "{event:?}");
    }
    let (key, _) = tap
        .raw
        .iter()
        .find(|(key, _)| key.starts_with("task.revoked."))
        .unwrap();
    assert!(
        key == "task.revoked.celeriac.echo" || key == "task.revoked.celeriac.sleep",
        "{key}"
    );
    let stats = worker.stop().await;
    assert_eq!(stats.revoked, 2);
    assert_eq!(stats.succeeded, 0, "neither ran to its end");
}

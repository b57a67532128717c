//! Every task event kind, with its fields checked against what was sent.

use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::builtin::{Echo, Fail, FailInput};
use celeriac_schema::events::EventKind::*;
use celeriac_schema::{Backoff, RetryPolicy};
use celeriac_tests::{namespace, InProcessWorker};

use crate::support::{builtins, has, producer, Tap};

const WORKER: &str = "events-worker-1";

#[tokio::test]
async fn every_task_event_kind_is_published_with_its_fields() {
    let ns = namespace("ev-kinds");
    let mut tap = Tap::bind(&ns).await;
    let producer = producer(&ns).await;

    // Sent before the worker starts and past its expiry when it arrives.
    let expired = producer
        .send::<Echo>(
            &rmpv::Value::from("late"),
            &SendOptions::new().expires_in(Duration::from_millis(1)),
        )
        .await
        .unwrap()
        .id();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let worker =
        InProcessWorker::start(&ns, builtins(), |b| b.events(true).worker_id(WORKER)).await;

    let ok = producer
        .send::<Echo>(
            &rmpv::Value::from(7),
            &SendOptions::new().idempotency_key("order-7"),
        )
        .await
        .unwrap()
        .id();
    let retry = RetryPolicy {
        max_retries: 1,
        backoff: Backoff::fixed(Duration::from_millis(200)),
    };
    let failing = producer
        .send::<Fail>(
            &FailInput {
                message: "disk on fire".into(),
                fatal: false,
            },
            &SendOptions::new().retry(retry),
        )
        .await
        .unwrap()
        .id();

    let all_seen = tap
        .until(Duration::from_secs(20), |seen| {
            has(seen, ok, Succeeded)
                && has(seen, failing, DeadLettered)
                && has(seen, expired, Expired)
        })
        .await;
    assert!(all_seen, "events seen: {:#?}", tap.seen);

    // The producer's `sent` and the worker's events come over two
    // connections: the order between them is not guaranteed, the order
    // of one worker's events is.
    for id in [ok, failing, expired] {
        assert_eq!(tap.kinds(id).iter().filter(|k| **k == Sent).count(), 1);
    }
    // The success: received, started, succeeded, in that order.
    assert_eq!(tap.worker_kinds(ok), [Received, Started, Succeeded]);
    for event in tap.of(ok) {
        assert_eq!(event.task, "celeriac.echo");
        assert_eq!(event.queue, "default");
        assert_eq!(event.attempt, 0);
        assert_eq!(event.key, "order-7");
        let expected_worker = (event.kind != Sent).then(|| WORKER.to_owned());
        assert_eq!(event.worker, expected_worker, "{event:?}");
    }
    let sent = tap.sent(ok);
    assert_eq!(sent.eta, None);
    assert_eq!(sent.workflow_id, None);
    let done = tap.of(ok).last().copied().unwrap().clone();
    assert_eq!(done.succeeded_as, Some(ok));
    assert!(done.runtime_ms.is_some());
    assert!(done.error_type.is_none() && done.reason.is_none());
    assert!(sent.at <= done.at);

    // The failure: two runs, a retry between them, then the dead letter.
    assert_eq!(
        tap.worker_kinds(failing),
        [
            Received,
            Started,
            Failed,
            Retried,
            Received,
            Started,
            Failed,
            DeadLettered
        ]
    );
    let events: Vec<_> = tap
        .of(failing)
        .into_iter()
        .filter(|e| e.kind != Sent)
        .collect();
    let attempts: Vec<u32> = events.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [0, 0, 0, 0, 1, 1, 1, 1]);
    for event in events
        .iter()
        .filter(|e| matches!(e.kind, Failed | Retried | DeadLettered))
    {
        assert_eq!(event.error_type.as_deref(), Some("TaskFailed"), "{event:?}");
        assert_eq!(event.error.as_deref(), Some("disk on fire"), "{event:?}");
        assert_eq!(event.key, failing.to_string(), "the key defaults to the id");
    }
    let retried = events[3];
    assert!(
        (100..=400).contains(&retried.delay_ms.unwrap()),
        "{retried:?}"
    );
    assert!(
        events[2].runtime_ms.is_some(),
        "a failed run has its run time"
    );
    assert_eq!(events[7].reason.as_deref(), Some("retries-exhausted"));

    // The expired task: received, then expired; it never started.
    assert_eq!(tap.worker_kinds(expired), [Received, Expired]);
    let last = tap.of(expired).last().copied().unwrap().clone();
    assert_eq!(last.worker.as_deref(), Some(WORKER));
    assert_eq!(last.task, "celeriac.echo");

    let stats = worker.stop().await;
    assert_eq!(stats.events_dropped, 0);
}

#[tokio::test]
async fn a_sent_event_carries_the_eta_and_nothing_is_published_when_events_are_off() {
    let ns = namespace("ev-sent");
    let mut tap = Tap::bind(&ns).await;
    let on = producer(&ns).await;
    let before = celeriac_schema::now_ms();
    let delayed = on
        .send::<Echo>(
            &rmpv::Value::Nil,
            &SendOptions::new().countdown(Duration::from_secs(60)),
        )
        .await
        .unwrap()
        .id();
    assert!(
        tap.until(Duration::from_secs(10), |seen| has(seen, delayed, Sent))
            .await
    );
    let sent = tap.sent(delayed);
    let eta = sent.eta.expect("a delayed task's sent event has its ETA");
    assert!(eta >= before + 60_000 && eta < before + 70_000, "{sent:?}");
    assert_eq!(sent.worker, None);

    // A producer and a worker with events off: the task runs, no event.
    let off = celeriac_producer::Producer::builder(&celeriac_tests::broker().await.url)
        .namespace(ns.name())
        .connect()
        .await
        .unwrap();
    let worker = InProcessWorker::start(&ns, builtins(), |b| b).await;
    let quiet = off
        .send::<Echo>(&rmpv::Value::from(1), &SendOptions::new())
        .await
        .unwrap()
        .id();
    let ran = celeriac_tests::eventually(Duration::from_secs(10), || async {
        worker.stats().succeeded == 1
    })
    .await;
    assert!(ran);
    let any = tap
        .until(Duration::from_millis(500), |seen| {
            seen.iter()
                .any(|e| matches!(e, celeriac_schema::events::Event::Task(t) if t.id == quiet))
        })
        .await;
    assert!(!any, "no event for a task with events off: {:?}", tap.seen);
    worker.stop().await;
}

//! Deadline misses and wait thresholds: counted, logged and announced.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::events::{decode_event, Event, EventKind};
use celeriac_schema::now_ms;
use celeriac_tests::{broker, eventually, InProcessWorker};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::support::{registry, sample, setup, Mark, WAIT};

#[tokio::test]
async fn a_late_start_counts_as_a_deadline_miss_and_an_exceeded_wait() {
    let (ns, producer) = setup("tol-late").await;
    let topo = ns.topology();
    // A tap on the `started` events.
    let (_conn, channel) = broker().await.channel().await;
    celeriac_producer::topology::declare(&channel, &topo.shared_declarations())
        .await
        .unwrap();
    let tap = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            tap.name().clone(),
            topo.events_exchange().as_str().into(),
            "task.started.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Created 10 s ago with 1.5 s of tolerance: its deadline is long past.
    let mut late = producer
        .prepare::<Mark>(
            &"late".to_owned(),
            &SendOptions::new().delay_tolerance(Duration::from_millis(1_500)),
        )
        .unwrap();
    late.envelope.created_at = now_ms() - 10_000;
    let late_id = producer.send_prepared(&late).await.unwrap();
    // On time: an hour of tolerance, sent now.
    let on_time = producer
        .send::<Mark>(
            &"on-time".to_owned(),
            &SendOptions::new().delay_tolerance(Duration::from_secs(3_600)),
        )
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = InProcessWorker::start(&ns, registry(&seen, Duration::ZERO), |b| {
        b.events(true)
            .default_wait_threshold(Duration::from_secs(3_600))
            .wait_threshold("default", Duration::from_secs(5))
    })
    .await;
    let ran = eventually(WAIT, || async { seen.lock().unwrap().len() == 2 }).await;
    assert!(ran, "both tasks run: {:?}", seen.lock().unwrap());
    let metrics = worker.metrics();
    let missed = "celeriac_tasks_deadline_missed_total{queue=\"default\",task=\"test.mark\"}";
    let exceeded = "celeriac_tasks_wait_exceeded_total{queue=\"default\"}";
    assert_eq!(sample(&metrics, missed), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, exceeded), Some(1.0), "{metrics}");
    worker.stop().await;

    let started = Arc::new(Mutex::new(Vec::new()));
    let read = eventually(WAIT, || {
        let (channel, started) = (channel.clone(), started.clone());
        let tap = tap.name().to_string();
        async move {
            while let Some(msg) = channel
                .basic_get(tap.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                if let Event::Task(event) = decode_event(&msg.delivery.data).unwrap() {
                    started.lock().unwrap().push(event);
                }
            }
            started.lock().unwrap().len() >= 2
        }
    })
    .await;
    let started = started.lock().unwrap().clone();
    assert!(read, "two started events: {started:?}");
    assert!(started.iter().all(|e| e.kind == EventKind::Started));
    let late_event = started.iter().find(|e| e.id == late_id).unwrap();
    assert!(late_event.waited_ms.unwrap() >= 10_000, "{late_event:?}");
    assert_eq!(late_event.wait_exceeded, Some(true));
    let on_time_event = started.iter().find(|e| e.id == on_time.id()).unwrap();
    assert!(
        on_time_event.waited_ms.unwrap() < 5_000,
        "{on_time_event:?}"
    );
    assert_eq!(on_time_event.wait_exceeded, None);
}

#[tokio::test]
async fn a_worker_refuses_a_weight_below_two_and_a_zero_wait_threshold() {
    let url = &broker().await.url;
    let bad = [
        celeriac_consumer::Worker::builder(url, celeriac_consumer::Registry::new())
            .urgent_weight(1)
            .build(),
        celeriac_consumer::Worker::builder(url, celeriac_consumer::Registry::new())
            .wait_threshold("default", Duration::ZERO)
            .build(),
    ];
    for built in bad {
        let err = built.unwrap_err().to_string();
        assert!(
            err.contains("weight") || err.contains("wait threshold"),
            "{err}"
        );
    }
}

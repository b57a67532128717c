//! Countdowns and ETAs wait in the broker's delay cascade: a task runs no
//! earlier than its ETA and not much later; thousands of waiting tasks take
//! neither prefetch slots nor worker memory while other tasks flow; delays
//! are accepted up to the cascade's maximum and refused beyond it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use celeriac_consumer::{Registry, TaskContext};
use celeriac_producer::{route_now, Error as ProducerError, SendOptions};
use celeriac_schema::builtin::{Noop, Ping};
use celeriac_schema::topology::{DELAY_LEVELS, MAX_DELAY};
use celeriac_schema::{now_ms, Task, Topology};
use celeriac_tests::{broker, eventually, queue_len};
use lapin::Channel;

use crate::support::{builtins, delete_queues, producer, InProcessWorker};

/// `test.stamp`: records its label, when it ran and its ETA.
struct Stamp;

impl Task for Stamp {
    const NAME: &'static str = "test.stamp";
    type Input = String;
    type Output = ();
}

/// One run of `test.stamp`.
#[derive(Debug, Clone)]
struct StampRun {
    label: String,
    ran_at_ms: u64,
    eta_ms: Option<u64>,
}

/// Messages waiting in all of the namespace's delay levels.
async fn waiting_in_delays(channel: &Channel, topology: &Topology) -> u32 {
    let mut total = 0;
    for level in 0..DELAY_LEVELS {
        total += queue_len(channel, &topology.delay_queue(level)).await;
    }
    total
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eta_and_countdown_tasks_run_on_time() {
    let ns = celeriac_tests::namespace("eta");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let runs: Arc<Mutex<Vec<StampRun>>> = Arc::default();
    let mut registry = Registry::new();
    let seen = runs.clone();
    registry.register::<Stamp, _, _>(move |label, ctx: TaskContext| {
        let ran_at_ms = now_ms();
        seen.lock().unwrap().push(StampRun {
            label,
            ran_at_ms,
            eta_ms: ctx.envelope().eta,
        });
        async { Ok(()) }
    });
    let worker = InProcessWorker::start(&ns, registry, |b| b).await;

    let wait = Duration::from_secs(3);
    let sent_ms = now_ms();
    let eta = SystemTime::now() + wait;
    producer
        .send::<Stamp>(&"eta".to_owned(), &SendOptions::new().eta(eta))
        .await
        .unwrap();
    producer
        .send::<Stamp>(&"countdown".to_owned(), &SendOptions::new().countdown(wait))
        .await
        .unwrap();

    let ran = eventually(Duration::from_secs(10), || async {
        runs.lock().unwrap().len() == 2
    })
    .await;
    let runs = runs.lock().unwrap().clone();
    assert!(ran, "only {} of 2 delayed tasks ran", runs.len());
    for run in &runs {
        let eta_ms = run.eta_ms.expect("a delayed task carries its ETA");
        match run.label.as_str() {
            "eta" => assert_eq!(eta_ms, unix_ms(eta), "the ETA travels as sent"),
            "countdown" => assert!(
                eta_ms >= sent_ms + wait.as_millis() as u64,
                "the countdown's ETA {eta_ms} is before {sent_ms} + {wait:?}"
            ),
            other => panic!("unexpected run {other:?}"),
        }
        assert!(
            run.ran_at_ms >= eta_ms,
            "{} ran {} ms before its ETA",
            run.label,
            eta_ms - run.ran_at_ms
        );
        let late = run.ran_at_ms - eta_ms;
        assert!(late < 1200, "{} ran {late} ms after its ETA", run.label);
    }

    let stats = worker.stop().await;
    assert_eq!(stats.succeeded, 2);
    let (_conn, channel) = broker().await.channel().await;
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_tasks_take_no_prefetch_slots() {
    const WAITING: u32 = 10_000;
    const IMMEDIATE: u64 = 200;
    let ns = celeriac_tests::namespace("backlog");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.prefetch(20)).await;

    let delayed = producer
        .send_batch::<Noop>(
            (0..WAITING).map(|_| rmpv::Value::Nil),
            &SendOptions::new().countdown(Duration::from_secs(300)),
        )
        .await
        .unwrap();
    assert_eq!(delayed.len(), WAITING as usize);

    let started = Instant::now();
    producer
        .send_batch::<Ping>((0..IMMEDIATE).map(|_| ()), &SendOptions::new())
        .await
        .unwrap();
    let done = eventually(Duration::from_secs(15), || async {
        worker.stats().succeeded >= IMMEDIATE
    })
    .await;
    let elapsed = started.elapsed();
    let stats = worker.stats();
    assert!(
        done,
        "only {} of {IMMEDIATE} immediate tasks ran in {elapsed:?} behind {WAITING} waiting ones",
        stats.succeeded
    );
    assert_eq!(
        stats.received, IMMEDIATE,
        "the worker received a waiting task: delays must stay in the broker"
    );

    let (_conn, channel) = broker().await.channel().await;
    assert_eq!(
        waiting_in_delays(&channel, &topology).await,
        WAITING,
        "every waiting task sits in the delay queues"
    );
    assert_eq!(
        queue_len(&channel, &topology.work_queue("default")).await,
        0
    );

    let stats = worker.stop().await;
    assert_eq!((stats.received, stats.succeeded), (IMMEDIATE, IMMEDIATE));
    assert_eq!(
        delete_queues(&channel, &topology).await,
        WAITING,
        "deleting the namespace drops exactly the waiting tasks"
    );
}

#[tokio::test]
async fn delays_up_to_the_maximum_are_accepted_and_longer_ones_refused() {
    let ns = celeriac_tests::namespace("long-delay");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let day = Duration::from_secs(24 * 3600);

    // Longer than a month: the top level of the cascade holds it.
    let month = producer
        .prepare::<Ping>(&(), &SendOptions::new().countdown(31 * day))
        .unwrap();
    let route = route_now(&topology, &month).unwrap();
    assert_eq!(route.exchange, topology.delay_exchange(DELAY_LEVELS - 1));
    assert!(
        route.routing_key.ends_with(".default"),
        "the route ends with the queue: {}",
        route.routing_key
    );
    producer.send_prepared(&month).await.unwrap();
    producer
        .send::<Ping>(&(), &SendOptions::new().eta(SystemTime::now() + 38 * day))
        .await
        .unwrap();
    producer
        .send::<Ping>(&(), &SendOptions::new().countdown(MAX_DELAY))
        .await
        .unwrap();

    // Beyond the maximum, as a countdown or as an ETA.
    let too_long = [
        SendOptions::new().countdown(MAX_DELAY + Duration::from_millis(100)),
        SendOptions::new().eta(SystemTime::now() + 40 * day),
    ];
    for options in &too_long {
        let err = producer.send::<Ping>(&(), options).await.unwrap_err();
        assert!(
            matches!(
                &err,
                ProducerError::Schema(celeriac_schema::Error::DelayTooLong { max_ms, .. })
                    if *max_ms == MAX_DELAY.as_millis() as u64
            ),
            "expected DelayTooLong, got {err}"
        );
        assert!(!err.is_transient(), "a retry cannot shorten the delay");
        let text = err.to_string();
        assert!(
            text.contains("exceeds the longest supported delay"),
            "the error does not say what is wrong: {text}"
        );
    }

    let (_conn, channel) = broker().await.channel().await;
    assert_eq!(
        queue_len(&channel, &topology.delay_queue(DELAY_LEVELS - 1)).await,
        3,
        "the accepted tasks wait in the top delay level"
    );
    assert_eq!(
        waiting_in_delays(&channel, &topology).await,
        3,
        "the refused tasks were not published"
    );
    assert_eq!(
        queue_len(&channel, &topology.work_queue("default")).await,
        0
    );
    assert_eq!(delete_queues(&channel, &topology).await, 3);
}

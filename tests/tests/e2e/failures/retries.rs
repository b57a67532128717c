//! Retries: their backoff windows, exhausted retries, panics and fatal errors.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_inside_their_backoff_window() {
    let ns = celeriac_tests::namespace("retry-window");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let attempts: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let mut registry = Registry::new();
    let seen = attempts.clone();
    registry.register::<Flaky, _, _>(move |(), ctx: TaskContext| {
        seen.lock().unwrap().push((ctx.attempt(), Instant::now()));
        async { Err(TaskError::new("Flaky", "fails on purpose")) }
    });
    let worker = InProcessWorker::start(&ns, registry, |b| b).await;

    let backoff = Backoff {
        initial_ms: 1000,
        multiplier: 2.0,
        max_ms: 60_000,
        jitter: 0.5,
    };
    let policy = RetryPolicy {
        max_retries: 3,
        backoff,
    };
    producer
        .send::<Flaky>(&(), &SendOptions::new().retry(policy))
        .await
        .unwrap();

    let (_conn, channel) = broker().await.channel().await;
    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 1).await;
    assert_eq!(header_str(&dead[0], headers::REASON), "retries-exhausted");

    let attempts = attempts.lock().unwrap().clone();
    let numbers: Vec<u32> = attempts.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [0, 1, 2, 3], "every attempt runs once, in order");
    // The broker adds latency on top of the chosen wait: the wait is rounded
    // up to the 100 ms delay unit and hops through the delay cascade.
    let latency = Duration::from_millis(600);
    for (n, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1].1 - pair[0].1;
        let (low, high) = backoff.window(n as u32);
        assert!(
            gap >= low && gap <= high + latency,
            "attempt {} ran {gap:?} after attempt {n}, outside [{low:?}, {high:?} + {latency:?}]",
            n + 1
        );
    }

    let stats = worker.stop().await;
    assert_eq!(
        (stats.failed, stats.retried, stats.dead_lettered),
        (4, 3, 1),
        "four failed runs, three retries, one dead letter"
    );
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_are_dead_lettered_with_failure_headers() {
    let ns = celeriac_tests::namespace("exhausted");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let worker_id = format!("{ns}-worker");
    let id_for_builder = worker_id.clone();
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.worker_id(id_for_builder)).await;
    let since = now_ms();

    let policy = RetryPolicy {
        max_retries: 2,
        backoff: Backoff::fixed(Duration::from_millis(200)),
    };
    let input = FailInput {
        message: "card declined by the bank".into(),
        fatal: false,
    };
    let id = producer
        .send::<Fail>(&input, &SendOptions::new().retry(policy))
        .await
        .unwrap()
        .id();

    let (_conn, channel) = broker().await.channel().await;
    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 1).await;
    let msg = &dead[0];
    assert_dead_letter(msg, "retries-exhausted", "TaskFailed", 3, &worker_id, since);
    let message = header_str(msg, headers::ERROR_MESSAGE);
    assert!(
        message.contains("card declined by the bank"),
        "error message {message:?} lacks the task's message"
    );
    assert_eq!(header_str(msg, headers::TASK), Fail::NAME);
    assert_eq!(
        header_int(msg, headers::ATTEMPT),
        2,
        "the last attempt's number"
    );
    let envelope =
        celeriac_schema::decode(&msg.delivery.data).expect("the dead letter's body decodes");
    assert_eq!(envelope.id, id, "the dead letter is the task that was sent");
    assert_eq!(envelope.attempt, 2);
    assert_eq!(
        msg.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string()),
        Some(id.to_string())
    );

    // The worker keeps going.
    producer
        .send::<Ping>(&(), &SendOptions::new())
        .await
        .unwrap();
    let pinged = eventually(Duration::from_secs(10), || async {
        worker.stats().succeeded == 1
    })
    .await;
    assert!(
        pinged,
        "a ping sent after the dead letter was not processed"
    );

    let stats = worker.stop().await;
    assert_eq!(
        (
            stats.failed,
            stats.retried,
            stats.dead_lettered,
            stats.succeeded
        ),
        (3, 2, 1, 1)
    );
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

#[tokio::test]
async fn panicking_handlers_are_retried_then_dead_lettered() {
    let ns = celeriac_tests::namespace("panic");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let record = celeriac_tests::record_file("panic");
    let worker_id = format!("{ns}-worker");
    let process = worker(&ns, &record, &["--worker-id", &worker_id]).await;
    let since = now_ms();

    let policy = RetryPolicy {
        max_retries: 1,
        backoff: Backoff::fixed(Duration::from_millis(100)),
    };
    let id = producer
        .send::<Panic>(
            &"boom: the handler blew up".to_owned(),
            &SendOptions::new().retry(policy),
        )
        .await
        .unwrap()
        .id();

    let (_conn, channel) = broker().await.channel().await;
    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 1).await;
    let msg = &dead[0];
    assert_dead_letter(msg, "retries-exhausted", "Panic", 2, &worker_id, since);
    let message = header_str(msg, headers::ERROR_MESSAGE);
    assert!(
        message.contains("boom: the handler blew up"),
        "error message {message:?} lacks the panic message"
    );
    let envelope = celeriac_schema::decode(&msg.delivery.data).unwrap();
    assert_eq!((envelope.id, envelope.attempt), (id, 1));

    finish(&producer, process, &record, &channel, &topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_are_dead_lettered_at_once() {
    let ns = celeriac_tests::namespace("fatal");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let worker_id = format!("{ns}-worker");
    let id_for_builder = worker_id.clone();
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.worker_id(id_for_builder)).await;
    let since = now_ms();

    let input = FailInput {
        message: "no such account".into(),
        fatal: true,
    };
    let id = producer
        .send::<Fail>(&input, &SendOptions::new().max_retries(3))
        .await
        .unwrap()
        .id();

    let (_conn, channel) = broker().await.channel().await;
    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 1).await;
    let msg = &dead[0];
    assert_dead_letter(msg, "rejected", "TaskFailed", 1, &worker_id, since);
    assert_eq!(header_str(msg, headers::ERROR_MESSAGE), "no such account");
    let envelope = celeriac_schema::decode(&msg.delivery.data).unwrap();
    assert_eq!((envelope.id, envelope.attempt), (id, 0));

    producer
        .send::<Ping>(&(), &SendOptions::new())
        .await
        .unwrap();
    let pinged = eventually(Duration::from_secs(10), || async {
        worker.stats().succeeded == 1
    })
    .await;
    assert!(
        pinged,
        "a ping sent after the dead letter was not processed"
    );
    let stats = worker.stop().await;
    assert_eq!(
        (stats.failed, stats.retried, stats.dead_lettered),
        (1, 0, 1),
        "a fatal error is never retried"
    );
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

//! Tasks no worker can run: unknown names, malformed bodies, expired tasks.

use super::*;

#[tokio::test]
async fn unknown_task_names_are_dead_lettered() {
    let ns = celeriac_tests::namespace("unknown-task");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let record = celeriac_tests::record_file("unknown-task");
    let worker_id = format!("{ns}-worker");
    let process = worker(&ns, &record, &["--worker-id", &worker_id]).await;
    let since = now_ms();

    let task = producer
        .prepare_value(
            "test.nobody-home",
            rmpv::Value::from("hello"),
            &SendOptions::new(),
        )
        .unwrap();
    let id = producer.send_prepared(&task).await.unwrap();

    let (_conn, channel) = broker().await.channel().await;
    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 1).await;
    let msg = &dead[0];
    assert_dead_letter(msg, "unknown-task", "UnknownTask", 0, &worker_id, since);
    let message = header_str(msg, headers::ERROR_MESSAGE);
    assert!(
        message.contains("test.nobody-home"),
        "error message {message:?} does not name the task"
    );
    let envelope =
        celeriac_schema::decode(&msg.delivery.data).expect("the dead letter's body decodes");
    assert_eq!(envelope.id, id);
    assert_eq!(
        envelope.input,
        rmpv::Value::from("hello"),
        "the input is kept"
    );

    finish(&producer, process, &record, &channel, &topology).await;
}

#[tokio::test]
async fn malformed_bodies_are_dead_lettered_byte_for_byte() {
    let ns = celeriac_tests::namespace("malformed");
    // Connecting a producer declares the topology.
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let record = celeriac_tests::record_file("malformed");
    let worker_id = format!("{ns}-worker");
    let process = worker(&ns, &record, &["--worker-id", &worker_id]).await;
    let since = now_ms();

    let garbage: Vec<u8> = b"\xc1 this is not MessagePack \x00\xff\xfe".to_vec();
    let mut no_task = Vec::new();
    let map = rmpv::Value::Map(vec![
        ("v".into(), 1.into()),
        ("id".into(), TaskId::new().to_string().into()),
        ("input".into(), rmpv::Value::Nil),
        ("created_at".into(), now_ms().into()),
    ]);
    rmpv::encode::write_value(&mut no_task, &map).unwrap();
    let local = celeriac_schema::decode(&no_task).unwrap_err();
    assert_eq!(
        local.field(),
        Some("task"),
        "the test body lacks exactly `task`"
    );

    let (_conn, channel) = broker().await.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for body in [&garbage, &no_task] {
        let confirm = channel
            .basic_publish(
                topology.work_exchange().as_str().into(),
                "default".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            matches!(confirm, Confirmation::Ack(None)),
            "the raw publish was not routed: {confirm:?}"
        );
    }

    let dlq = topology.dead_letter_queue("default");
    let dead = take_dead_letters(&channel, &dlq, 2).await;
    let find = |body: &[u8]| {
        dead.iter()
            .find(|m| m.delivery.data == body)
            .expect("a dead letter with the original body, byte for byte")
    };
    let garbage_letter = find(&garbage);
    assert_dead_letter(
        garbage_letter,
        "malformed",
        "Malformed",
        0,
        &worker_id,
        since,
    );
    let message = header_str(garbage_letter, headers::ERROR_MESSAGE);
    assert!(
        message.contains("not valid MessagePack"),
        "error message {message:?} does not say why"
    );
    let no_task_letter = find(&no_task);
    assert_dead_letter(no_task_letter, "malformed", "Field", 0, &worker_id, since);
    let message = header_str(no_task_letter, headers::ERROR_MESSAGE);
    assert!(
        message.contains("`task`"),
        "error message {message:?} does not name the missing field"
    );

    finish(&producer, process, &record, &channel, &topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tasks_are_dropped_and_counted() {
    let ns = celeriac_tests::namespace("expired");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let runs = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    let counter = runs.clone();
    registry.register::<Perishable, _, _>(move |(), _ctx: TaskContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    let worker = InProcessWorker::start(&ns, registry, |b| b).await;

    // Expires while it waits for its countdown.
    producer
        .send::<Perishable>(
            &(),
            &SendOptions::new()
                .expires_in(Duration::from_millis(300))
                .countdown(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    // Expired before it was even sent.
    let mut stale = producer
        .prepare::<Perishable>(&(), &SendOptions::new())
        .unwrap();
    stale.envelope.expires = Some(now_ms() - 1_000);
    producer.send_prepared(&stale).await.unwrap();
    // Fresh: runs.
    producer
        .send::<Perishable>(&(), &SendOptions::new().expires_in(Duration::from_secs(60)))
        .await
        .unwrap();

    let settled = eventually(Duration::from_secs(15), || async {
        let stats = worker.stats();
        stats.expired == 2 && stats.succeeded == 1
    })
    .await;
    let stats = worker.stop().await;
    assert!(settled, "expected 2 expired and 1 succeeded, got {stats:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "an expired task ran");
    assert_eq!(
        (
            stats.received,
            stats.expired,
            stats.succeeded,
            stats.dead_lettered,
            stats.retried
        ),
        (3, 2, 1, 0, 0)
    );
    let (_conn, channel) = broker().await.channel().await;
    assert_eq!(
        queue_len(&channel, &topology.work_queue("default")).await,
        0
    );
    assert_eq!(
        queue_len(&channel, &topology.dead_letter_queue("default")).await,
        0,
        "expired tasks are dropped, not dead-lettered"
    );
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

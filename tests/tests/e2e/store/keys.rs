//! Runs and keys: a run's states, enqueue keys, duplicates and run leases.

use super::*;

#[tokio::test]
async fn a_long_run_shows_started_while_it_runs_and_a_short_one_with_its_outcome() {
    let ns = namespace("store-started");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.store(store.clone())).await;
    let producer = producer_with(&ns, store.clone()).await;
    let wait = Duration::from_secs(20);

    let long = producer
        .send::<Sleep>(&SleepInput { ms: 1500 }, &SendOptions::new())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            long.status().await.unwrap() == Some(TaskState::Started)
        })
        .await,
        "a run going on for longer than the threshold shows `started`"
    );
    assert_eq!(long.wait(wait).await.unwrap(), 1500);

    let short = producer
        .send::<Echo>(&rmpv::Value::from(1), &SendOptions::new())
        .await
        .unwrap();
    short.wait(wait).await.unwrap();
    for handle in [long.record().await, short.record().await] {
        let record = handle.unwrap().unwrap();
        let states: Vec<TaskState> = record.history.iter().map(|t| t.state).collect();
        assert_eq!(
            states.iter().filter(|s| **s == TaskState::Started).count(),
            1,
            "{states:?}"
        );
        assert_eq!(states.last(), Some(&TaskState::Succeeded), "{states:?}");
        assert_eq!(record.runs, 1);
        let (started, finished) = (record.started_at.unwrap(), record.finished_at.unwrap());
        assert!(started <= finished, "{record:?}");
    }
    worker.stop().await;
}

#[tokio::test]
async fn an_enqueue_key_used_before_returns_the_first_id_and_publishes_nothing() {
    let ns = namespace("store-enqueue-key");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let producer = producer_with(&ns, store.clone()).await;
    let opts = SendOptions::new().idempotency_key("order-42");
    let first = producer.send::<KeyEcho>(&0, &opts).await.unwrap();
    let second = producer.send::<KeyEcho>(&0, &opts).await.unwrap();
    assert_eq!(first.id(), second.id());
    let other = producer
        .send::<KeyEcho>(&0, &SendOptions::new().idempotency_key("order-43"))
        .await
        .unwrap();
    assert_ne!(other.id(), first.id());
    let (_conn, channel) = broker().await.channel().await;
    let queued = eventually(Duration::from_secs(5), || async {
        queue_len(&channel, &ns.topology().work_queue("default")).await == 2
    })
    .await;
    assert!(queued, "two keys, two tasks in the queue");
    let record = first.record().await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Queued);
    assert!(record.created_at.is_some());
    assert_eq!(record.idempotency_key.as_deref(), Some("order-42"));

    // The handler reads the key, and the result is the key.
    let runs = Arc::new(AtomicUsize::new(0));
    let worker = InProcessWorker::start(
        &ns,
        counting_registry(runs.clone(), Arc::default(), Arc::default()),
        |b| b.store(store.clone()),
    )
    .await;
    assert_eq!(
        first.wait(Duration::from_secs(20)).await.unwrap(),
        "order-42"
    );
    assert_eq!(
        other.wait(Duration::from_secs(20)).await.unwrap(),
        "order-43"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // A task that opts out of results succeeds with no stored output.
    let quiet = producer
        .send::<Quiet>(&(), &SendOptions::new())
        .await
        .unwrap();
    assert!(matches!(
        quiet.wait(Duration::from_secs(20)).await,
        Err(Error::NoResult { .. })
    ));
    assert_eq!(quiet.status().await.unwrap(), Some(TaskState::Succeeded));
    worker.stop().await;
}

#[tokio::test]
async fn a_duplicate_never_runs_again_and_its_event_is_emitted_again() {
    let ns = namespace("store-duplicate");
    let events = format!("{}.test-events", &*ns);
    let ns = ns.with_raw_queue(&events);
    let (_conn, channel) = broker().await.channel().await;
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, short_leases()).await);
    let producer = producer_with(&ns, store.clone()).await;
    channel
        .queue_declare(
            events.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            events.as_str().into(),
            ns.topology().events_exchange().as_str().into(),
            "task.succeeded.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // Two workers; the same envelope published twice while the first copy
    // runs for 1.5 s: the second waits for the lease, then is suppressed.
    let (runs, running, peak) = (Arc::default(), Arc::default(), Arc::default());
    let task = producer
        .prepare::<KeyEcho>(&1500, &SendOptions::new())
        .unwrap();
    let registry = || counting_registry(Arc::clone(&runs), Arc::clone(&running), Arc::clone(&peak));
    let a = InProcessWorker::start(&ns, registry(), |b| b.store(store.clone()).events(true)).await;
    let b = InProcessWorker::start(&ns, registry(), |b| b.store(store.clone()).events(true)).await;
    producer
        .send_all(&[task.clone(), task.clone()])
        .await
        .unwrap();
    let handle = producer.handle::<KeyEcho>(task.envelope.id);
    handle.wait(Duration::from_secs(20)).await.unwrap();
    let suppressed = eventually(Duration::from_secs(10), || async {
        a.stats().duplicates_suppressed + b.stats().duplicates_suppressed == 1
    })
    .await;
    assert!(
        suppressed,
        "the second copy is counted as a suppressed duplicate"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "never twice at the same time"
    );
    // The copy that found its key busy was held and checked again, not
    // sent back through the delay route (SPEC.md section 11.3 step 5).
    assert_eq!(
        a.stats().deferred + b.stats().deferred,
        0,
        "a busy key holds the delivery"
    );

    // The completion event, once per copy.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < 2 && Instant::now() < deadline {
        match channel
            .basic_get(events.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(msg) => {
                let event: rmpv::Value = rmp_serde::from_slice(&msg.delivery.data).unwrap();
                seen.push(event);
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let got_both = seen.len() == 2;
    assert!(got_both, "events: {seen:?}");
    for event in &seen {
        let field = |name: &str| {
            event
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name)))
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        };
        assert_eq!(field("id"), Some(task.envelope.id.to_string()));
        assert_eq!(field("kind").as_deref(), Some("succeeded"));
    }
    // Sent again later: still not run.
    producer.send_all(&[task]).await.unwrap();
    let again = eventually(Duration::from_secs(10), || async {
        a.stats().duplicates_suppressed + b.stats().duplicates_suppressed == 2
    })
    .await;
    assert!(again);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_key_busy_past_half_the_consumer_timeout_is_deferred_through_the_delay_route() {
    // SPEC.md section 11.3 step 5: a delivery is held behind another run's
    // lease only up to half the consumer timeout (1 s here), then sent
    // back through the delay route; it is suppressed once the run is done.
    let ns = namespace("store-busy-deferred");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, short_leases()).await);
    let producer = producer_with(&ns, store.clone()).await;
    let (runs, running, peak) = (Arc::default(), Arc::default(), Arc::default());
    let task = producer
        .prepare::<KeyEcho>(&3000, &SendOptions::new())
        .unwrap();
    let registry = || counting_registry(Arc::clone(&runs), Arc::clone(&running), Arc::clone(&peak));
    let start = |registry| {
        InProcessWorker::start(&ns, registry, |b| {
            b.store(store.clone())
                .consumer_timeout(Duration::from_secs(2))
        })
    };
    let a = start(registry()).await;
    let b = start(registry()).await;
    producer
        .send_all(&[task.clone(), task.clone()])
        .await
        .unwrap();
    let handle = producer.handle::<KeyEcho>(task.envelope.id);
    handle.wait(Duration::from_secs(20)).await.unwrap();
    let suppressed = eventually(Duration::from_secs(15), || async {
        a.stats().duplicates_suppressed + b.stats().duplicates_suppressed >= 1
    })
    .await;
    assert!(
        suppressed,
        "the second copy is suppressed once the run is done"
    );
    assert!(
        a.stats().deferred + b.stats().deferred >= 1,
        "the copy held past half the consumer timeout went through the delay route"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "never twice at the same time"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_crashed_runs_lease_expires_and_the_task_runs_again() {
    let ns = namespace("store-lease-expiry");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, short_leases()).await);
    let producer = producer_with(&ns, store.clone()).await;
    let task = producer
        .prepare::<Echo>(&rmpv::Value::from(1), &SendOptions::new())
        .unwrap();
    // A worker took the lease and died without a word.
    let started = Update::new(
        task.envelope.id,
        Echo::NAME,
        "default",
        TaskState::Started,
        0,
    );
    let key = task.envelope.effective_idempotency_key();
    assert_eq!(
        store.begin(&key, "dead-worker", &started).await.unwrap(),
        Begin::Run
    );
    let taken = Instant::now();
    producer
        .send_all(std::slice::from_ref(&task))
        .await
        .unwrap();
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.store(store.clone())).await;
    let handle = producer.handle::<Echo>(task.envelope.id);
    assert_eq!(
        handle.wait(Duration::from_secs(20)).await.unwrap(),
        rmpv::Value::from(1)
    );
    let record: TaskRecord = handle.record().await.unwrap().unwrap();
    assert_eq!(record.runs, 2, "the dead run and the real one");
    assert!(
        record.started_at.unwrap()
            >= celeriac_schema::now_ms() - taken.elapsed().as_millis() as u64 + 900,
        "the second run waited for the lease to expire"
    );
    worker.stop().await;
}

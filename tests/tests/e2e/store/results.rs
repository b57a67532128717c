//! Connecting, and handles that return typed results and typed failures.

use super::*;

#[tokio::test]
async fn an_unreachable_store_is_a_clear_error() {
    let started = Instant::now();
    let err = celeriac_store::RedisStore::connect(
        "redis://:secret@127.0.0.1:1",
        "t-unreachable",
        StoreSettings::default(),
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, celeriac_schema::Error::StoreUnavailable { .. }),
        "{message}"
    );
    assert!(
        message.contains("127.0.0.1:1"),
        "names the store: {message}"
    );
    assert!(!message.contains("secret"), "hides the password: {message}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The worker refuses to start without its store, and says why.
    let out = std::process::Command::new(crate::support::worker_bin())
        .args(["--namespace", "t-unreachable"])
        .env("AMQP_ADDR", &broker().await.url)
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("state store") && stderr.contains("REDIS_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn handles_return_typed_results_and_typed_failures() {
    let ns = namespace("store-results").with_queue("idle");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.store(store.clone())).await;
    let producer = producer_with(&ns, store.clone()).await;
    let wait = Duration::from_secs(20);

    // Success: the typed output, and every transition with its time.
    let echo = producer
        .send::<Echo>(&rmpv::Value::from("hello"), &SendOptions::new())
        .await
        .unwrap();
    assert_eq!(echo.wait(wait).await.unwrap(), rmpv::Value::from("hello"));
    assert_eq!(echo.status().await.unwrap(), Some(TaskState::Succeeded));
    let record = echo.record().await.unwrap().unwrap();
    assert_eq!(record.task, Echo::NAME);
    assert_eq!(record.runs, 1);
    assert!(record.worker.is_some());
    let (queued, started, finished) = (
        record.queued_at.unwrap(),
        record.started_at.unwrap(),
        record.finished_at.unwrap(),
    );
    assert!(started <= finished && queued <= finished, "{record:?}");

    // A failure for good: the typed error with its type and message.
    let input = FailInput {
        message: "disk on fire".into(),
        fatal: false,
    };
    let failing = producer
        .send::<Fail>(&input, &SendOptions::new().retry(quick_retry(1)))
        .await
        .unwrap();
    match failing.wait(wait).await {
        Err(Error::TaskFailed { task_id, failure }) => {
            assert_eq!(task_id, failing.id());
            assert!(failure.message.contains("disk on fire"), "{failure}");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    let record = failing.record().await.unwrap().unwrap();
    let states: Vec<TaskState> = record.history.iter().map(|t| t.state).collect();
    assert!(
        states.ends_with(&[
            TaskState::Started,
            TaskState::Retrying,
            TaskState::Started,
            TaskState::Failed
        ]),
        "{states:?}"
    );
    assert_eq!((record.runs, record.attempt), (2, 1));

    // Expired before it ran: `expired`, with the reason, and never run.
    let expired = producer
        .send::<Ping>(
            &(),
            &SendOptions::new()
                .countdown(Duration::from_millis(200))
                .expires_in(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    assert!(matches!(
        expired.wait(wait).await,
        Err(Error::TaskExpired { .. })
    ));
    let record = expired.record().await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Expired);
    assert_eq!(record.runs, 0, "an expired task never runs");
    assert_eq!(
        record.error.as_ref().map(|e| e.error_type.as_str()),
        Some("Expired")
    );
    assert!(record.finished_at.is_some());
    let json = celeriac_producer::status::to_json(&record);
    assert_eq!(json["state"], "expired");

    // Nobody consumes `idle`: the wait times out and says it is queued.
    let idle = producer
        .send::<Ping>(&(), &SendOptions::new().queue("idle"))
        .await
        .unwrap();
    let started = Instant::now();
    match idle.wait(Duration::from_millis(300)).await {
        Err(Error::WaitTimedOut { state, .. }) => assert_eq!(state, Some(TaskState::Queued)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    // A handle for an id kept elsewhere; an unknown id has no state.
    let again = producer.handle::<Echo>(echo.id());
    assert_eq!(again.wait(wait).await.unwrap(), rmpv::Value::from("hello"));
    assert_eq!(
        producer
            .handle::<Ping>(TaskId::new())
            .status()
            .await
            .unwrap(),
        None
    );
    worker.stop().await;
}

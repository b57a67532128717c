//! Records and waiting: many waiting handles on one connection, the status
//! CLI, and the history's length.

use super::*;

#[tokio::test]
async fn ten_thousand_waiting_handles_share_one_store_connection() {
    const N: usize = 10_000;
    let ns = namespace("store-waiters");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let producer = producer_with(&ns, store.clone()).await;
    let ids = producer
        .send_batch::<Ping>(std::iter::repeat_n((), N), &SendOptions::new())
        .await
        .unwrap();
    let waits: Vec<_> = ids
        .iter()
        .map(|id| {
            let handle = producer.handle::<Ping>(*id);
            tokio::spawn(async move { handle.wait(Duration::from_secs(120)).await })
        })
        .collect();
    // Every waiter subscribed, on one connection.
    let mut conn = raw_redis().await;
    let mut subscribers: Vec<usize> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut all_subscribed = false;
    while !all_subscribed && Instant::now() < deadline {
        let list: String = celeriac_tests::redis_client::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        subscribers = list
            .lines()
            .filter_map(|line| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix("sub="))
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .filter(|n| *n >= 1_000)
            .collect();
        all_subscribed = subscribers.iter().sum::<usize>() >= N;
        if !all_subscribed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(all_subscribed, "subscriptions: {subscribers:?}");
    assert_eq!(
        subscribers,
        [N],
        "one connection holds all {N} subscriptions"
    );

    let started = Instant::now();
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.store(store.clone())).await;
    for wait in waits {
        wait.await.unwrap().unwrap();
    }
    eprintln!(
        "{N} waiting handles resolved {:?} after the worker started",
        started.elapsed()
    );
    worker.stop().await;
}

#[tokio::test]
async fn status_cli_shows_a_task_and_says_when_an_id_is_unknown() {
    let ns = namespace("store-status-cli");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let worker = InProcessWorker::start(&ns, builtins(), |b| b.store(store.clone())).await;
    let producer = producer_with(&ns, store.clone()).await;
    let input = FailInput {
        message: "no such user".into(),
        fatal: true,
    };
    let failed = producer
        .send::<Fail>(&input, &SendOptions::new())
        .await
        .unwrap();
    assert!(failed.wait(Duration::from_secs(20)).await.is_err());
    let echo = producer
        .send::<Echo>(&rmpv::Value::from(7), &SendOptions::new())
        .await
        .unwrap();
    echo.wait(Duration::from_secs(20)).await.unwrap();
    worker.stop().await;

    let url = redis().await.url.clone();
    let status = |args: &[&str]| {
        std::process::Command::new(celeriac_cli())
            .arg("status")
            .args(args)
            .args(["--namespace", &ns])
            .env("REDIS_URL", &url)
            .output()
            .unwrap()
    };
    let table = status(&[&failed.id().to_string()]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    for expected in [
        "state      failed",
        "no such user",
        "attempt 0 (1 runs started)",
        "history",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    let json = status(&[&echo.id().to_string(), "--json"]);
    assert!(json.status.success());
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["v"], 1, "the version of SPEC.md section 18.7");
    assert_eq!(value["kind"], "task");
    assert_eq!(value["state"], "succeeded");
    assert_eq!(value["result_stored"], true);
    assert_eq!(value["result"], 7);
    assert_eq!(value["runs"], 1);
    assert!(value["started_at"]["unix_ms"].as_u64().is_some());
    assert!(value["worker"].as_str().is_some());

    let unknown = status(&[&TaskId::new().to_string()]);
    assert_eq!(unknown.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no task"));
    let invalid = status(&["not-an-id"]);
    assert_eq!(invalid.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("not a task id"));
}

#[tokio::test]
async fn a_record_keeps_the_last_hundred_transitions() {
    let ns = namespace("store-history");
    for store in [
        Arc::new(MemoryStore::new(StoreSettings::default())) as Arc<dyn Store>,
        Arc::new(redis_store(&ns, StoreSettings::default()).await),
    ] {
        let id = TaskId::new();
        let updates: Vec<Update> = (0..130)
            .map(|attempt| {
                let mut u = Update::new(id, "t.history", "default", TaskState::Retrying, attempt);
                u.error = Some(celeriac_schema::store::TaskFailure {
                    error_type: "Io".into(),
                    message: format!("attempt {attempt}"),
                });
                u
            })
            .collect();
        store.record(&updates).await.unwrap();
        let record = store.get(id).await.unwrap().unwrap();
        assert_eq!(record.history.len(), 100, "{store:?}");
        assert_eq!(record.history[0].attempt, 30);
        assert_eq!(record.history[99].attempt, 129);
        assert_eq!(
            record.history[0].error.as_ref().map(|e| e.message.as_str()),
            Some("attempt 30")
        );
        assert_eq!(record.attempt, 129);
    }
}

#[tokio::test]
async fn a_record_of_layout_version_one_is_still_read() {
    let ns = namespace("store-layout-v1");
    let store = redis_store(&ns, StoreSettings::default()).await;
    let mut conn = raw_redis().await;
    // What an earlier build wrote: the hash, a `runs` counter and the
    // history string beside it.
    let id = TaskId::new();
    let (rec, hist) = (
        celeriac_schema::store::layout::v1::record_key(&ns, id),
        celeriac_schema::store::layout::v1::history_key(&ns, id),
    );
    let started = celeriac_schema::store::Transition {
        state: TaskState::Started,
        at_ms: 1_764_077_400_001,
        attempt: 0,
        worker: None,
        error: None,
    };
    let succeeded = celeriac_schema::store::Transition {
        state: TaskState::Succeeded,
        at_ms: 1_764_077_400_002,
        ..started.clone()
    };
    let mut history = rmp_serde::to_vec_named(&started).unwrap();
    history.extend(rmp_serde::to_vec_named(&succeeded).unwrap());
    let result = celeriac_schema::store::encode_result(&7u32).unwrap();
    let _: () = celeriac_tests::redis_client::pipe()
        .cmd("HSET")
        .arg(&rec)
        .arg("task")
        .arg("t.old")
        .arg("queue")
        .arg("default")
        .arg("state")
        .arg("succeeded")
        .arg("runs")
        .arg(1)
        .arg("result")
        .arg(&result)
        .ignore()
        .cmd("SET")
        .arg(&hist)
        .arg(history)
        .ignore()
        .pexpire(&rec, 60_000)
        .ignore()
        .pexpire(&hist, 60_000)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let record = store.get(id).await.unwrap().expect("the old record");
    assert_eq!((record.state, record.runs), (TaskState::Succeeded, 1));
    assert_eq!(record.history, vec![started, succeeded]);
    assert_eq!(record.decode_result::<u32>().unwrap(), Some(7));
    let results = store.results(&[id, TaskId::new()]).await.unwrap();
    assert_eq!(results, vec![Some(result), None]);
}

//! Tasks sent from Python run on the Rust worker (and the Python producer's
//! own checks).

use super::*;

#[test]
fn the_python_producer_passes_its_unit_checks() {
    let out = Command::new(python())
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(python_dir())
        .output()
        .unwrap_or_else(|e| panic!("run the Python unit checks: {e}"));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Python unit checks failed:\n{report}");
    assert!(report.contains("OK"), "no Python check ran:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_sent_from_python_run_on_the_rust_worker() {
    let ns = namespace("py-interop");
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let record = record_file("py-interop");

    // Python declares the topology (section 7) and enqueues before any
    // worker exists: the worker's own declarations must then match.
    let inputs: Vec<serde_json::Value> = (0..ECHO_TASKS)
        .map(|i| {
            serde_json::json!({
                "n": i,
                "name": format!("task-{i} \u{e9}t\u{e9}"),
                "ratio": i as f64 + 0.5,
                "negative": -(i as i64) - 1,
                "list": [i, null, true, "x"],
                "nested": {"deep": [{"k": i}]},
            })
        })
        .collect();
    let input_args: Vec<String> = inputs
        .iter()
        .flat_map(|input| ["--input".to_owned(), input.to_string()])
        .collect();
    let mut args = vec!["--declare", "--task", "celeriac.echo"];
    args.extend(input_args.iter().map(String::as_str));
    let echo_ids = produce(&broker.url, &ns, &args);
    assert_eq!(echo_ids.len(), ECHO_TASKS, "one id per task");

    let mut worker = WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &broker.url,
        &ns,
        &record,
        &[
            "--redis-url",
            &redis_url,
            "--run-lease-ttl",
            "2s",
            "--concurrency",
            "8",
            "--grace",
            "5s",
        ],
    );

    // A delayed task through the cascade (section 9), declaring again.
    let before_delayed = now_ms();
    let delayed = produce(
        &broker.url,
        &ns,
        &[
            "--declare",
            "--task",
            "celeriac.echo",
            "--input",
            "\"later\"",
            "--countdown-ms",
            "1500",
        ],
    );
    // One keyed task sent twice: two envelopes, two ids, one key.
    let keyed = produce(
        &broker.url,
        &ns,
        &[
            "--task",
            "test.effect",
            "--input",
            r#"{"n": 21, "ms": 300}"#,
            "--key",
            "py-order-42",
            "--count",
            "2",
        ],
    );
    assert_eq!(keyed.len(), 2);
    assert_ne!(keyed[0], keyed[1]);
    // An envelope without its required `created_at`.
    let malformed = produce(
        &broker.url,
        &ns,
        &[
            "--task",
            "celeriac.echo",
            "--input",
            "1",
            "--omit",
            "created_at",
        ],
    );

    // Every echo succeeded once with its input as result.
    let records = finished(&*store, &echo_ids, Duration::from_secs(60)).await;
    for ((id, record), input) in echo_ids.iter().zip(&records).zip(&inputs) {
        assert_eq!(
            record.state,
            TaskState::Succeeded,
            "{id}: {:?}",
            record.error
        );
        assert_eq!(record.task, "celeriac.echo");
        assert_eq!(record.queue, "default");
        assert_eq!(record.runs, 1, "{id} ran once");
        let result: serde_json::Value = record.decode_result().unwrap().unwrap();
        assert_eq!(&result, input, "{id}: the result is the input");
    }

    // The delayed one ran, and not before its countdown.
    let delayed_record = finished(&*store, &delayed, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(delayed_record.state, TaskState::Succeeded);
    assert_eq!(
        delayed_record.decode_result::<String>().unwrap().as_deref(),
        Some("later")
    );
    let started = delayed_record.started_at.expect("a start time");
    assert!(
        started >= before_delayed + 1500,
        "started {} ms after it was sent, before its 1500 ms countdown",
        started - before_delayed
    );

    // The malformed envelope is dead-lettered as such, untouched.
    let (_conn, channel) = broker.channel().await;
    let dlq = format!("{}.dlq.default", &*ns);
    assert!(
        eventually(Duration::from_secs(20), || async {
            queue_len(&channel, &dlq).await == 1
        })
        .await,
        "the envelope without created_at reaches {dlq}"
    );
    let dead = drain(&channel, &dlq).await;
    assert_eq!(dead.len(), 1, "only the malformed envelope is dead");
    let letter = &dead[0];
    assert_eq!(
        letter
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some(malformed[0].to_string().as_str())
    );
    assert_eq!(header_str(letter, "celeriac-reason"), "malformed");
    assert_eq!(header_str(letter, "celeriac-queue"), "default");
    assert_eq!(header_int(letter, "celeriac-attempts"), 0);
    let body: rmpv::Value = rmp_serde::from_slice(&letter.delivery.data).unwrap();
    let fields: Vec<&str> = body
        .as_map()
        .expect("the body is a map")
        .iter()
        .filter_map(|(k, _)| k.as_str())
        .collect();
    assert!(fields.contains(&"task") && !fields.contains(&"created_at"));
    assert!(record_of(&*store, malformed[0]).await.is_none());

    // The keyed pair: once nothing is left in any queue but the dead letter
    // taken above, exactly one of the two ran, once.
    let drained = eventually(Duration::from_secs(30), || async {
        messages_by_queue(&ns).await.values().all(|&n| n == 0)
    })
    .await;
    assert!(
        drained,
        "queues still hold messages: {:?}",
        messages_by_queue(&ns).await
    );
    worker.signal("TERM");
    let status = worker.wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker stops cleanly: {status:?}"
    );
    let mut ran = Vec::new();
    for id in &keyed {
        if let Some(record) = record_of(&*store, *id).await {
            ran.push((*id, record));
        }
    }
    assert_eq!(
        ran.len(),
        1,
        "one of the two tasks with key py-order-42 has a record"
    );
    let (ran_id, ran_record) = &ran[0];
    assert_eq!(ran_record.state, TaskState::Succeeded);
    assert_eq!(ran_record.runs, 1);
    assert_eq!(ran_record.idempotency_key.as_deref(), Some("py-order-42"));
    assert_eq!(ran_record.decode_result::<u64>().unwrap(), Some(42));
    let starts: Vec<String> = read_record(&record)
        .into_iter()
        .filter(|line| line.starts_with("start "))
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "the keyed task's handler ran once: {starts:?}"
    );
    assert!(starts[0].contains(&ran_id.to_string()));
}

//! Replicas: every tick enqueued once across a restart, and a tick whose
//! replica died before submitting taken over once.

use super::*;

#[tokio::test]
async fn two_replicas_enqueue_every_tick_once_across_a_restart() {
    let ns = namespace("beat-once");
    let url = broker().await.url.clone();
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let _worker = worker(&ns, &redis_url, &url);
    let dir = flow_dir("beat-once");
    let flow = write_flow(
        &dir,
        "tick",
        "name: tick\nschedule: 1\noverlap: allow\ntasks:\n  hello:\n    task: celeriac.echo\n    input: {hi: 1}\n",
    );

    sleep_to_mid_second(0.3).await;
    let a = BeatProcess::start(&ns, &[&flow], "a").await;
    let b = BeatProcess::start(&ns, &[&flow], "b").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Kill b half-way between two ticks and start it again.
    sleep_to_mid_second(0.5).await;
    let b_log = b.kill();
    let b2 = BeatProcess::start(&ns, &[&flow], "b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sleep_to_mid_second(0.5).await;
    let a_log = a.stop();
    let b2_log = b2.stop();

    let mut by_tick: BTreeMap<i64, Vec<(&str, TaskId)>> = BTreeMap::new();
    for (replica, log) in [("a", &a_log), ("b", &b_log), ("b2", &b2_log)] {
        for (entry, tick, id) in submitted(log) {
            assert_eq!(entry, "tick:*");
            by_tick.entry(tick).or_default().push((replica, id));
        }
    }
    let ticks: Vec<i64> = by_tick.keys().copied().collect();
    assert!(
        ticks.len() >= 5,
        "too few ticks {ticks:?}:\na:\n{a_log}\nb:\n{b_log}\nb2:\n{b2_log}"
    );
    for (tick, who) in &by_tick {
        assert_eq!(who.len(), 1, "tick {tick} enqueued by {who:?}");
    }
    // No gap between the first and the last tick.
    assert_eq!(
        ticks,
        (ticks[0]..=ticks[ticks.len() - 1]).collect::<Vec<_>>(),
        "a:\n{a_log}\nb:\n{b_log}\nb2:\n{b2_log}"
    );
    // Both replicas saw the ticks: each submitted them or found them taken.
    for log in [&a_log, &b2_log] {
        let summary = log
            .lines()
            .find(|l| l.starts_with("beat stopped:"))
            .unwrap_or_else(|| panic!("no summary in {log}"));
        let numbers: Vec<u64> = summary
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        assert!(numbers[0] + numbers[1] >= 2, "{summary}");
    }
    // The ids are the tick keys' UUIDs.
    let entry = BeatEntry::new(
        "tick",
        None,
        Schedule::interval_secs(1.0).unwrap(),
        Overlap::Allow,
        |id| Workflow { id, nodes: vec![] },
    );
    let runs: Vec<TaskId> = by_tick
        .iter()
        .map(|(tick, who)| {
            assert_eq!(who[0].1, entry.run_id(*tick));
            who[0].1
        })
        .collect();
    // Every run ran its node once, with its input.
    for record in finished_runs(&store, &runs, "hello").await {
        let result: serde_json::Value = record.decode_result().unwrap().unwrap();
        assert_eq!(result, serde_json::json!({"hi": 1}));
    }
}

/// A beat replica in this process, stopped after `run_for`.
async fn run_replica(
    producer: &Producer,
    state: &RedisBeatState,
    entry: &BeatEntry,
    replica: &str,
    run_for: Duration,
) -> BeatStats {
    let options = BeatOptions {
        replica: replica.into(),
        poll: Duration::from_millis(100),
        ..BeatOptions::default()
    };
    Beat::new(
        producer.clone(),
        Arc::new(state.clone()),
        vec![entry.clone()],
    )
    .options(options)
    .run(tokio::time::sleep(run_for))
    .await
    .unwrap()
}

#[tokio::test]
async fn a_tick_whose_replica_died_before_submitting_is_taken_over_once() {
    let ns = namespace("beat-takeover");
    let url = broker().await.url.clone();
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let _worker = worker(&ns, &redis_url, &url);
    let producer = Producer::builder(&url)
        .namespace(&*ns)
        .store(store.clone())
        .connect()
        .await
        .unwrap();
    let state = RedisBeatState::connect(&redis_url, &ns).await.unwrap();
    let (lease, ttl) = (Duration::from_millis(1500), Duration::from_secs(3600));
    let entry = |flow: &str, secs: f64| {
        BeatEntry::new(
            flow,
            None,
            Schedule::interval_secs(secs).unwrap(),
            Overlap::Allow,
            |id| {
                let mut wf = Workflow::new();
                wf.id = id;
                wf.push(Node::new("a", "celeriac.noop", rmpv::Value::Nil));
                wf
            },
        )
    };
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };

    // Two live replicas; a third took the next tick and died before
    // submitting it: once its lease ends, one of the two takes the tick
    // over, and it runs once.
    let every = entry("every", 1.0);
    let label = every.label();
    sleep_to_mid_second(0.3).await;
    let dead_tick = now() + 1;
    assert_eq!(
        state
            .claim_tick(&label, dead_tick, "dead", lease, ttl)
            .await
            .unwrap(),
        TickClaim::Claimed
    );
    let run_for = Duration::from_millis(4200);
    let (b, c) = tokio::join!(
        run_replica(&producer, &state, &every, "b", run_for),
        run_replica(&producer, &state, &every, "c", run_for),
    );
    assert_eq!(b.taken_over + c.taken_over, 1, "b: {b:?}\nc: {c:?}");
    assert_eq!(b.failed + c.failed, 0, "b: {b:?}\nc: {c:?}");
    assert!(b.submitted + c.submitted >= 3, "b: {b:?}\nc: {c:?}");
    let last = now();
    let runs: Vec<TaskId> = (dead_tick..last).map(|t| every.run_id(t)).collect();
    // Every tick from the dead one on ran its node once.
    finished_runs(&store, &runs, "a").await;
    assert_eq!(
        state
            .claim_tick(&label, dead_tick, "late", lease, ttl)
            .await
            .unwrap(),
        TickClaim::Done
    );

    // A replica starting after the one that died looks at the latest
    // claimed tick too.
    let hourly = entry("hourly", 3600.0);
    let label = hourly.label();
    let tick = hourly
        .schedule()
        .latest_at_or_before(SystemTime::now())
        .map(celeriac_producer::schedule::unix_secs)
        .unwrap();
    assert!(state
        .claim_tick(&label, tick, "dead", Duration::from_millis(300), ttl)
        .await
        .unwrap()
        .is_ours());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let d = run_replica(&producer, &state, &hourly, "d", Duration::from_millis(800)).await;
    assert_eq!((d.taken_over, d.submitted), (1, 1), "{d:?}");
    finished_runs(&store, &[hourly.run_id(tick)], "a").await;
    let e = run_replica(&producer, &state, &hourly, "e", Duration::from_millis(300)).await;
    assert_eq!((e.taken_over, e.submitted), (0, 0), "{e:?}");
}

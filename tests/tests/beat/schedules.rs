//! Schedules: the overlap policies, refused schedules, and missed ticks
//! after downtime.

use super::*;

#[tokio::test]
async fn overlap_skip_queue_and_allow() {
    let ns = namespace("beat-overlap");
    let url = broker().await.url.clone();
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let _worker = worker(&ns, &redis_url, &url);
    let dir = flow_dir("beat-overlap");
    let files: Vec<PathBuf> = ["skip", "queue", "allow"]
        .iter()
        .map(|policy| {
            write_flow(
                &dir,
                policy,
                &format!(
                    "name: {policy}\nschedule: 1\noverlap: {policy}\ntasks:\n  slow:\n    task: celeriac.sleep\n    input: {{ms: 2200}}\n"
                ),
            )
        })
        .collect();
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();

    sleep_to_mid_second(0.3).await;
    let beat = BeatProcess::start(&ns, &paths, "one").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = beat.stop();

    let mut runs: HashMap<String, Vec<TaskId>> = HashMap::new();
    for (entry, _, id) in submitted(&log) {
        runs.entry(entry).or_default().push(id);
    }
    let count = |entry: &str, what: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("entry={entry}")) && l.contains(what))
            .count()
    };
    let windows = |records: &[TaskRecord]| -> Vec<(u64, u64)> {
        let mut w: Vec<(u64, u64)> = records
            .iter()
            .map(|r| (r.started_at.unwrap(), r.finished_at.unwrap()))
            .collect();
        w.sort();
        w
    };

    // skip: ticks while a run goes are dropped; runs never overlap.
    let skip = finished_runs(&store, &runs["skip:*"], "slow").await;
    assert!(count("skip:*", "tick skipped") >= 2, "{log}");
    assert!(skip.len() >= 2, "{log}");
    for pair in windows(&skip).windows(2) {
        assert!(pair[1].0 >= pair[0].1, "skip runs overlap: {pair:?}\n{log}");
    }

    // allow: every tick runs, and runs overlap.
    let allow = finished_runs(&store, &runs["allow:*"], "slow").await;
    assert!(allow.len() >= 5, "{log}");
    assert_eq!(
        count("allow:*", "tick skipped") + count("allow:*", "tick queued"),
        0
    );
    let w = windows(&allow);
    assert!(
        w.windows(2).any(|p| p[1].0 < p[0].1),
        "allow runs never overlapped: {w:?}"
    );

    // queue: a tick waits for the run before it and starts soon after it
    // ends (not at the next tick); at most one waits, so fewer runs than
    // ticks, and runs never overlap.
    let queue = finished_runs(&store, &runs["queue:*"], "slow").await;
    assert!(count("queue:*", "tick queued") >= 2, "{log}");
    assert!(queue.len() >= 2, "{log}");
    assert!(queue.len() < allow.len(), "queue built a backlog\n{log}");
    let waited: Vec<i64> = log
        .lines()
        .filter(|l| l.contains("entry=queue:*") && l.contains("tick queued"))
        .map(|l| field(l, "tick").parse().unwrap())
        .collect();
    assert!(
        submitted(&log)
            .iter()
            .any(|(entry, tick, _)| entry == "queue:*" && waited.contains(tick)),
        "no queued tick ran later\n{log}"
    );
    for pair in windows(&queue).windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "queue runs overlap: {pair:?}\n{log}"
        );
        assert!(
            pair[1].0 - pair[0].1 < 3000,
            "the queued run started {} ms after the one before it ended\n{log}",
            pair[1].0 - pair[0].1
        );
    }
}

#[tokio::test]
async fn invalid_schedules_are_refused() {
    let dir = flow_dir("beat-invalid");
    let run = |path: &Path| {
        let out = Command::new(celeriac_cli())
            .args(["beat", "--check"])
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A child scheduled less often than its parent.
    let child = write_flow(
        &dir,
        "child",
        "name: child\nschedule: 60\ntasks:\n  hourly:\n    task: celeriac.noop\n    schedule: \"0 * * * *\"\n",
    );
    let (code, err) = run(&child);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("hourly") && err.contains("less often"),
        "{err}"
    );

    // A cron expression that does not parse names itself.
    let cron = write_flow(
        &dir,
        "cron",
        "name: cron\nschedule: \"61 * * * *\"\ntasks:\n  a: {task: celeriac.noop}\n",
    );
    let (code, err) = run(&cron);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("61 * * * *"), "{err}");

    // Nothing scheduled at all.
    let none = write_flow(
        &dir,
        "none",
        "name: none\ntasks:\n  a: {task: celeriac.noop}\n",
    );
    let (code, err) = run(&none);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no schedule"), "{err}");

    // A valid file prints its schedules and their next ticks.
    let ok = write_flow(
        &dir,
        "ok",
        "name: ok\nschedule: 60\ntasks:\n  a: {task: celeriac.noop, schedule: 30}\n",
    );
    let out = Command::new(celeriac_cli())
        .args(["beat", "--check"])
        .arg(&ok)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok:*") && text.contains("ok:a"), "{text}");

    // A directory stands for its YAML files.
    let only = flow_dir("beat-dir");
    std::fs::copy(&ok, only.join("ok.yml")).unwrap();
    let out = Command::new(celeriac_cli())
        .args(["beat", "--check"])
        .arg(&only)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok:a"), "{text}");
}

#[tokio::test]
async fn after_downtime_only_the_latest_missed_tick_is_enqueued() {
    let ns = namespace("beat-downtime");
    let dir = flow_dir("beat-downtime");
    let flow = write_flow(
        &dir,
        "gap",
        "name: gap\nschedule: 1\noverlap: allow\ntasks:\n  a: {task: celeriac.noop}\n",
    );
    sleep_to_mid_second(0.3).await;
    let first = BeatProcess::start(&ns, &[&flow], "one").await;
    first
        .wait_for_log("submitted", Duration::from_secs(20))
        .await;
    let first_log = first.stop();
    let before: Vec<i64> = submitted(&first_log).iter().map(|s| s.1).collect();
    assert!(!before.is_empty(), "{first_log}");

    // Down for two ticks or more.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let second = BeatProcess::start(&ns, &[&flow], "one").await;
    second
        .wait_for_log("ticks missed", Duration::from_secs(20))
        .await;
    // One more second: the tick after the restart is enqueued as usual.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second_log = second.stop();
    let after: Vec<i64> = submitted(&second_log).iter().map(|s| s.1).collect();

    // The restart announces the missed ticks once, naming the one it
    // enqueues: the latest, two or more past the last one before.
    let last_before = *before.last().unwrap();
    let warnings: Vec<&str> = second_log
        .lines()
        .filter(|l| l.contains("ticks missed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{second_log}");
    let caught_up: i64 = field(warnings[0], "tick").parse().unwrap();
    assert!(
        caught_up >= last_before + 2,
        "the caught-up tick is the latest missed one: {caught_up} after {last_before}"
    );
    // It is submitted first, then the ticks that follow, one each: none of
    // the older missed ticks.
    assert_eq!(after.first(), Some(&caught_up), "{after:?}\n{second_log}");
    let expected: Vec<i64> = (caught_up..caught_up + after.len() as i64).collect();
    assert_eq!(after, expected, "{second_log}");
    assert!(
        second_log.contains("missed, 0 failed") && !second_log.contains(" 0 missed"),
        "{second_log}"
    );
}

//! `celeriac beat`: two replicas (one killed and restarted mid-run) enqueue
//! every tick exactly once; a tick whose replica died between claiming it
//! and submitting its run is taken over and enqueued once; the overlap
//! policies skip, queue and allow; a child scheduled less often than its
//! parent is refused.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celeriac_producer::beat::{
    Beat, BeatEntry, BeatOptions, BeatState, BeatStats, RedisBeatState, TickClaim,
};
use celeriac_producer::schedule::{Overlap, Schedule};
use celeriac_producer::Producer;
use celeriac_schema::store::{Store, StoreSettings, TaskRecord, WorkflowState};
use celeriac_schema::workflow::{node_task_id, Node, Workflow};
use celeriac_schema::{TaskId, TaskState};
use celeriac_tests::{
    broker, celeriac_cli, namespace, record_file, redis, redis_store, WorkerProcess,
};

/// A `celeriac beat` process whose log goes to a file.
struct BeatProcess {
    child: Child,
    log: PathBuf,
}

impl BeatProcess {
    async fn start(ns: &str, files: &[&Path], replica: &str) -> BeatProcess {
        BeatProcess::start_with(ns, files, replica, &["--metrics-addr", "off"]).await
    }

    /// Starts beat with `extra` arguments (its metrics server's, say).
    async fn start_with(ns: &str, files: &[&Path], replica: &str, extra: &[&str]) -> BeatProcess {
        let log = record_file(&format!("beat-{replica}"));
        let child = Command::new(celeriac_cli())
            .arg("beat")
            .args(files)
            .args(["--namespace", ns, "--replica", replica])
            .args(extra)
            .env("AMQP_ADDR", &broker().await.url)
            .env("REDIS_URL", &redis().await.url)
            .env("RUST_LOG", "info,lapin=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        BeatProcess { child, log }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until its log holds `needle` (beat starts slowly on a busy
    /// machine), failing the test after `timeout`.
    async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(needle) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "beat did not log {needle:?} within {timeout:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it with SIGTERM and asserts a clean exit.
    fn stop(mut self) -> String {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "beat did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "beat exited with {status}:\n{log}");
        assert!(log.contains("beat stopped"), "{log}");
        log
    }

    /// Kills it with SIGKILL.
    fn kill(mut self) -> String {
        self.signal("KILL");
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BeatProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `(entry, tick, workflow id)` of every `submitted` line of a beat log.
fn submitted(log: &str) -> Vec<(String, i64, TaskId)> {
    log.lines()
        .filter(|line| line.contains(" submitted "))
        .map(|line| {
            (
                field(line, "entry").to_owned(),
                field(line, "tick").parse().unwrap(),
                field(line, "workflow").parse().unwrap(),
            )
        })
        .collect()
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let pattern = format!(" {name}=");
    let start = line
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        + pattern.len();
    line[start..].split_whitespace().next().unwrap_or("")
}

fn write_flow(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn flow_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("celeriac-tests")
        .join(format!("{test}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn worker(ns: &str, redis_url: &str, url: &str) -> WorkerProcess {
    WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        url,
        ns,
        &record_file("beat-worker"),
        &["--redis-url", redis_url],
    )
}

/// Sleeps until `frac` of a second past the next whole second, far from
/// the ticks of a one-second schedule.
async fn sleep_to_mid_second(frac: f64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = now.as_secs_f64().fract();
    let wait = if into < frac {
        frac - into
    } else {
        1.0 - into + frac
    };
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
}

/// Waits until every workflow finished; returns each run's node record.
async fn finished_runs(store: &Arc<dyn Store>, runs: &[TaskId], node: &str) -> Vec<TaskRecord> {
    let mut records = Vec::new();
    for &run in runs {
        let done = store
            .wait_workflow(run, Duration::from_secs(20))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("workflow {run} did not finish"));
        assert_eq!(done.state, WorkflowState::Succeeded, "{done:?}");
        let record = store.get(node_task_id(run, node)).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Succeeded);
        assert_eq!(record.runs, 1, "node of {run} ran {} times", record.runs);
        records.push(record);
    }
    records
}

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

/// Beat serves its tick counters, the time of its last tick and its
/// readiness; `/metrics` needs the token when one is set.
#[tokio::test]
async fn beat_serves_metrics_and_probes() {
    let ns = namespace("beat-metrics");
    let dir = flow_dir("beat-metrics");
    let flow = write_flow(
        &dir,
        "every",
        "name: every\nschedule: 1\noverlap: allow\ntasks:\n  a: {task: celeriac.noop}\n",
    );
    let token = dir.join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let addr_arg = addr.to_string();
    let token_arg = token.to_str().unwrap();
    let beat = BeatProcess::start_with(
        &ns,
        &[flow.as_path()],
        "m",
        &[
            "--metrics-addr",
            &addr_arg,
            "--metrics-token-file",
            token_arg,
        ],
    )
    .await;
    beat.wait_for_log("submitted", Duration::from_secs(20))
        .await;
    let (status, _) = celeriac_tests::http::get(addr, "/readyz").await;
    assert_eq!(status, 200, "ready once ticking");
    let (status, _) = celeriac_tests::http::get(addr, "/metrics").await;
    assert_eq!(status, 401, "the token is required");
    let (status, body) =
        celeriac_tests::http::get_with(addr, "/metrics", "Authorization: Bearer t0ken\r\n").await;
    assert_eq!(status, 200, "{body}");
    let value = |series: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{body}"))
    };
    assert!(value(r#"celeriac_beat_ticks_total{outcome="submitted"}"#) >= 1.0);
    assert_eq!(value(r#"celeriac_beat_ticks_total{outcome="failed"}"#), 0.0);
    assert_eq!(value("celeriac_beat_entries"), 1.0);
    assert_eq!(value("celeriac_beat_up"), 1.0);
    // Beat's producer counts what it sent in the same registry.
    assert!(
        value(r#"celeriac_tasks_sent_total{queue="default",task="celeriac.noop"}"#) >= 1.0,
        "{body}"
    );
    assert!(value("celeriac_publish_confirm_seconds_count") >= 1.0);
    let last = value("celeriac_beat_last_tick_timestamp_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - last < 10.0 && last <= now + 1.0,
        "last tick {last}, now {now}"
    );
    let log = beat.stop();
    assert!(log.contains("submitted"), "{log}");
    // Once beat is gone, nothing answers.
    assert_eq!(celeriac_tests::http::get(addr, "/healthz").await.0, 0);
}

/// A metrics address that is taken fails beat at start, with the flag named.
#[tokio::test]
async fn beat_refuses_a_taken_metrics_address() {
    let ns = namespace("beat-taken");
    let dir = flow_dir("beat-taken");
    let flow = write_flow(
        &dir,
        "every",
        "name: every\nschedule: 1\ntasks:\n  a: {task: celeriac.noop}\n",
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(celeriac_cli())
        .arg("beat")
        .arg(&flow)
        .args(["--namespace", &ns, "--metrics-addr", &addr.to_string()])
        .env("AMQP_ADDR", &broker().await.url)
        .env("REDIS_URL", &redis().await.url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--metrics-addr"), "{stderr}");
    drop(taken);
}

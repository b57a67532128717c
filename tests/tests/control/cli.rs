//! The `celeriac revoke` and `celeriac workers` binaries against live
//! workers: a program's whole process group killed by a revocation; the
//! worker list with its fields, and a killed worker shown lost and counted
//! by a live one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_consumer::Worker;
use celeriac_producer::{Error, Producer, SendOptions};
use celeriac_schema::exec::{Exec, ExecInput, ExecSpec};
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_schema::{now_ms, TaskState};
use celeriac_tests::{broker, namespace, record_file, redis, redis_store, WorkerProcess};

use crate::support::{
    celeriac, described, json_lines, pid_in, process_gone, registry, until, Cluster, Runs, Sleep,
    WAIT,
};

#[tokio::test]
async fn the_revoke_command_kills_a_running_programs_process_group() {
    let mut cluster = Cluster::new("ctl-cli-revoke").await;
    for id in ["c1", "c2", "c3"] {
        cluster.start_worker(id, |b| b.concurrency(2)).await;
    }
    let child = record_file("ctl-cli-revoke-child");
    // No trap would help: KILL cannot be caught. The background sleep
    // shares the shell's process group and would outlive the shell alone.
    let script = "sleep 300 & echo $! > \"$1\"; wait";
    let spec = ExecSpec::new("sh").args(["-c", script, "sh", child.to_str().unwrap()]);
    let handle = cluster
        .producer
        .send::<Exec>(&ExecInput::new(spec, rmpv::Value::Nil), &SendOptions::new())
        .await
        .unwrap();
    let sleeper = pid_in(&child).await;
    assert!(!process_gone(sleeper), "the background child runs");

    let id = handle.id().to_string();
    let started = Instant::now();
    let output = celeriac(
        &cluster.ns,
        &[
            "revoke",
            &id,
            "--terminate",
            "--signal",
            "KILL",
            "--json",
            "-d",
            "c1,c2,c3",
            "--timeout",
            "5s",
        ],
        true,
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", described(&output));
    let lines = json_lines(&output);
    let mut workers: Vec<&str> = lines
        .iter()
        .map(|l| l["worker"].as_str().unwrap())
        .collect();
    workers.sort();
    assert_eq!(workers, ["c1", "c2", "c3"], "{}", described(&output));
    for line in &lines {
        assert_eq!(line["ok"], true, "{line}");
        assert_eq!(line["error"], serde_json::Value::Null, "{line}");
        assert_eq!(line["result"]["revoked"], 1, "{line}");
    }
    let terminated: u64 = lines
        .iter()
        .map(|l| l["result"]["terminated"].as_u64().unwrap())
        .sum();
    assert_eq!(terminated, 1, "one worker ran it: {lines:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "every named worker answered before the timeout: {:?}",
        started.elapsed()
    );

    assert!(matches!(
        handle.wait(WAIT).await,
        Err(Error::TaskRevoked { .. })
    ));
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Revoked);
    assert_eq!(record.error.unwrap().error_type, "Revoked");
    until("the program's background child is killed too", || {
        process_gone(sleeper)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "KILL needs no grace: {:?}",
        started.elapsed()
    );
    until("the run is counted as revoked", || {
        cluster
            .workers
            .iter()
            .map(|w| w.stats().revoked)
            .sum::<u64>()
            == 1
    })
    .await;
    let _ = std::fs::remove_file(&child);
}

/// One `celeriac workers --json` line per worker id.
async fn workers_listed(ns: &str) -> (std::process::Output, Vec<serde_json::Value>) {
    let output = celeriac(ns, &["workers", "--json", "--timeout", "5s"], true).await;
    let lines = json_lines(&output);
    (output, lines)
}

fn line_of<'a>(lines: &'a [serde_json::Value], worker: &str) -> Option<&'a serde_json::Value> {
    lines.iter().find(|l| l["worker"] == worker)
}

fn sorted_queues(line: &serde_json::Value) -> Vec<String> {
    let mut queues: Vec<String> = line["queues"]
        .as_array()
        .unwrap_or_else(|| panic!("queues: {line}"))
        .iter()
        .map(|q| q.as_str().unwrap().to_owned())
        .collect();
    queues.sort();
    queues
}

fn metric(scrape: &str, name: &str) -> Option<u64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

#[tokio::test]
async fn the_workers_command_lists_live_workers_and_shows_a_killed_one_lost() {
    let test_started = now_ms();
    let ns = namespace("ctl-workers").with_queue("wa").with_queue("wb");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let url = broker().await.url.clone();
    let heartbeat = Duration::from_millis(300);

    // A: in this process, serving /metrics; consumes `default` and `wa`.
    let runs = Arc::new(Runs::default());
    let worker = Worker::builder(&url, registry(&runs))
        .namespace(&*ns)
        .worker_id("wl-a")
        .store(store.clone())
        .heartbeat(heartbeat)
        .concurrency(4)
        .queues(["default", "wa"])
        .grace(Duration::from_secs(5))
        .metrics_addr(([127, 0, 0, 1], 0).into())
        .build()
        .unwrap();
    let a = worker.handle();
    let metrics_addr: SocketAddr = a.metrics_addr().unwrap();
    let run_a = tokio::spawn(worker.run());
    // B: a worker process, killed later; consumes `default` and `wb`.
    let redis_url = redis().await.url.clone();
    let mut b = WorkerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &url,
        &ns,
        &record_file("ctl-workers"),
        &[
            "--worker-id",
            "wl-b",
            "--redis-url",
            &redis_url,
            "--heartbeat",
            "300ms",
            "--concurrency",
            "3",
            "--queue",
            "default,wb",
        ],
    );

    // A task only A consumes, so that A has one in flight.
    let producer = Producer::builder(&url)
        .namespace(&*ns)
        .store(store.clone())
        .connect()
        .await
        .unwrap();
    let busy = producer
        .send::<Sleep>(&60_000, &SendOptions::new().queue("wa"))
        .await
        .unwrap();
    until("A runs the task", || runs.has_started(busy.id())).await;

    let mut listed = None;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let (output, lines) = workers_listed(&ns).await;
        let ready = |id: &str| line_of(&lines, id).is_some_and(|l| l["state"] == "online");
        if ready("wl-a")
            && ready("wl-b")
            && line_of(&lines, "wl-a").is_some_and(|l| l["in_flight"] == 1)
        {
            listed = Some((output, lines));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (output, lines) = listed.expect("both workers are listed online, A with its task");
    assert_eq!(output.status.code(), Some(0), "{}", described(&output));
    assert_eq!(lines.len(), 2, "{}", described(&output));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let listed_at = now_ms();
    for (id, pid, queues, concurrency, in_flight) in [
        ("wl-a", std::process::id(), ["default", "wa"], 4, 1),
        ("wl-b", b.pid(), ["default", "wb"], 3, 0),
    ] {
        let line = line_of(&lines, id).unwrap();
        assert_eq!(line["hostname"], hostname.trim(), "{line}");
        assert_eq!(line["pid"], pid, "{line}");
        assert_eq!(sorted_queues(line), queues, "{line}");
        assert_eq!(line["concurrency"], concurrency, "{line}");
        assert_eq!(line["in_flight"], in_flight, "{line}");
        assert_eq!(line["version"], env!("CARGO_PKG_VERSION"), "{line}");
        let uptime = line["uptime_ms"].as_u64().unwrap();
        assert!(
            uptime <= listed_at - test_started,
            "started during the test: {line}"
        );
        let last = line["last_heartbeat"].as_u64().unwrap();
        assert!(
            (test_started..=listed_at).contains(&last),
            "a heartbeat of this test: {line}"
        );
        let age = line["last_heartbeat_age_ms"].as_u64().unwrap();
        assert!(age < 3 * 300, "beating every 300 ms: {line}");
    }
    assert!(
        line_of(&lines, "wl-a").unwrap()["processed"]
            .as_u64()
            .unwrap()
            >= 1
    );

    b.signal("KILL");
    assert!(b.wait_timeout(Duration::from_secs(5)).is_some());
    let killed_at = Instant::now();
    let mut lost = None;
    while killed_at.elapsed() < WAIT {
        let (output, lines) = workers_listed(&ns).await;
        if line_of(&lines, "wl-b").is_some_and(|l| l["state"] == "lost") {
            lost = Some((output, lines));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (output, lines) = lost.expect("the killed worker is shown lost");
    assert_eq!(
        output.status.code(),
        Some(0),
        "a live worker is left: {}",
        described(&output)
    );
    let a_line = line_of(&lines, "wl-a").unwrap();
    assert_eq!(a_line["state"], "online", "{a_line}");
    let b_line = line_of(&lines, "wl-b").unwrap();
    assert!(
        b_line["last_heartbeat_age_ms"].as_u64().unwrap() > 3 * 300,
        "silent for three heartbeats: {b_line}"
    );

    let mut scrape = String::new();
    let mut counted = false;
    while killed_at.elapsed() < WAIT && !counted {
        let (status, body) = celeriac_tests::http::get(metrics_addr, "/metrics").await;
        counted = status == 200
            && metric(&body, "celeriac_workers_lost_total") == Some(1)
            && metric(&body, "celeriac_workers_live") == Some(1);
        scrape = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        counted,
        "the live worker counted the lost one: {:?}",
        scrape
            .lines()
            .filter(|l| l.contains("celeriac_workers_"))
            .collect::<Vec<_>>()
    );

    a.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(15), run_a).await;
}

#[tokio::test]
async fn the_workers_command_bounds_its_wait_for_a_silent_store() {
    let mut cluster = Cluster::without_store("ctl-workers-silent").await;
    cluster.start_worker("ws-1", |b| b.concurrency(2)).await;
    // A store that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let output = tokio::process::Command::new(celeriac_tests::celeriac_cli())
        .args(["--namespace", &cluster.ns])
        .args(["workers", "--json", "--timeout", "500ms"])
        .env("AMQP_ADDR", &broker().await.url)
        .env(
            "REDIS_URL",
            format!("redis://{}", silent.local_addr().unwrap()),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(0), "{}", described(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no answer from the store within 500ms"),
        "{}",
        described(&output)
    );
    // The store's own limit is 5 s: the command gave up on it sooner and
    // asked the workers.
    assert!(took < Duration::from_secs(4), "{took:?}");
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1, "{}", described(&output));
    assert_eq!(lines[0]["worker"], "ws-1");
    assert_eq!(lines[0]["state"], "online");
    assert_eq!(lines[0]["concurrency"], 2);
    assert_eq!(lines[0]["pid"], std::process::id());
    drop(silent);
}

//! Ping and inspect with a killed worker; concurrency and queues changed
//! at run time.

use std::process::Command as Process;
use std::time::{Duration, Instant};

use celeriac_producer::control::ControlOptions;
use celeriac_producer::SendOptions;
use celeriac_schema::control::{Command, Inspect};
use celeriac_tests::{broker, celeriac_cli, record_file, WorkerProcess};

use crate::support::{until, Cluster, Sleep, WAIT};

#[tokio::test]
async fn ping_and_inspect_answer_from_the_living_when_one_worker_is_killed() {
    let cluster = Cluster::new("ctl-kill").await;
    let url = broker().await.url.clone();
    let record = record_file("ctl-kill");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker"));
    let mut workers: Vec<WorkerProcess> = ["p1", "p2", "p3"]
        .iter()
        .map(|id| WorkerProcess::start(bin, &url, &cluster.ns, &record, &["--worker-id", id]))
        .collect();
    let all = ControlOptions::new()
        .destination(["p1", "p2", "p3"])
        .timeout(Duration::from_secs(1));
    let mut answered = false;
    for _ in 0..30 {
        let replies = cluster.producer.control(Command::Ping, &all).await.unwrap();
        if replies.missing.is_empty() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered, "the three workers answer a ping");
    workers[1].signal("KILL");
    assert!(workers[1].wait_timeout(Duration::from_secs(5)).is_some());

    let started = Instant::now();
    let output = Process::new(celeriac_cli())
        .args([
            "--namespace",
            &cluster.ns,
            "ping",
            "-d",
            "p1,p2,p3",
            "--timeout",
            "1500ms",
            "--json",
        ])
        .env("AMQP_ADDR", &url)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(4),
        "not every named worker replied: {stdout}"
    );
    assert!(
        took < Duration::from_secs(5),
        "within the timeout: {took:?}"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ok: Vec<&str> = lines
        .iter()
        .filter(|l| l["ok"] == true)
        .map(|l| l["worker"].as_str().unwrap())
        .collect();
    assert_eq!(ok.len(), 2, "{stdout}");
    assert!(!ok.contains(&"p2"));
    assert!(lines
        .iter()
        .any(|l| l["worker"] == "p2" && l["error"] == "no reply"));

    let replies = cluster
        .producer
        .control(
            Command::Inspect {
                what: Inspect::Stats,
            },
            &ControlOptions::new().timeout(Duration::from_millis(800)),
        )
        .await
        .unwrap();
    let mut names: Vec<&str> = replies.replies.iter().map(|r| r.worker.as_str()).collect();
    names.sort();
    assert_eq!(names, ["p1", "p3"], "a broadcast is answered by the living");
    assert!(replies.replies.iter().all(|r| r.ok && r.result.is_some()));
}

#[tokio::test]
async fn concurrency_and_queues_change_without_a_restart() {
    let mut cluster = Cluster::new("ctl-runtime").await;
    cluster
        .start_worker("r1", |b| b.concurrency(1).prefetch(10))
        .await;
    let runs = cluster.runs.clone();
    let mut handles = Vec::new();
    for _ in 0..3 {
        handles.push(
            cluster
                .producer
                .send::<Sleep>(&300, &SendOptions::new())
                .await
                .unwrap(),
        );
    }
    until("one task runs", || runs.count() >= 1).await;
    let options = ControlOptions::new().destination(["r1"]);
    let replies = cluster
        .producer
        .control(
            Command::Inspect {
                what: Inspect::Reserved,
            },
            &options,
        )
        .await
        .unwrap();
    let reserved = serde_json::to_value(replies.replies[0].result.as_ref().unwrap()).unwrap();
    assert!(
        !reserved.as_array().unwrap().is_empty(),
        "the others wait: {reserved}"
    );
    for handle in handles.drain(..) {
        handle.wait(WAIT).await.unwrap();
    }
    assert_eq!(runs.peak.load(std::sync::atomic::Ordering::SeqCst), 1);

    let replies = cluster
        .producer
        .control(Command::SetConcurrency { concurrency: 3 }, &options)
        .await
        .unwrap();
    assert!(replies.replies[0].ok);
    for _ in 0..3 {
        handles.push(
            cluster
                .producer
                .send::<Sleep>(&400, &SendOptions::new())
                .await
                .unwrap(),
        );
    }
    for handle in handles.drain(..) {
        handle.wait(WAIT).await.unwrap();
    }
    assert_eq!(
        runs.peak.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "three at once now"
    );

    let extra = cluster
        .producer
        .send::<Sleep>(&1, &SendOptions::new().queue("extra"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!runs.has_started(extra.id()), "nobody consumes `extra` yet");
    let replies = cluster
        .producer
        .control(
            Command::AddConsumer {
                queue: "extra".into(),
            },
            &options,
        )
        .await
        .unwrap();
    assert!(replies.replies[0].ok, "{:?}", replies.replies);
    assert_eq!(extra.wait(WAIT).await.unwrap(), 1);

    let replies = cluster
        .producer
        .control(
            Command::CancelConsumer {
                queue: "extra".into(),
            },
            &options,
        )
        .await
        .unwrap();
    assert!(replies.replies[0].ok);
    let later = cluster
        .producer
        .send::<Sleep>(&1, &SendOptions::new().queue("extra"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !runs.has_started(later.id()),
        "`extra` is no longer consumed"
    );
    let conf = cluster
        .producer
        .control(
            Command::Inspect {
                what: Inspect::Conf,
            },
            &options,
        )
        .await
        .unwrap();
    let conf = serde_json::to_value(conf.replies[0].result.as_ref().unwrap()).unwrap();
    assert_eq!(conf["concurrency"], 3);
    assert_eq!(conf["queues"], serde_json::json!(["default"]));
}

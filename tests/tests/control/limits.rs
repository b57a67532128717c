//! Rate limits set by the CLI, kept in the store, obeyed by a worker
//! started afterwards.

use std::process::Command as Process;
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_tests::{broker, celeriac_cli, redis};

use crate::support::{Cluster, Sleep, WAIT};

#[tokio::test]
async fn a_rate_limit_set_by_the_cli_binds_a_worker_started_later() {
    let mut cluster = Cluster::new("ctl-rate").await;
    let output = Process::new(celeriac_cli())
        .args([
            "--namespace",
            &cluster.ns,
            "control",
            "rate-limit",
            "test.sleep",
            "4/s",
            "--timeout",
            "200ms",
        ])
        .env("AMQP_ADDR", &broker().await.url)
        .env("REDIS_URL", &redis().await.url)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "stored with no worker listening: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bad = Process::new(celeriac_cli())
        .args([
            "--namespace",
            &cluster.ns,
            "control",
            "rate-limit",
            "test.sleep",
            "4/d",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a bad rate is a usage error");

    cluster.start_worker("rate-1", |b| b.concurrency(8)).await;
    let mut handles = Vec::new();
    for _ in 0..5 {
        handles.push(
            cluster
                .producer
                .send::<Sleep>(&1, &SendOptions::new())
                .await
                .unwrap(),
        );
    }
    for handle in handles {
        handle.wait(WAIT).await.unwrap();
    }
    let mut starts = cluster.runs.starts.lock().unwrap().clone();
    starts.sort();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(200)),
        "starts are spaced by the rate of 4/s: {gaps:?}"
    );
}

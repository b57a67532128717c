//! Beat's metrics and probes, and a metrics address already taken.

use super::*;

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

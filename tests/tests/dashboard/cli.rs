//! `celeriac dashboard`: serves until SIGTERM, read-only without a login,
//! and refuses a bad login file.

use std::process::{Command, Stdio};
use std::time::Duration;

use celeriac_tests::{broker, celeriac_cli, namespace, redis};

use crate::support::{request, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_serves_read_only_until_sigterm() {
    let ns = namespace("dash-cli");
    let url = broker().await.url.clone();
    let redis_url = redis().await.url.clone();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(celeriac_cli())
        .args(["dashboard", "--listen", &listen, "--namespace", ns.name()])
        .env("AMQP_ADDR", &url)
        .env("REDIS_URL", &redis_url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listen.parse().unwrap();
    let config = until(
        Duration::from_secs(30),
        "the dashboard to answer",
        || async {
            let exchange = tokio::net::TcpStream::connect(addr).await.ok()?;
            drop(exchange);
            let reply = request(addr, "GET", "/api/config", &[], None).await;
            (reply.status == 200).then(|| reply.json())
        },
    )
    .await;
    assert_eq!(config["namespace"], ns.name());
    assert_eq!(config["read_only"], true);
    let r = request(
        addr,
        "POST",
        "/api/dead-letters/delete",
        &[],
        Some(r#"{"queue":"default","ids":["x"]}"#),
    )
    .await;
    assert_eq!(r.status, 403);
    let queues = request(addr, "GET", "/api/queues", &[], None).await;
    assert_eq!(queues.status, 200, "{}", queues.body);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard exits on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "exit 0 on SIGTERM: {exit:?}");

    // A login file that holds nothing is refused before anything starts.
    let empty = std::env::temp_dir().join(format!("celeriac-dash-empty-{}", uuid::Uuid::now_v7()));
    std::fs::write(&empty, "\n").unwrap();
    let out = Command::new(celeriac_cli())
        .args(["dashboard", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&empty)
        .args(["--namespace", ns.name()])
        .env("AMQP_ADDR", &url)
        .env("REDIS_URL", &redis_url)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&empty);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
}

/// With a login the command's revoke button revokes through the control
/// plane (a delayed task is recorded revoked and never runs; a running one
/// is stopped when the revoke asks to terminate), and the Workers page
/// lists the heartbeats workers keep in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_revokes_through_the_control_plane_and_lists_heartbeats() {
    use std::sync::Arc;

    use celeriac_consumer::{Registry, Worker};
    use celeriac_producer::{Producer, SendOptions};
    use celeriac_schema::builtin::{Noop, Sleep, SleepInput};
    use celeriac_schema::store::{Store, StoreSettings};
    use celeriac_schema::TaskState;

    let ns = namespace("dash-cli-ctl");
    let url = broker().await.url.clone();
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> =
        Arc::new(celeriac_tests::redis_store(ns.name(), StoreSettings::default()).await);
    let mut registry = Registry::new();
    celeriac_consumer::builtin::register(&mut registry);
    let worker = Worker::builder(&url, registry)
        .namespace(ns.name())
        .store(store.clone())
        .worker_id("dash-ctl-worker")
        .heartbeat(Duration::from_millis(500))
        .build()
        .unwrap();
    let worker_handle = worker.handle();
    let running = tokio::spawn(worker.run());
    let producer = Producer::builder(&url)
        .namespace(ns.name())
        .store(store.clone())
        .connect()
        .await
        .unwrap();
    let delayed = producer
        .send::<Noop>(
            &rmpv::Value::Nil,
            &SendOptions::new().countdown(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    let id = delayed.id();

    let token = std::env::temp_dir().join(format!("celeriac-dash-ctl-{}", uuid::Uuid::now_v7()));
    std::fs::write(&token, "ctl-token\n").unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(celeriac_cli())
        .args(["dashboard", "--listen", &listen, "--namespace", ns.name()])
        .arg("--token-file")
        .arg(&token)
        .env("AMQP_ADDR", &url)
        .env("REDIS_URL", &redis_url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listen.parse().unwrap();
    let auth = [("Authorization", "Bearer ctl-token")];
    let config = until(
        Duration::from_secs(30),
        "the dashboard to answer",
        || async {
            drop(tokio::net::TcpStream::connect(addr).await.ok()?);
            let reply = request(addr, "GET", "/api/config", &auth, None).await;
            (reply.status == 200).then(|| reply.json())
        },
    )
    .await;
    assert_eq!(config["revoke"], true, "{config}");

    let r = request(
        addr,
        "POST",
        &format!("/api/tasks/{id}/revoke"),
        &auth,
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{}",
        r.body
    );
    let workers = until(Duration::from_secs(15), "a heartbeat", || async {
        let reply = request(addr, "GET", "/api/workers", &auth, None).await;
        let json = reply.json();
        let listed = json["heartbeats"]
            .as_array()
            .is_some_and(|beats| beats.iter().any(|b| b["worker"] == "dash-ctl-worker"));
        listed.then_some(json)
    })
    .await;
    assert_eq!(workers["heartbeats"][0]["pid"], std::process::id());

    // A running task: revoke and terminate stops it at once (SIGTERM; a
    // handler is cancelled after a short grace), not after its minute.
    let long_task = producer
        .send::<Sleep>(&SleepInput { ms: 60_000 }, &SendOptions::new())
        .await
        .unwrap()
        .id();
    until(
        Duration::from_secs(15),
        "the long task to start",
        || async {
            let record = store.get(long_task).await.ok().flatten()?;
            (record.state == TaskState::Started).then_some(())
        },
    )
    .await;
    let asked = std::time::Instant::now();
    let r = request(
        addr,
        "POST",
        &format!("/api/tasks/{long_task}/revoke"),
        &auth,
        Some(r#"{"terminate": true}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["terminate"], true, "{}", r.body);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("SIGTERM"),
        "{}",
        r.body
    );
    until(Duration::from_secs(20), "the run to stop", || async {
        let record = store.get(long_task).await.ok().flatten()?;
        (record.state == TaskState::Revoked).then_some(())
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "stopped in {:?}",
        asked.elapsed()
    );
    let record = store.get(long_task).await.unwrap().expect("a record");
    assert_eq!(record.runs, 1, "{record:?}");
    assert!(record.result.is_none(), "{record:?}");

    // Past its countdown the task has not run: it stays revoked.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let record = store.get(id).await.unwrap().expect("a record");
    assert_eq!(record.state, TaskState::Revoked, "{record:?}");
    assert_eq!(worker_handle.stats().succeeded, 0);

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_file(&token);
    worker_handle.shutdown();
    running.await.unwrap().unwrap();
}

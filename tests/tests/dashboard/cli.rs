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

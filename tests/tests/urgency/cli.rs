//! `celeriac send --tolerance`.

use std::process::{Command, Output};

use celeriac_tests::{broker, celeriac_cli, queue_len};

use crate::support::setup;

async fn send(ns: &str, args: &[&str]) -> Output {
    Command::new(celeriac_cli())
        .arg("send")
        .args(args)
        .args(["--namespace", ns, "--no-store"])
        .env("AMQP_ADDR", &broker().await.url)
        .env_remove("REDIS_URL")
        .output()
        .unwrap()
}

#[tokio::test]
async fn celeriac_send_defers_a_task_with_a_tolerance_and_refuses_zero() {
    let (ns, _producer) = setup("tol-cli").await;
    let sent = send(&ns, &["test.mark", "--input", "\"x\"", "--tolerance", "1m"]).await;
    assert_eq!(sent.status.code(), Some(0), "{sent:?}");
    let (_conn, channel) = broker().await.channel().await;
    // A minute less its 6 s margin: the 30 s class.
    let class = ns.topology().tolerance_queue("default", 2);
    assert_eq!(queue_len(&channel, &class).await, 1);

    let refused = send(&ns, &["test.mark", "--tolerance", "0s"]).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("tolerance"), "{err}");
    assert_eq!(queue_len(&channel, &class).await, 1);
}

//! The `celeriac-worker` binary's metrics bearer token, end to end.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use celeriac_tests::{broker, eventually, TestNamespace, WorkerProcess};

use crate::support::{get, get_with};

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A `celeriac-worker` whose metrics token file holds `token`, with its
/// metrics address, its scratch directory and its namespace (whose
/// topology goes when it is dropped).
async fn worker_with_token(
    test: &str,
    token: &str,
) -> (WorkerProcess, SocketAddr, std::path::PathBuf, TestNamespace) {
    let ns = celeriac_tests::namespace(test);
    let dir = std::env::temp_dir().join(format!("celeriac-{}", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    let addr = free_port();
    let worker = WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &broker().await.url,
        ns.name(),
        &dir.join("record"),
        &[
            "--metrics-addr",
            &addr.to_string(),
            "--metrics-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    (worker, addr, dir, ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_bearer_token_and_probes_do_not() {
    let (mut worker, addr, dir, _ns) =
        worker_with_token("metrics-token", "s3cret-scrape-token\n").await;
    let up = eventually(Duration::from_secs(20), || async {
        get(addr, "/readyz").await.0 == 200
    })
    .await;
    assert!(up, "the worker never became ready on {addr}");

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 401, "no token: {body}");
    assert!(
        !body.contains("celeriac_"),
        "metrics leaked without a token"
    );
    let (status, _) = get_with(addr, "/metrics", "Authorization: Bearer wrong\r\n").await;
    assert_eq!(status, 401, "a wrong token is refused");
    let (status, body) = get_with(
        addr,
        "/metrics",
        "Authorization: Bearer s3cret-scrape-token\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("celeriac_worker_ready 1"), "{body}");
    assert_eq!(get(addr, "/healthz").await.0, 200, "probes stay open");

    worker.signal("TERM");
    assert!(
        worker.wait_timeout(Duration::from_secs(30)).is_some(),
        "the worker stops on SIGTERM"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_token_file_stops_the_worker_with_exit_code_2() {
    let (mut worker, _, dir, _ns) = worker_with_token("metrics-token-empty", "\n").await;
    let status = worker
        .wait_timeout(Duration::from_secs(20))
        .expect("the worker exits at once");
    assert_eq!(status.code(), Some(2), "invalid options exit with 2");
    std::fs::remove_dir_all(&dir).ok();
}

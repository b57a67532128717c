//! TLS to the broker and the store against real TLS servers that each test
//! sets up itself (see `celeriac_tests::tls`): a TLS listener added to the
//! running RabbitMQ, a TLS-only redis-server, certificates made on the spot.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_producer::tls::TlsOptions;
use celeriac_producer::{Error, Producer, SendOptions};
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_store::RedisStore;
use celeriac_tests::test_tasks::{Effect, EffectInput};
use celeriac_tests::tls::{connections_on, Pki, TlsBroker, TlsRedis, CLIENT_NAME};
use celeriac_tests::{namespace, record_file, WorkerProcess};
use tokio::io::AsyncReadExt;

fn worker_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker"))
}

/// Runs the `celeriac` CLI; exit code, stdout, stderr.
fn celeriac(args: &[String]) -> (i32, String, String) {
    let out = Command::new(celeriac_tests::celeriac_cli())
        .args(args)
        .env_remove("AMQP_ADDR")
        .env_remove("REDIS_URL")
        .output()
        .expect("run celeriac");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// The TLS error of a failed connect, or a panic saying what came instead.
fn tls_error<T: std::fmt::Debug>(result: celeriac_producer::Result<T>) -> (String, String) {
    match result {
        Err(Error::Tls { server, reason }) => (server, reason),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_worker_and_store_run_tasks_over_mutual_tls() {
    let pki = Pki::new("e2e");
    let broker = TlsBroker::start(&pki).await;
    let redis = TlsRedis::start(&pki);
    let ns = namespace("tls-e2e");

    // The worker binary takes the broker's certificates for Redis too.
    let mut args = strings(&["--redis-url", &redis.url, "--concurrency", "4"]);
    args.extend(pki.client_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _worker = WorkerProcess::start(
        worker_bin(),
        &broker.url,
        &ns,
        &record_file("tls-e2e"),
        &args,
    );

    let store =
        RedisStore::connect_with_tls(&redis.url, &ns, StoreSettings::default(), &pki.client())
            .await
            .expect("the store connects over mutual TLS");
    let store: Arc<dyn Store> = Arc::new(store);
    let producer = Producer::builder(&broker.url)
        .tls(pki.client())
        .namespace(&*ns)
        .store(store)
        .connect()
        .await
        .expect("the producer connects over mutual TLS");

    let mut handles = Vec::new();
    for n in 0..20u64 {
        let input = EffectInput { n, ms: 0 };
        handles.push(
            producer
                .send::<Effect>(&input, &SendOptions::new())
                .await
                .expect("sent"),
        );
    }
    for (n, handle) in (0..20u64).zip(handles) {
        let result = handle
            .wait(Duration::from_secs(30))
            .await
            .expect("the task ran and its result was stored");
        assert_eq!(result, 2 * n);
    }

    // The broker saw TLS connections with our client certificate, from the
    // producer and the worker alike.
    let connections = connections_on(broker.port).await;
    let names: HashSet<&str> = connections
        .iter()
        .map(|(name, _, _)| name.as_str())
        .collect();
    assert!(
        connections.len() >= 2,
        "expected the producer's and the worker's connections on {}: {connections:?}",
        broker.port
    );
    for (name, ssl, subject) in &connections {
        assert!(*ssl, "{name} is not TLS");
        assert!(subject.contains(CLIENT_NAME), "{name}: {subject}");
    }
    assert!(names.contains("celeriac-producer"), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("celeriac-worker")),
        "{names:?}"
    );

    // The CLI over amqps:// and rediss://, the Redis options taken from the
    // broker's: send and wait, then the status.
    let mut args = strings(&[
        "--amqp-addr",
        &broker.url,
        "--redis-url",
        &redis.url,
        "--namespace",
        &ns,
    ]);
    args.extend(pki.client_flags());
    let mut send = args.clone();
    send.extend(strings(&[
        "send",
        "test.effect",
        "--input",
        r#"{"n": 21, "ms": 0}"#,
        "--wait",
        "--json",
    ]));
    let (code, stdout, stderr) = celeriac(&send);
    assert_eq!(code, 0, "celeriac send over TLS: {stderr}");
    let sent: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(sent["result"], 42, "{stdout}");
    let id = sent["id"].as_str().expect("an id").to_owned();
    let mut status = args.clone();
    status.extend(strings(&["status", &id, "--json"]));
    let (code, stdout, stderr) = celeriac(&status);
    assert_eq!(code, 0, "celeriac status over TLS: {stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused_naming_the_host() {
    let pki = Pki::new("wrong-ca");
    let broker = TlsBroker::start(&pki).await;
    let result = Producer::builder(&broker.url)
        .tls(pki.wrong_ca())
        .namespace("t-tls-wrong-ca")
        .connect()
        .await;
    let (server, reason) = tls_error(result);
    assert_eq!(server, format!("127.0.0.1:{}", broker.port));
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert!(reason.contains("not signed by a trusted CA"), "{reason}");
    assert!(reason.contains("--tls-ca"), "{reason}");

    // The system's roots do not know the test CA either.
    let result = Producer::builder(&broker.url)
        .tls(
            TlsOptions::new()
                .cert(&pki.client_cert)
                .key(&pki.client_key),
        )
        .namespace("t-tls-wrong-ca")
        .connect()
        .await;
    let (_, reason) = tls_error(result);
    assert!(reason.contains("UnknownIssuer"), "{reason}");

    // The CLI says so and exits 1.
    let mut args = strings(&["--amqp-addr", &broker.url, "--tls-ca"]);
    args.push(pki.other_ca.display().to_string());
    args.extend(strings(&["send", "test.effect", "--no-store"]));
    let (code, _, stderr) = celeriac(&args);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "TLS connection to 127.0.0.1:{} failed",
            broker.port
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_without_a_client_certificate_is_refused() {
    let pki = Pki::new("no-client-cert");
    let broker = TlsBroker::start(&pki).await;
    let result = Producer::builder(&broker.url)
        .tls(pki.ca_only())
        .namespace("t-tls-no-cert")
        .connect()
        .await;
    let (server, reason) = tls_error(result);
    assert_eq!(server, format!("127.0.0.1:{}", broker.port));
    assert!(reason.contains("client certificate"), "{reason}");
    assert!(reason.contains("--tls-cert"), "{reason}");
}

/// A TCP server that records what its clients send, answers nothing and
/// hangs up after a second.
async fn recording_server() -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    record
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (port, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_to_a_plaintext_server_never_sends_amqp() {
    let pki = Pki::new("plaintext");
    let (port, received) = recording_server().await;
    let url = format!("amqps://guest:guest@127.0.0.1:{port}/%2f");
    let result = Producer::builder(&url)
        .tls(pki.client())
        .namespace("t-tls-plaintext")
        .connect()
        .await;
    let (server, reason) = tls_error(result);
    assert_eq!(server, format!("127.0.0.1:{port}"));
    assert!(reason.contains("TLS handshake"), "{reason}");
    let bytes = received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(!bytes.is_empty(), "the client sent nothing");
    assert_eq!(bytes[0], 0x16, "not a TLS handshake record: {bytes:02x?}");
    assert!(
        !bytes.windows(4).any(|w| w == b"AMQP"),
        "AMQP went out in plaintext"
    );

    // The broker's own plaintext port answers a ClientHello with its AMQP
    // header: the error says it is not TLS.
    let plain = celeriac_tests::broker().await.url.clone();
    let mut url = url::Url::parse(&plain).expect("the test broker URL parses");
    assert!(url.set_scheme("amqps").is_ok());
    let result = Producer::builder(url.as_str())
        .tls(pki.client())
        .namespace("t-tls-plaintext")
        .connect()
        .await;
    let (_, reason) = tls_error(result);
    assert!(reason.contains("plaintext port"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_refuses_a_wrong_ca_and_a_missing_client_certificate() {
    let pki = Pki::new("rediss");
    let redis = TlsRedis::start(&pki);
    let server = format!("TLS connection to 127.0.0.1:{} failed", redis.port);

    let connect = |tls: TlsOptions| {
        let url = redis.url.clone();
        async move {
            RedisStore::connect_with_tls(&url, "t-tls-rediss", StoreSettings::default(), &tls)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };
    let err = connect(pki.wrong_ca()).await.expect_err("the wrong CA");
    assert!(err.contains(&server), "{err}");
    assert!(err.contains("not signed by a trusted CA"), "{err}");
    assert!(err.contains("--redis-tls-ca"), "{err}");

    let err = connect(pki.ca_only())
        .await
        .expect_err("no client certificate");
    assert!(err.contains(&server), "{err}");
    assert!(err.contains("client certificate"), "{err}");

    connect(pki.client())
        .await
        .expect("the right CA and a client certificate");

    // Beat's state uses the same client.
    celeriac_producer::beat::RedisBeatState::connect_with_tls(
        &redis.url,
        "t-tls-rediss",
        &pki.client(),
    )
    .await
    .expect("beat's state connects over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_out_a_failing_handshake_and_refuses_bad_files_at_start() {
    let pki = Pki::new("worker");
    let broker = TlsBroker::start(&pki).await;
    let ns = namespace("tls-worker");

    // A handshake that fails is retried: the worker stays up, not ready,
    // and stops cleanly when asked.
    let worker =
        celeriac_consumer::Worker::builder(&broker.url, celeriac_consumer::Registry::new())
            .tls(pki.wrong_ca())
            .namespace(&*ns)
            .build()
            .expect("the files are fine");
    let handle = worker.handle();
    let run = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!run.is_finished(), "the worker gave up");
    assert!(!handle.is_ready());
    handle.shutdown();
    let stopped = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("it stops when asked")
        .expect("it does not panic");
    assert!(stopped.is_ok(), "{stopped:?}");

    // Files that cannot be used are refused when the worker is built...
    let err = celeriac_consumer::Worker::builder(&broker.url, celeriac_consumer::Registry::new())
        .tls(TlsOptions::new().ca(pki.dir().join("missing.pem")))
        .build()
        .map(drop)
        .expect_err("a missing CA file");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    // ... and the binary exits 2 naming the file.
    let missing = pki.dir().join("missing.pem").display().to_string();
    let mut process = WorkerProcess::start(
        worker_bin(),
        &broker.url,
        &ns,
        &record_file("tls-worker"),
        &["--tls-ca", &missing],
    );
    let status = process
        .wait_timeout(Duration::from_secs(15))
        .expect("the worker exits");
    assert_eq!(status.code(), Some(2));
}

//! `celeriac-dlq replay --signing-keys` under required signatures: a dead
//! letter replayed unchanged keeps its signature, one whose attempt is
//! reset is signed again, and one whose signature never verified is
//! replayed only with `--sign-unverified`.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::publish::task_properties;
use celeriac_producer::SendOptions;
use celeriac_schema::{encode, Envelope, Task};
use celeriac_tests::{broker, celeriac_dlq_cli, eventually, namespace, queue_len, InProcessWorker};

use crate::support::{
    key_file, producer, publish_raw, publisher, quick_retries, registry, ring, Heal, Runs,
};

const KEY: (&str, u8) = ("k-replay", 7);

/// Runs `celeriac-dlq replay` on the `default` queue of `ns`.
fn replay(url: &str, ns: &str, keys: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(celeriac_dlq_cli())
        .args(["--amqp-addr", url, "--namespace", ns, "-Q", "default"])
        .arg("--signing-keys")
        .arg(keys)
        .arg("replay")
        .args(extra)
        .env_remove("CELERIAC_SIGNING_KEYS")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_dead_letters_run_on_a_signing_worker() {
    let ns = namespace("sig-replay");
    let url = broker().await.url.clone();
    let runs = Runs::default();
    let healed = Arc::new(AtomicBool::new(false));
    let worker =
        InProcessWorker::start(&ns, registry(&runs, &healed), |b| b.signing(ring(&[KEY]))).await;
    let p = producer(&ns, Some(ring(&[KEY])), None).await;
    // Rejected at attempt 0: replayed unchanged, with its own signature.
    p.send::<Heal>(&"fatal".to_owned(), &SendOptions::new())
        .await
        .unwrap();
    // Exhausted at attempt 1: its replay resets the attempt and is re-signed.
    p.send::<Heal>(
        &"exhausted".to_owned(),
        &SendOptions::new().retry(quick_retries(1)),
    )
    .await
    .unwrap();
    // Never signed: dead-lettered as bad-signature.
    let (_conn, channel) = publisher().await;
    let env = Envelope::new(Heal::NAME, rmpv::Value::from("unsigned"));
    let body = encode(&env).unwrap();
    let props = task_properties(&env, "default", &body, None).unwrap();
    publish_raw(&channel, ns.topology(), &body, props).await;

    let dlq = ns.topology().dead_letter_queue("default");
    let dead = eventually(Duration::from_secs(30), || async {
        queue_len(&channel, &dlq).await == 3
    })
    .await;
    assert!(dead, "three dead letters; ran {:?}", runs.labels());
    assert!(!runs.ran("unsigned"));
    healed.store(true, Ordering::SeqCst);

    let keys = key_file("sig-replay", &[KEY]);
    let out = replay(&url, &ns, &keys, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "partial: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("--sign-unverified"), "{stdout}");
    let replayed = eventually(Duration::from_secs(30), || async {
        runs.labels()
            .iter()
            .filter(|l| *l == "fatal" || *l == "exhausted")
            .count()
            == 5
    })
    .await;
    // fatal: 1 failed run + 1 replayed; exhausted: 2 failed runs + 1 replayed.
    assert!(replayed, "ran {:?}", runs.labels());
    // The tool hands the skipped one back as it exits; the quorum queue
    // counts it as ready a moment later.
    let stays = eventually(Duration::from_secs(10), || async {
        queue_len(&channel, &dlq).await == 1
    })
    .await;
    assert!(
        stays,
        "the unsigned one stays: {}",
        queue_len(&channel, &dlq).await
    );

    let out = replay(&url, &ns, &keys, &["--sign-unverified"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = eventually(Duration::from_secs(30), || async { runs.ran("unsigned") }).await;
    assert!(ran, "ran {:?}", runs.labels());
    assert_eq!(queue_len(&channel, &dlq).await, 0);
    let stats = worker.stop().await;
    assert_eq!(stats.succeeded, 3);
    let _ = std::fs::remove_file(keys);
}

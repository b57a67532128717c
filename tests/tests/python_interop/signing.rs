//! Python-signed tasks run; badly signed ones are dead-lettered.

use super::*;

/// Writes a key file with one key under the target directory.
fn key_file(name: &str, key_id: &str, secret_b64: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-keys");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.keys", uuid::Uuid::now_v7().simple()));
    std::fs::write(&path, format!("# {name}\n{key_id} {secret_b64}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_signed_tasks_run_and_badly_signed_ones_are_dead_lettered() {
    let ns = namespace("py-signed");
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let record = record_file("py-signed");
    // The same key id on both sides; the wrong file holds another secret.
    let keys = key_file(
        "good",
        "py-2025",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    let wrong = key_file(
        "wrong",
        "py-2025",
        "Y2VsZXJpYWMgZ29sZGVuIHByZXZpb3VzIGtleSAzMiE=",
    );
    let keys_arg = keys.to_str().unwrap();

    let mut args = vec![
        "--declare",
        "--task",
        "celeriac.echo",
        "--signing-keys",
        keys_arg,
    ];
    let inputs = [
        r#"{"signed": 1, "text": "d\u00e9j\u00e0"}"#,
        "[1, 2, 3]",
        "null",
    ];
    for input in &inputs {
        args.extend(["--input", input]);
    }
    let signed = produce(&broker.url, &ns, &args);
    // A keyed task with a delay: more signed headers, through the cascade.
    let keyed = produce(
        &broker.url,
        &ns,
        &[
            "--task",
            "celeriac.echo",
            "--input",
            "\"keyed\"",
            "--key",
            "py-signed-key",
            "--countdown-ms",
            "300",
            "--signing-keys",
            keys_arg,
        ],
    );
    let forged = produce(
        &broker.url,
        &ns,
        &[
            "--task",
            "celeriac.echo",
            "--input",
            "\"forged\"",
            "--signing-keys",
            wrong.to_str().unwrap(),
        ],
    );
    let unsigned = produce(
        &broker.url,
        &ns,
        &["--task", "celeriac.echo", "--input", "\"unsigned\""],
    );

    let mut worker = WorkerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_celeriac-test-worker")),
        &broker.url,
        &ns,
        &record,
        &[
            "--redis-url",
            &redis_url,
            "--signing-keys",
            keys_arg,
            "--grace",
            "5s",
        ],
    );
    let mut ran = signed.clone();
    ran.extend(&keyed);
    for (record, id) in finished(&*store, &ran, Duration::from_secs(60))
        .await
        .iter()
        .zip(&ran)
    {
        assert_eq!(
            record.state,
            TaskState::Succeeded,
            "{id}: {:?}",
            record.error
        );
    }

    let (_conn, channel) = broker.channel().await;
    let dlq = format!("{}.dlq.default", &*ns);
    assert!(
        eventually(Duration::from_secs(20), || async {
            queue_len(&channel, &dlq).await == 2
        })
        .await,
        "the forged and the unsigned task reach {dlq}"
    );
    let dead = drain(&channel, &dlq).await;
    for (ids, says) in [
        (&forged, "does not match"),
        (&unsigned, "no `celeriac-signature`"),
    ] {
        let letter = dead
            .iter()
            .find(|l| {
                l.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str())
                    == Some(ids[0].to_string().as_str())
            })
            .unwrap_or_else(|| panic!("no dead letter for {}", ids[0]));
        assert_eq!(header_str(letter, "celeriac-reason"), "bad-signature");
        assert_eq!(header_str(letter, "celeriac-error-type"), "SignatureError");
        let message = header_str(letter, "celeriac-error-message");
        assert!(message.contains(says), "{message}");
        assert!(record_of(&*store, ids[0]).await.is_none(), "it never ran");
    }
    worker.signal("TERM");
    let status = worker.wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker stops cleanly: {status:?}"
    );
    let _ = std::fs::remove_file(&keys);
    let _ = std::fs::remove_file(&wrong);
}

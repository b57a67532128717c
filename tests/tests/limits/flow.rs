//! A workflow file's `limits:` section: `celeriac submit` writes it to the
//! store, where workers read it; a bad section is refused before anything
//! is written or sent.

use std::process::{Command as Process, Output};

use celeriac_schema::store::{ControlHash, Store, StoreSettings};
use celeriac_tests::{broker, celeriac_cli, namespace, redis, redis_store};

async fn submit(ns: &str, file: &std::path::Path) -> Output {
    Process::new(celeriac_cli())
        .args(["--namespace", ns, "submit"])
        .arg(file)
        .env("AMQP_ADDR", &broker().await.url)
        .env("REDIS_URL", &redis().await.url)
        .output()
        .unwrap()
}

fn write_flow(ns: &str, limits: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("celeriac-flow-limits-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("flow.yaml");
    let text = format!(
        "name: limited\nlimits:\n{limits}tasks:\n  train:\n    task: celeriac.echo\n    pools: {{gpu: 1}}\n    tenant: acme\n"
    );
    std::fs::write(&file, text).unwrap();
    file
}

#[tokio::test]
async fn submit_writes_the_flow_limits_to_the_store() {
    let ns = namespace("limits-flow");
    let store = redis_store(&ns, StoreSettings::default()).await;
    let file = write_flow(
        &ns,
        "  pools: {gpu: 3}\n  rate: {celeriac.echo: 20/s}\n  tenant_rate: {acme: 100/m}\n",
    );
    let out = submit(&ns, &file).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policy = store.policy().unwrap();
    let pools = policy.pools().await.unwrap();
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!((pools[0].name.as_str(), pools[0].capacity), ("gpu", 3));
    let mut fields = store.hash_all(ControlHash::Limits).await.unwrap();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("rate:celeriac.echo".to_owned(), b"20/s".to_vec()),
            ("tenant-rate:acme".to_owned(), b"100/m".to_vec()),
        ]
    );
}

#[tokio::test]
async fn a_bad_limits_section_is_refused_before_anything_is_written() {
    let ns = namespace("limits-flow-bad");
    let store = redis_store(&ns, StoreSettings::default()).await;
    for (limits, says) in [
        (
            "  rate: {celeriac.echo: fast}\n",
            "limits.rate.celeriac.echo",
        ),
        ("  pools: {gpu: 0}\n", "limits.pools.gpu"),
        ("  speed: {x: 1}\n", "speed"),
    ] {
        let file = write_flow(&ns, limits);
        let out = submit(&ns, &file).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{limits}: {stderr}");
        assert!(stderr.contains(says), "{limits}: {stderr}");
    }
    assert!(store.policy().unwrap().pools().await.unwrap().is_empty());
    assert!(store
        .hash_all(ControlHash::Limits)
        .await
        .unwrap()
        .is_empty());
}

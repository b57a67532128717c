//! `celeriac pool` and `celeriac control tenant-rate-limit`.

use std::process::{Command as Process, Output};

use celeriac_schema::store::{ControlHash, StoreSettings};
use celeriac_tests::{broker, celeriac_cli, namespace, redis, redis_store};

async fn cli(ns: &str, args: &[&str]) -> Output {
    Process::new(celeriac_cli())
        .args(["--namespace", ns])
        .args(args)
        .env("AMQP_ADDR", &broker().await.url)
        .env("REDIS_URL", &redis().await.url)
        .output()
        .unwrap()
}

#[tokio::test]
async fn pools_are_set_and_listed_and_bad_input_is_refused() {
    let ns = namespace("limits-cli");
    let store = redis_store(&ns, StoreSettings::default()).await;
    let set = cli(&ns, &["pool", "set", "gpu", "4"]).await;
    assert_eq!(
        set.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let list = cli(&ns, &["pool", "list", "--json"]).await;
    assert_eq!(list.status.code(), Some(0));
    let pools: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        pools,
        serde_json::json!([{"name": "gpu", "capacity": 4, "in_use": 0, "holders": 0}])
    );
    let table = cli(&ns, &["pool", "list"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("gpu") && text.contains('4'), "{text}");
    for bad in [["pool", "set", "gpu", "0"], ["pool", "set", "gpu", "many"]] {
        let out = cli(&ns, &bad).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?} is a usage error");
    }
    let off = cli(&ns, &["pool", "set", "gpu", "off"]).await;
    assert_eq!(off.status.code(), Some(0));
    let policy = celeriac_schema::store::Store::policy(&store).unwrap();
    assert!(policy.pools().await.unwrap().is_empty(), "removed");

    let limit = cli(&ns, &["control", "tenant-rate-limit", "acme", "10/s"]).await;
    assert_eq!(
        limit.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&limit.stderr)
    );
    let fields = celeriac_schema::store::Store::hash_all(&store, ControlHash::Limits)
        .await
        .unwrap();
    assert_eq!(fields, [("tenant-rate:acme".to_owned(), b"10/s".to_vec())]);
    let bad = cli(&ns, &["control", "tenant-rate-limit", "acme", "10/d"]).await;
    assert_eq!(bad.status.code(), Some(2));
    let lifted = cli(&ns, &["control", "tenant-rate-limit", "acme", "off"]).await;
    assert_eq!(lifted.status.code(), Some(0));
    let fields = celeriac_schema::store::Store::hash_all(&store, ControlHash::Limits)
        .await
        .unwrap();
    assert!(fields.is_empty(), "{fields:?}");
}

#[tokio::test]
async fn send_puts_the_tenant_and_pools_in_the_envelope() {
    let ns = namespace("limits-send");
    let out = cli(
        &ns,
        &[
            "send",
            "test.work",
            "--input",
            "1",
            "--tenant",
            "acme",
            "--pool",
            "gpu=2",
            "--pool",
            "db=1",
            "--no-store",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_conn, channel) = broker().await.channel().await;
    let queue = ns.topology().work_queue("default");
    let sent = celeriac_tests::drain(&channel, &queue).await;
    assert_eq!(sent.len(), 1);
    let env = celeriac_schema::decode(&sent[0].data).unwrap();
    assert_eq!(env.tenant.as_deref(), Some("acme"));
    assert_eq!(
        env.pools,
        std::collections::BTreeMap::from([("db".to_owned(), 1), ("gpu".to_owned(), 2)])
    );
    let bad = cli(&ns, &["send", "test.work", "--pool", "gpu", "--no-store"]).await;
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a pool without units is a usage error"
    );
}

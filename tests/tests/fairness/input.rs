//! Bad shard counts and tenant names are refused with a clear error and
//! nothing is sent; shard counts kept in the store route producers and
//! cannot shrink.

use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use celeriac_consumer::{Registry, Worker};
use celeriac_producer::{Producer, SendOptions};
use celeriac_schema::fair::{shard_name, shard_of};
use celeriac_schema::store::StoreSettings;
use celeriac_tests::{broker, celeriac_cli, eventually, queue_len, redis, redis_store};

use crate::support::{fair_namespace, fair_producer, Work};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shard_counts_and_tenants_are_refused_and_nothing_is_sent() {
    let ns = fair_namespace("fair-input", 4);
    let url = broker().await.url.clone();
    let zero = Producer::builder(&url)
        .namespace(ns.name())
        .fair_queue("default", 0)
        .connect()
        .await;
    let message = zero.map(|_| ()).unwrap_err().to_string();
    assert!(message.contains("at least 1 shard"), "{message}");
    let zero = Worker::builder(&url, Registry::new())
        .namespace(ns.name())
        .fair_queue("default", 0)
        .build();
    assert!(zero
        .map(|_| ())
        .unwrap_err()
        .to_string()
        .contains("at least 1 shard"));

    let producer = fair_producer(&ns, 4).await;
    for (tenant, reason) in [
        (String::new(), "must not be empty"),
        ("t".repeat(129), "at most 128 bytes"),
        ("a\u{7}b".to_owned(), "control characters"),
    ] {
        let sent = producer
            .send::<Work>(&1, &SendOptions::new().tenant(&tenant))
            .await;
        let message = sent.map(|_| ()).unwrap_err().to_string();
        assert!(
            message.contains("tenant") && message.contains(reason),
            "{message}"
        );
    }
    let cli = Process::new(celeriac_cli())
        .args([
            "--namespace",
            ns.name(),
            "send",
            "test.fair.work",
            "--input",
            "1",
        ])
        .args(["--tenant", "", "--no-store"])
        .env("AMQP_ADDR", &url)
        .output()
        .unwrap();
    assert_eq!(
        cli.status.code(),
        Some(2),
        "an empty tenant is a usage error"
    );
    assert!(String::from_utf8_lossy(&cli.stderr).contains("must not be empty"));

    let (_conn, channel) = broker().await.channel().await;
    let topology = ns.topology();
    assert_eq!(
        queue_len(&channel, &topology.work_queue("default")).await,
        0
    );
    for shard in 0..4 {
        let queue = topology.work_queue(&shard_name("default", shard));
        assert_eq!(queue_len(&channel, &queue).await, 0, "{queue}");
    }
}

fn cli_queue(ns: &str, args: &[&str], redis_url: &str) -> std::process::Output {
    Process::new(celeriac_cli())
        .args(["--namespace", ns, "queue"])
        .args(args)
        .env("REDIS_URL", redis_url)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_counts_kept_in_the_store_route_producers_and_cannot_shrink() {
    let ns = fair_namespace("fair-store", 4);
    let redis_url = redis().await.url.clone();
    let set = cli_queue(&ns, &["fair", "default", "--shards", "4"], &redis_url);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let listed = cli_queue(&ns, &["fairness"], &redis_url);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "default\t4\n");

    for (shards, code, reason) in [("2", 2, "strand"), ("0", 2, "at least 1 shard")] {
        let refused = cli_queue(&ns, &["fair", "default", "--shards", shards], &redis_url);
        assert_eq!(refused.status.code(), Some(code), "--shards {shards}");
        assert!(String::from_utf8_lossy(&refused.stderr).contains(reason));
    }
    let listed = cli_queue(&ns, &["fairness"], &redis_url);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "default\t4\n",
        "unchanged"
    );

    // A producer with the store and no setting of its own routes by it.
    let store = redis_store(&ns, StoreSettings::default()).await;
    let producer = Producer::builder(&broker().await.url)
        .namespace(ns.name())
        .store(Arc::new(store))
        .connect()
        .await
        .unwrap();
    producer
        .send::<Work>(&1, &SendOptions::new().tenant("acme"))
        .await
        .unwrap();
    let (_conn, channel) = broker().await.channel().await;
    let shard = ns
        .topology()
        .work_queue(&shard_name("default", shard_of("acme", 4)));
    assert!(
        eventually(Duration::from_secs(5), || async {
            queue_len(&channel, &shard).await == 1
        })
        .await,
        "the task did not reach {shard}"
    );
    assert_eq!(
        queue_len(&channel, &ns.topology().work_queue("default")).await,
        0
    );
}

//! `celeriac purge` empties a fair queue's shards with its plain queue.

use std::process::Command as Process;
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::fair::shard_name;
use celeriac_tests::{broker, celeriac_cli, eventually, queue_len};

use crate::support::{fair_namespace, fair_producer, Work};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_empties_the_shards_too() {
    let ns = fair_namespace("fair-purge", 4);
    let producer = fair_producer(&ns, 4).await;
    for tenant in ["acme", "globex", "initech"] {
        let options = SendOptions::new().tenant(tenant);
        producer.send::<Work>(&1, &options).await.unwrap();
    }
    producer
        .send::<Work>(&1, &SendOptions::new())
        .await
        .unwrap();
    let topology = ns.topology();
    let queues: Vec<String> = std::iter::once(topology.work_queue("default"))
        .chain((0..4).map(|s| topology.work_queue(&shard_name("default", s))))
        .collect();
    let (_conn, channel) = broker().await.channel().await;
    let total = || async {
        let mut sum = 0;
        for queue in &queues {
            sum += queue_len(&channel, queue).await;
        }
        sum
    };
    assert!(eventually(Duration::from_secs(5), || async { total().await == 4 }).await);

    let out = Process::new(celeriac_cli())
        .args(["--namespace", ns.name(), "purge", "--queue", "default"])
        .args(["--yes", "--json", "--no-store"])
        .env("AMQP_ADDR", &broker().await.url)
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["purged"], 4, "{report}");
    assert_eq!(report["shards"], 4, "{report}");
    assert_eq!(total().await, 0);
}

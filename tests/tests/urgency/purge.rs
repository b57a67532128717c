//! `celeriac purge` empties a queue's tolerance class queues with it.

use std::process::Command as Process;
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_tests::{broker, celeriac_cli, eventually, queue_len};

use crate::support::{setup, Mark};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_empties_the_tolerance_class_queues_too() {
    let (ns, producer) = setup("tol-purge").await;
    let deferrable = SendOptions::new().delay_tolerance(Duration::from_secs(600));
    for i in 0..3 {
        producer
            .send::<Mark>(&format!("d{i}"), &deferrable)
            .await
            .unwrap();
    }
    producer
        .send::<Mark>(&"u".to_owned(), &SendOptions::new())
        .await
        .unwrap();
    let topology = ns.topology();
    // 600 s of tolerance: the largest class that still leaves its margin.
    let class = celeriac_schema::tolerance::class_for(600_000).unwrap();
    let class_queue = topology.tolerance_queue("default", class);
    let (_conn, channel) = broker().await.channel().await;
    let work_queue = topology.work_queue("default");
    let waiting = || async {
        queue_len(&channel, &class_queue).await + queue_len(&channel, &work_queue).await
    };
    assert!(eventually(Duration::from_secs(5), || async { waiting().await == 4 }).await);

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
    assert_eq!(
        report["tolerance_classes"],
        celeriac_schema::tolerance::TOLERANCE_CLASSES,
        "{report}"
    );
    assert_eq!(waiting().await, 0);
}

//! Deferrable workflow nodes: a root published by the producer and a node
//! released by a worker both go through their class queues and run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_producer::Producer;
use celeriac_schema::store::StoreSettings;
use celeriac_schema::workflow::{Node, Workflow};
use celeriac_schema::Task;
use celeriac_tests::{broker, queue_len, redis_store, InProcessWorker};

use crate::support::{registry, setup, Mark, WAIT};

#[tokio::test]
async fn deferrable_nodes_are_published_to_their_class_and_run() {
    let (ns, _) = setup("tol-flow").await;
    let store = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let producer = Producer::builder(&broker().await.url)
        .namespace(&*ns)
        .store(store.clone())
        .connect()
        .await
        .unwrap();
    let mut root = Node::new("root", Mark::NAME, rmpv::Value::from("root"));
    root.tolerance_ms = Some(3_600_000);
    let mut next = Node::new("next", Mark::NAME, rmpv::Value::from("next")).after(["root"]);
    next.tolerance_ms = Some(60_000);
    let mut wf = Workflow::new();
    wf.push(root);
    wf.push(next);
    let handle = producer.submit(&wf, &[]).await.unwrap();
    // The root waits in the 10-minute class (1 h less the margin).
    let (_conn, channel) = broker().await.channel().await;
    let class = ns.topology().tolerance_queue("default", 4);
    assert_eq!(queue_len(&channel, &class).await, 1, "the root is deferred");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = InProcessWorker::start(&ns, registry(&seen, Duration::ZERO), |b| {
        b.store(store.clone())
    })
    .await;
    handle.wait(WAIT).await.unwrap();
    worker.stop().await;
    assert_eq!(*seen.lock().unwrap(), ["root", "next"]);
    let status = handle.status().await.unwrap().unwrap();
    assert!(
        status.nodes.iter().all(|n| n.record.is_some()),
        "{status:?}"
    );
}

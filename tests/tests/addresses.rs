//! Broker address lists: producers and workers connect past addresses
//! that do not answer, and say so when none does.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use celeriac_consumer::Registry;
use celeriac_producer::{addresses, Error, Producer, SendOptions};
use celeriac_schema::Task;
use celeriac_tests::{broker, eventually, namespace, queue_len, InProcessWorker};

struct Ping;
impl Task for Ping {
    const NAME: &'static str = "addresses.ping";
    type Input = u32;
    type Output = ();
}

/// A local address nothing listens on (a port just freed).
fn dead_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    format!("amqp://guest:secret@127.0.0.1:{port}/%2f")
}

#[tokio::test]
async fn a_producer_connects_and_sends_past_a_dead_address() {
    let ns = namespace("addr-producer");
    let live = broker().await.url.clone();
    // The start is random: several connections meet the dead one first.
    for _ in 0..4 {
        let producer = Producer::builder("unused")
            .addresses([dead_address(), live.clone()])
            .namespace(&*ns)
            .pool_size(1)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("a list with one live address connects: {e}"));
        producer
            .send::<Ping>(&1, &SendOptions::new())
            .await
            .unwrap();
    }
    let (_conn, channel) = broker().await.channel().await;
    let queue = ns.topology().work_queue("default");
    assert_eq!(queue_len(&channel, &queue).await, 4);
}

#[tokio::test]
async fn a_list_of_dead_addresses_is_unreachable_without_passwords() {
    let list = addresses::join([dead_address(), dead_address()]);
    let err = Producer::builder(list)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .err()
        .unwrap();
    assert!(err.is_transient(), "{err}");
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test]
async fn a_worker_consumes_past_a_dead_address() {
    let ns = namespace("addr-worker");
    let live = broker().await.url.clone();
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut registry = Registry::new();
    let count = ran.clone();
    registry.register::<Ping, _, _>(move |_, _| {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async { Ok(()) }
    });
    let worker = InProcessWorker::start(&ns, registry, |b| {
        b.addresses([dead_address(), live.clone(), dead_address()])
    })
    .await;
    let producer = Producer::builder(&live)
        .namespace(&*ns)
        .connect()
        .await
        .unwrap();
    producer
        .send::<Ping>(&7, &SendOptions::new())
        .await
        .unwrap();
    let done = eventually(Duration::from_secs(15), || async {
        ran.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    worker.shutdown().await;
    assert!(done, "the worker did not run the task");
}

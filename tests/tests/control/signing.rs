//! A worker that requires signatures ignores unsigned control requests.

use std::time::Duration;

use celeriac_producer::control::ControlOptions;
use celeriac_producer::Producer;
use celeriac_schema::control::Command;
use celeriac_schema::signing::Keyring;
use celeriac_tests::broker;

use crate::support::Cluster;

#[tokio::test]
async fn an_unsigned_request_to_a_signing_worker_is_ignored() {
    let mut cluster = Cluster::new("ctl-sign").await;
    let ring = Keyring::new("k1", &[5; 32]).unwrap();
    let worker_ring = ring.clone();
    cluster
        .start_worker("s1", move |b| b.signing(worker_ring))
        .await;
    let options = ControlOptions::new()
        .destination(["s1"])
        .timeout(Duration::from_millis(800));
    let unsigned = cluster
        .producer
        .control(Command::Shutdown, &options)
        .await
        .unwrap();
    assert!(unsigned.replies.is_empty(), "{:?}", unsigned.replies);
    assert_eq!(unsigned.missing, ["s1"]);
    let forged = Producer::builder(&broker().await.url)
        .namespace(&*cluster.ns)
        .signing(Keyring::new("k1", &[6; 32]).unwrap())
        .connect()
        .await
        .unwrap();
    let refused = forged.control(Command::Shutdown, &options).await.unwrap();
    assert!(refused.replies.is_empty(), "another secret does not verify");
    assert!(cluster.workers[0].is_ready(), "nothing was run");
    let metrics = cluster.workers[0].metrics();
    assert!(
        metrics.contains("celeriac_control_requests_refused_total 2"),
        "{metrics}"
    );
    let signed = Producer::builder(&broker().await.url)
        .namespace(&*cluster.ns)
        .signing(ring)
        .connect()
        .await
        .unwrap();
    let answered = signed.control(Command::Ping, &options).await.unwrap();
    assert_eq!(answered.replies.len(), 1);
    assert!(answered.replies[0].ok);
}

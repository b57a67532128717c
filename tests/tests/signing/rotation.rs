//! Key rotation: a worker whose ring is [new, old] runs tasks signed with
//! either key; once the old key is removed, what it signed is refused.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::headers;
use celeriac_tests::{drain, eventually, header_str, namespace, queue_len, InProcessWorker};

use crate::support::{producer, registry, ring, Count, Runs};

const NEW: (&str, u8) = ("k-2025-06", 6);
const OLD: (&str, u8) = ("k-2025-01", 1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_new_and_old_keys_accepts_both() {
    let ns = namespace("sig-rotation");
    let runs = Runs::default();
    let healed = Arc::new(AtomicBool::new(false));
    let worker = InProcessWorker::start(&ns, registry(&runs, &healed), |b| {
        b.signing(ring(&[NEW, OLD]))
    })
    .await;
    let old_producer = producer(&ns, Some(ring(&[OLD])), None).await;
    let new_producer = producer(&ns, Some(ring(&[NEW, OLD])), None).await;
    for i in 0..5 {
        old_producer
            .send::<Count>(&format!("old-{i}"), &SendOptions::new())
            .await
            .unwrap();
        new_producer
            .send::<Count>(&format!("new-{i}"), &SendOptions::new())
            .await
            .unwrap();
    }
    let all_ran = eventually(Duration::from_secs(30), || async {
        runs.labels().len() == 10
    })
    .await;
    assert!(all_ran, "ran {:?}", runs.labels());
    for i in 0..5 {
        assert!(runs.ran(&format!("old-{i}")) && runs.ran(&format!("new-{i}")));
    }
    let stats = worker.stop().await;
    assert_eq!((stats.succeeded, stats.dead_lettered), (10, 0));

    // The old key is retired: what it still signs is refused.
    let worker =
        InProcessWorker::start(&ns, registry(&runs, &healed), |b| b.signing(ring(&[NEW]))).await;
    old_producer
        .send::<Count>(&"old-after-removal".to_owned(), &SendOptions::new())
        .await
        .unwrap();
    new_producer
        .send::<Count>(&"new-after-removal".to_owned(), &SendOptions::new())
        .await
        .unwrap();
    let (_conn, channel) = celeriac_tests::broker().await.channel().await;
    let dlq = ns.topology().dead_letter_queue("default");
    let settled = eventually(Duration::from_secs(30), || async {
        runs.ran("new-after-removal") && queue_len(&channel, &dlq).await == 1
    })
    .await;
    assert!(settled, "ran {:?}", runs.labels());
    let dead = drain(&channel, &dlq).await;
    assert_eq!(header_str(&dead[0], headers::REASON), "bad-signature");
    assert!(header_str(&dead[0], headers::ERROR_MESSAGE).contains("not in the keyring"));
    assert!(!runs.ran("old-after-removal"));
    worker.stop().await;
}

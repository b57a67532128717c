//! Under required signatures the cluster keeps working: workflow nodes the
//! worker releases, retries it republishes through the delay queues and
//! subtasks its handlers spawn are all signed with its key.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use celeriac_producer::canvas::{chain, chord, group, Signature};
use celeriac_producer::SendOptions;
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_tests::{namespace, queue_len, redis_store, InProcessWorker};

use crate::support::{
    producer, quick_retries, registry, ring, Flaky, Inc, Parent, Runs, Sum, WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_retries_and_subtasks_complete_under_required_signatures() {
    let ns = namespace("sig-flows");
    let store: Arc<dyn Store> = Arc::new(redis_store(&ns, StoreSettings::default()).await);
    let runs = Runs::default();
    let keys = ring(&[("k-cluster", 3)]);
    let worker = InProcessWorker::start(
        &ns,
        registry(&runs, &Arc::new(AtomicBool::new(false))),
        |b| b.signing(keys.clone()).store(store.clone()).concurrency(8),
    )
    .await;
    let p = producer(&ns, Some(keys.clone()), Some(store.clone())).await;

    // A chain: every step after the first is released by the worker.
    let canvas = chain([
        Signature::new::<Inc>(&1).unwrap(),
        Signature::callback::<Inc>(),
        Signature::callback::<Inc>(),
    ]);
    let h = p.submit_canvas(&canvas).await.unwrap();
    assert_eq!(h.wait_as::<i64>(WAIT).await.unwrap(), 4);

    // A chord: group members, then the callback the worker releases.
    let canvas = chord(
        group((1..=3).map(|i| Signature::new::<Inc>(&i).unwrap())),
        Signature::callback::<Sum>(),
    );
    let h = p.submit_canvas(&canvas).await.unwrap();
    assert_eq!(h.wait_as::<i64>(WAIT).await.unwrap(), 2 + 3 + 4);

    // A retry: the first attempt fails, the copy the worker signs runs.
    let handle = p
        .send::<Flaky>(
            &"flaky".to_owned(),
            &SendOptions::new().retry(quick_retries(2)),
        )
        .await
        .unwrap();
    assert_eq!(handle.wait(WAIT).await.unwrap(), 1);
    assert_eq!(runs.labels(), ["flaky@0", "flaky@1"]);

    // A subtask spawned by a handler.
    let handle = p.send::<Parent>(&41, &SendOptions::new()).await.unwrap();
    assert_eq!(handle.wait(WAIT).await.unwrap(), 42);

    let (_conn, channel) = celeriac_tests::broker().await.channel().await;
    assert_eq!(
        queue_len(&channel, &ns.topology().dead_letter_queue("default")).await,
        0,
        "nothing was dead-lettered"
    );
    let stats = worker.stop().await;
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(stats.retried, 1);
}

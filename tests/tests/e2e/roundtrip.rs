//! Many tasks go from a producer through a worker process and are acked.

use std::collections::HashSet;
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_tests::{broker, eventually, queue_len, read_record, record_file};

use crate::support::{producer, worker, Record, RecordInput};

#[tokio::test]
async fn many_tasks_round_trip() {
    let ns = celeriac_tests::namespace("roundtrip");
    let producer = producer(&ns).await;
    let record = record_file("roundtrip");
    let _worker = worker(&ns, &record, &["--concurrency", "32"]).await;

    let ids = producer
        .send_batch::<Record>(
            (0..5000).map(|_| RecordInput { ms: 0 }),
            &SendOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 5000);

    let done = eventually(Duration::from_secs(60), || async {
        read_record(&record).len() >= ids.len()
    })
    .await;
    let lines = read_record(&record);
    assert!(done, "only {} of {} tasks ran", lines.len(), ids.len());
    let ran: HashSet<String> = lines
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    let sent: HashSet<String> = ids.iter().map(ToString::to_string).collect();
    let missing = sent.difference(&ran).count();
    let unknown = ran.difference(&sent).count();
    assert_eq!(
        (missing, unknown),
        (0, 0),
        "every sent task ran, and only those"
    );
    assert_eq!(lines.len(), ids.len(), "no task ran twice");

    let (_conn, channel) = broker().await.channel().await;
    let dlq = producer.topology().dead_letter_queue("default");
    assert_eq!(
        queue_len(&channel, &dlq).await,
        0,
        "nothing may be dead-lettered"
    );
}

/// A batch's publishes are handed to the connection without waiting for
/// each write: they still reach the queue in the order they were sent.
#[tokio::test]
async fn a_batch_reaches_its_queue_in_order() {
    let ns = celeriac_tests::namespace("batch-order");
    let producer = producer(&ns).await;
    let ids = producer
        .send_batch::<Record>(
            (0..3000).map(|_| RecordInput { ms: 0 }),
            &SendOptions::new(),
        )
        .await
        .unwrap();
    let (_conn, channel) = broker().await.channel().await;
    let queue = producer.topology().work_queue("default");
    assert_eq!(queue_len(&channel, &queue).await, ids.len() as u32);
    let mut queued = Vec::with_capacity(ids.len());
    while let Some(message) = channel
        .basic_get(
            queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let id = message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .expect("every task has its id as message id");
        queued.push(id);
    }
    let sent: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(queued, sent, "the queue holds the batch in the order sent");
}

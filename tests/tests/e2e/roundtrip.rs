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

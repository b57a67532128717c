//! Poison messages and dead letters returned any number of times.

use super::*;

/// Delivery limit of the poison test's namespace.
const POISON_DELIVERY_LIMIT: &str = "2";

#[tokio::test]
async fn poison_message_ends_in_the_dead_letter_queue() {
    bounded(poison_message_ends_in_the_dead_letter_queue_scenario()).await;
}

async fn poison_message_ends_in_the_dead_letter_queue_scenario() {
    let ns = namespace("poison");
    let producer = Producer::builder(&broker().await.url)
        .namespace(&ns)
        .delivery_limit(POISON_DELIVERY_LIMIT.parse().unwrap())
        .connect()
        .await
        .unwrap();
    let record = record_file("poison");
    let (_conn, channel) = broker().await.channel().await;
    let work = producer.topology().work_queue("default");
    let dlq = producer.topology().dead_letter_queue("default");
    let args = [
        "--delivery-limit",
        POISON_DELIVERY_LIMIT,
        "--concurrency",
        "1",
        "--prefetch",
        "1",
    ];

    let poison = producer
        .send::<Crash>(&(), &SendOptions::new())
        .await
        .unwrap()
        .id();
    // Each worker that takes the message dies with it; the broker counts the
    // deliveries and dead-letters the message past the limit.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut crashes = 0;
    let _survivor = loop {
        let mut w = worker(&ns, &record, &args).await;
        let crashed = loop {
            if let Some(status) = w.wait_timeout(Duration::ZERO) {
                assert!(
                    !status.success(),
                    "the worker exited cleanly instead of crashing"
                );
                break true;
            }
            if ready(&channel, &dlq).await > 0 {
                break false;
            }
            assert!(
                Instant::now() < deadline,
                "after {crashes} crashes the poison message is still not dead-lettered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !crashed {
            break w;
        }
        crashes += 1;
    };
    let dead = celeriac_tests::drain(&channel, &dlq).await;
    assert_eq!(dead.len(), 1, "exactly the poison message is dead-lettered");
    let message_id = dead[0]
        .delivery
        .properties
        .message_id()
        .as_ref()
        .map(ToString::to_string);
    assert_eq!(
        message_id,
        Some(poison.to_string()),
        "the dead letter is the poison message"
    );
    let reason = dead[0]
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death").cloned())
        .and_then(|death| match death {
            AMQPValue::FieldArray(entries) => entries.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|entry| match entry {
            AMQPValue::FieldTable(t) => t.inner().get("reason").cloned(),
            _ => None,
        });
    assert_eq!(
        reason,
        Some(AMQPValue::LongString("delivery_limit".into())),
        "the broker dead-lettered it for its delivery limit"
    );
    assert_eq!(
        ready(&channel, &work).await,
        0,
        "the poison message left the work queue"
    );

    // The surviving worker still runs ordinary tasks.
    let normal = producer
        .send::<Record>(&RecordInput { ms: 0 }, &SendOptions::new())
        .await
        .unwrap()
        .id();
    let ran = eventually(Duration::from_secs(15), || async {
        runs(&record)
            .iter()
            .any(|r| r.task_id == normal.to_string())
    })
    .await;
    assert!(ran, "a normal task did not run after the poison message");
    println!("poison: dead-lettered after {crashes} worker crashes (delivery limit {POISON_DELIVERY_LIMIT})");
}

/// A dead-letter queue has nowhere to send a message past its delivery
/// limit, and reading it returns messages with `basic.nack`: its limit is
/// set, explicitly, to in effect none, so that no number of reads (nor
/// RabbitMQ 4's default limit of 20) drops a dead letter.
#[tokio::test]
async fn dead_letters_survive_any_number_of_returns() {
    use celeriac_tests::lapin::options::{
        BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    };
    use celeriac_tests::lapin::BasicProperties;

    let ns = namespace("dlq-returns");
    let producer = Producer::builder(&broker().await.url)
        .namespace(&ns)
        .connect()
        .await
        .unwrap();
    producer.ensure_queue("default").await.unwrap();
    let dlq = producer.topology().dead_letter_queue("default");

    let listed = broker()
        .await
        .rabbitmqctl(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "arguments",
        ])
        .await;
    let line = listed
        .lines()
        .find(|line| line.split_whitespace().next() == Some(dlq.as_str()))
        .unwrap_or_else(|| panic!("{dlq} is not declared:\n{listed}"));
    assert!(
        line.contains("x-delivery-limit") && line.contains("2147483647"),
        "{line}"
    );

    let (_conn, channel) = broker().await.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            dlq.as_str().into(),
            BasicPublishOptions::default(),
            b"a dead letter",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    for read in 0..30 {
        // A returned message comes back to the queue asynchronously.
        let deadline = Instant::now() + Duration::from_secs(5);
        let message = loop {
            let got = channel
                .basic_get(dlq.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap();
            match got {
                Some(message) => break Some(message),
                None if Instant::now() > deadline => break None,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert!(
            message.is_some(),
            "the dead letter is gone after {read} returns"
        );
        let message = message.unwrap();
        assert_eq!(message.delivery.data, b"a dead letter");
        channel
            .basic_nack(
                message.delivery.delivery_tag,
                BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                },
            )
            .await
            .unwrap();
    }
}

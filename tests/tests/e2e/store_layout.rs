//! The Redis store writes the layout SPEC.md section 18 makes public: a
//! raw Redis client, knowing only the spec, finds the record with its
//! history inside and the execution key under their names with their TTLs,
//! is woken on the completion channel, and reads the same record as the
//! store; a task sent without a key leaves no key of its own behind.

use std::collections::HashMap;
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::builtin::Echo;
use celeriac_schema::store::{layout, StoreSettings};
use celeriac_schema::{Task, TaskState};
use celeriac_tests::{redis, redis_client_for, store_cluster, StoreCluster};
use futures_util::StreamExt;

/// A worker and a producer sharing the store, their namespace, and a plain
/// Redis client that knows only the spec.
async fn layout_cluster(test: &str) -> (StoreCluster, String, redis::Client) {
    let cluster = store_cluster(test, crate::support::worker_bin(), &[]).await;
    let ns = String::from(&cluster.ns);
    let client = redis_client_for(&redis().await.url).unwrap();
    (cluster, ns, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_writes_the_specified_layout_and_wakes_the_channel() {
    let (cluster, ns, client) = layout_cluster("layout").await;
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    // Subscribed before the task exists: the final write wakes us.
    let prepared = cluster
        .producer
        .prepare_value(
            "celeriac.echo",
            rmpv::Value::Binary(vec![0, 255]),
            &SendOptions::new().idempotency_key(format!("layout-{ns}")),
        )
        .unwrap();
    let id = prepared.envelope.id;
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(layout::done_channel(&ns, id))
        .await
        .unwrap();
    cluster.producer.send_prepared(&prepared).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), pubsub.on_message().next())
        .await
        .expect("the final write publishes on the completion channel")
        .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "succeeded");

    let fields: HashMap<String, Vec<u8>> =
        redis::AsyncCommands::hgetall(&mut conn, layout::record_key(&ns, id))
            .await
            .unwrap();
    let text = |name: &str| layout::field_text(&fields, name);
    assert_eq!(text(layout::STATE).as_deref(), Some("succeeded"));
    assert_eq!(text(layout::TASK).as_deref(), Some(Echo::NAME));
    assert_eq!(text(layout::QUEUE).as_deref(), Some("default"));
    assert_eq!(text(layout::KEY), Some(format!("layout-{ns}")));
    // The result: one MessagePack value, bin ff 00 -> c4 02 00 ff.
    assert_eq!(fields[layout::RESULT], vec![0xc4, 0x02, 0x00, 0xff]);
    let states: Vec<TaskState> = layout::parse_history(&fields)
        .unwrap()
        .iter()
        .map(|t| t.state)
        .collect();
    // `queued` may come after the worker's `started` and then only gives
    // its time (section 18.4), so it is not always in the history.
    assert_eq!(states.first(), Some(&TaskState::Created), "{states:?}");
    assert!(
        states.ends_with(&[TaskState::Started, TaskState::Succeeded]),
        "{states:?}"
    );
    // The store's reading and the spec's are the same record.
    let record = layout::parse_record(id, &fields).unwrap().unwrap();
    assert_eq!(record.runs, 1);
    let stored = cluster.producer.handle::<Echo>(id).record().await.unwrap();
    assert_eq!(Some(record), stored);

    // TTLs: the record lives for the result TTL, the execution key
    // (`done:{id}`) for the key TTL.
    let day_ms = StoreSettings::DEFAULT_RESULT_TTL.as_millis() as i64;
    let key = layout::record_key(&ns, id);
    let ttl: i64 = redis::AsyncCommands::pttl(&mut conn, &key).await.unwrap();
    assert!(ttl > day_ms - 60_000 && ttl <= day_ms, "{key}: PTTL {ttl}");
    let exec_key = layout::execution_key(&ns, &format!("layout-{ns}"));
    let held: String = redis::AsyncCommands::get(&mut conn, &exec_key)
        .await
        .unwrap();
    assert_eq!(held, format!("{}{id}", layout::SUCCEEDED_PREFIX));
    let ttl: i64 = redis::AsyncCommands::pttl(&mut conn, &exec_key)
        .await
        .unwrap();
    let key_ms = StoreSettings::DEFAULT_KEY_TTL.as_millis() as i64;
    assert!(ttl > key_ms - 60_000 && ttl <= key_ms, "PTTL {ttl}");
    let claimed: String =
        redis::AsyncCommands::get(&mut conn, layout::enqueue_key(&ns, &format!("layout-{ns}")))
            .await
            .unwrap();
    assert_eq!(claimed, id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_a_key_keeps_its_success_in_its_record_alone() {
    let (cluster, ns, client) = layout_cluster("layout-nokey").await;
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    let handle = cluster
        .producer
        .send::<Echo>(&rmpv::Value::from("no key"), &SendOptions::new())
        .await
        .unwrap();
    let id = handle.id();
    let output = handle.wait(Duration::from_secs(30)).await.unwrap();
    assert_eq!(output, rmpv::Value::from("no key"));
    let record = handle.record().await.unwrap().expect("its record");
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.runs, 1);

    // One key: the record, with its history inside it and no lease left.
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, format!("{ns}:*{id}*"))
        .await
        .unwrap();
    assert_eq!(keys, vec![layout::record_key(&ns, id)]);
    let fields: HashMap<String, Vec<u8>> =
        redis::AsyncCommands::hgetall(&mut conn, layout::record_key(&ns, id))
            .await
            .unwrap();
    let history: Vec<String> = fields
        .keys()
        .filter(|name| name.starts_with(layout::HISTORY_PREFIX))
        .cloned()
        .collect();
    assert_eq!(history.len(), 2, "started and succeeded: {history:?}");
    let mark = layout::QueuedMark::decode(&fields[layout::QUEUED_MARK]).unwrap();
    assert_eq!((mark.task.as_str(), mark.attempt), (Echo::NAME, 0));
    let states: Vec<TaskState> = layout::parse_record(id, &fields)
        .unwrap()
        .unwrap()
        .history
        .iter()
        .map(|t| t.state)
        .collect();
    assert!(
        states.ends_with(&[TaskState::Started, TaskState::Succeeded]),
        "{states:?}"
    );
}

//! A replay killed with SIGKILL in the middle loses nothing and leaves at
//! most the copies that were in flight as duplicates.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_consumer::{BoxFuture, ErasedHandler, Registry, TaskContext, TaskError, Worker};
use celeriac_schema::store::{MemoryStore, Store, StoreSettings};

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_killed_mid_run_loses_nothing() {
    const N: usize = 2000;
    const RATE: &str = "200";
    let s = setup("dlq-kill").await;
    let specs: Vec<Spec> = (0..N)
        .map(|i| Spec::new("default", &format!("t{}", i % 7)))
        .collect();
    let published = dead_letters(&s, &specs).await;
    expect_len(&s, &dlq_name(&s, "default"), N as u32).await;
    let url = celeriac_tests::broker().await.url.clone();

    let mut child = Command::new(bin())
        .env("AMQP_ADDR", &url)
        .args([
            "--namespace",
            &s.ns,
            "--queue",
            "default",
            "replay",
            "--rate",
            RATE,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start celeriac-dlq");
    // Wait until it is well into the run, then kill it without warning.
    let work = work_name(&s, "default");
    let started = celeriac_tests::eventually(Duration::from_secs(20), || async {
        len(&s, &work).await >= (N / 4) as u32
    })
    .await;
    assert!(started, "the replay did not get going");
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reap");
    assert!(!status.success(), "killed, not finished");

    // The broker returns what the killed run held; nothing is lost.
    let dead = dlq_name(&s, "default");
    let settled = celeriac_tests::eventually(Duration::from_secs(20), || async {
        len(&s, &dead).await + len(&s, &work).await >= N as u32
    })
    .await;
    assert!(settled, "messages missing after the kill");
    // ...a moment after the connection closed: wait until the DLQ holds no
    // unacknowledged message, so that the next run counts them all.
    let broker = celeriac_tests::broker().await;
    let returned = celeriac_tests::eventually(Duration::from_secs(20), || async {
        let out = broker
            .rabbitmqctl(&["list_queues", "-q", "name", "messages_unacknowledged"])
            .await;
        out.lines().any(|l| {
            let mut cols = l.split_whitespace();
            cols.next() == Some(dead.as_str()) && cols.next() == Some("0")
        })
    })
    .await;
    assert!(
        returned,
        "the broker did not return the killed run's messages"
    );
    let after_kill = len(&s, &work).await;
    assert!(
        after_kill < N as u32,
        "the run was not cut in the middle ({after_kill} replayed)"
    );

    let run = dlq(&s.ns, &["--queue", "default", "replay"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    expect_len(&s, &dead, 0).await;

    let copies = celeriac_tests::drain(&s.channel, &work).await;
    let mut count: HashMap<String, usize> = HashMap::new();
    for msg in &copies {
        let env = celeriac_schema::decode(&msg.delivery.data).expect("a replayed copy decodes");
        assert_eq!(env.attempt, 0);
        *count.entry(env.id.to_string()).or_default() += 1;
    }
    for p in &published {
        assert!(count.contains_key(&p.task_id), "task {} lost", p.task_id);
    }
    assert_eq!(count.len(), N, "only the published tasks");
    let duplicated = count.values().filter(|&&c| c > 1).count();
    assert!(
        count.values().all(|&c| c <= 2),
        "a task copied more than twice"
    );
    // Duplicated are only the copy in flight at the kill (--in-flight 1)
    // and those whose ack the broker had received but not yet applied: a
    // quorum queue settles acks asynchronously, and a consumer's death
    // returns what is not settled yet (about 0.1 s worth at this rate).
    assert!(duplicated <= 60, "{duplicated} duplicates");
    eprintln!("killed after {after_kill} replayed; {duplicated} duplicate copies");

    // The duplicate copies keep their task id and idempotency key, so a
    // worker with a state store runs every task once: no effect twice.
    for msg in &copies {
        s.channel
            .basic_publish(
                "".into(),
                work.as_str().into(),
                Default::default(),
                &msg.delivery.data,
                msg.delivery.properties.clone(),
            )
            .await
            .expect("publish a copy back")
            .await
            .expect("confirm");
    }
    let runs: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut registry = Registry::new();
    for t in 0..7 {
        let runs = runs.clone();
        registry.register_erased(format!("t{t}"), Arc::new(Counting(runs)));
    }
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(StoreSettings::default()));
    let worker = Worker::builder(&url, registry)
        .namespace(&*s.ns)
        .store(store)
        .build()
        .expect("a worker");
    let handle = worker.handle();
    let running = tokio::spawn(worker.run());
    let done = celeriac_tests::eventually(Duration::from_secs(60), || async {
        let stats = handle.stats();
        stats.succeeded + stats.duplicates_suppressed >= copies.len() as u64
    })
    .await;
    assert!(
        done,
        "the worker did not get through the copies: {:?}",
        handle.stats()
    );
    let stats = handle.stats();
    handle.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(15), running).await;
    let runs = runs.lock().expect("runs");
    assert_eq!(runs.len(), N, "every task ran");
    assert!(runs.values().all(|&n| n == 1), "a task ran twice");
    assert_eq!(stats.duplicates_suppressed as usize, copies.len() - N);
}

/// Counts runs per task id.
struct Counting(Arc<Mutex<HashMap<String, usize>>>);

impl ErasedHandler for Counting {
    fn call(
        &self,
        _input: rmpv::Value,
        ctx: TaskContext,
    ) -> BoxFuture<Result<rmpv::Value, TaskError>> {
        *self
            .0
            .lock()
            .expect("runs")
            .entry(ctx.task_id().to_string())
            .or_default() += 1;
        Box::pin(async { Ok(rmpv::Value::Nil) })
    }
}

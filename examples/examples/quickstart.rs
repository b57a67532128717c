//! The whole pipeline in one process: a worker and a producer on the broker
//! at `AMQP_ADDR`, a thousand tasks, one delayed task and one that fails
//! until it lands in the dead-letter queue.
//!
//! ```sh
//! cargo run -p celeriac-examples --example quickstart
//! ```

use std::time::{Duration, Instant};

use celeriac_consumer::{builtin, Registry, TaskContext, Worker};
use celeriac_examples::{amqp_addr, Add};
use celeriac_producer::{Producer, SendOptions};
use celeriac_schema::builtin::{Fail, FailInput};
use celeriac_schema::{Backoff, RetryPolicy};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .init();
    let url = amqp_addr();
    let namespace = "quickstart";

    let mut registry = Registry::new();
    builtin::register(&mut registry);
    registry.register::<Add, _, _>(|(a, b), _ctx: TaskContext| async move { Ok(a + b) });
    let worker = Worker::builder(&url, registry)
        .namespace(namespace)
        .concurrency(32)
        .build()?;
    let handle = worker.handle();
    let running = tokio::spawn(worker.run());

    let producer = Producer::builder(&url)
        .namespace(namespace)
        .connect()
        .await?;
    let started = Instant::now();
    let ids = producer
        .send_batch::<Add>((0..1000).map(|i| (i, 1)), &SendOptions::new())
        .await?;
    println!("sent {} tasks in {:?}", ids.len(), started.elapsed());

    let delayed = producer
        .send::<Add>(
            &(2, 2),
            &SendOptions::new().countdown(Duration::from_secs(2)),
        )
        .await?
        .id();
    println!("sent {delayed}, to run in 2 s");

    let quick_retries = RetryPolicy {
        max_retries: 2,
        backoff: Backoff::fixed(Duration::from_millis(500)),
    };
    let failing = producer
        .send::<Fail>(
            &FailInput {
                message: "the mail server said no".into(),
                fatal: false,
            },
            &SendOptions::new().retry(quick_retries),
        )
        .await?
        .id();
    println!("sent {failing}, which fails 3 times and is dead-lettered");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = handle.stats();
        if stats.succeeded >= 1001 && stats.dead_lettered >= 1 {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("tasks did not finish within 30 s: {stats:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.shutdown();
    let stats = running.await??;
    println!(
        "done in {:?}: {} succeeded, {} retried, {} dead-lettered to {}",
        started.elapsed(),
        stats.succeeded,
        stats.retried,
        stats.dead_lettered,
        producer.topology().dead_letter_queue("default"),
    );
    Ok(())
}

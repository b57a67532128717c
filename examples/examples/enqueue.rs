//! Enqueues tasks from application code.
//!
//! ```sh
//! cargo run -p celeriac-examples --example worker &   # in another shell
//! cargo run -p celeriac-examples --example enqueue
//! ```

use std::time::Duration;

use celeriac_examples::{amqp_addr, Add, SendWelcomeEmail, Welcome};
use celeriac_producer::{Producer, SendOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let producer = Producer::builder(amqp_addr())
        .namespace("example")
        .connect()
        .await?;

    // One task, confirmed by the broker before `send` returns.
    let welcome = Welcome {
        to: "ada@example.com".into(),
        name: "Ada".into(),
    };
    let opts = SendOptions::new()
        .idempotency_key("welcome-ada")
        .max_retries(5)
        .meta("tenant", "acme");
    let id = producer
        .send::<SendWelcomeEmail>(&welcome, &opts)
        .await?
        .id();
    println!("queued welcome email {id}");

    // A task that waits ten seconds in the broker before it may run.
    let later = SendOptions::new().countdown(Duration::from_secs(10));
    let id = producer.send::<Add>(&(40, 2), &later).await?.id();
    println!("queued delayed addition {id}");

    // A thousand tasks with pipelined confirms.
    let ids = producer
        .send_batch::<Add>((0..1000).map(|i| (i, i)), &SendOptions::new())
        .await?;
    println!("queued {} additions", ids.len());
    Ok(())
}

//! A worker with its own handlers, next to the built-in ones.
//!
//! ```sh
//! cargo run -p celeriac-examples --example worker
//! ```
//! Stop it with Ctrl-C: in-flight tasks finish first.

use celeriac_consumer::{builtin, Registry, TaskContext, TaskError, Worker};
use celeriac_examples::{amqp_addr, Add, SendWelcomeEmail};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,lapin=warn"))
        .init();

    let mut registry = Registry::new();
    builtin::register(&mut registry);
    registry
        .register::<SendWelcomeEmail, _, _>(|input, ctx: TaskContext| async move {
            if !input.to.contains('@') {
                // Retrying cannot fix a bad address: dead-letter at once.
                return Err(TaskError::fatal(
                    "InvalidAddress",
                    format!("{:?}", input.to),
                ));
            }
            // The idempotency key lets the mail service drop duplicates.
            let message_id = format!("{}@mail.example", ctx.idempotency_key());
            println!("hello {} <{}> ({message_id})", input.name, input.to);
            Ok(message_id)
        })
        .register::<Add, _, _>(|(a, b), _ctx: TaskContext| async move { Ok(a + b) });

    let worker = Worker::builder(amqp_addr(), registry)
        .namespace("example")
        .concurrency(8)
        .build()?;
    let handle = worker.handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.shutdown();
    });
    let stats = worker.run().await?;
    println!("done: {stats:?}");
    Ok(())
}

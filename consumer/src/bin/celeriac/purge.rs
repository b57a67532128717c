//! `celeriac purge --queue Q`: empties one work queue, and with a state
//! store marks the queue purged so that its tasks waiting in the shared
//! delay levels are dropped when they come due.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use celeriac_schema::store::Store;
use celeriac_schema::topology::{validate_name, MAX_DELAY};
use celeriac_schema::{now_ms, Topology};
use clap::Args;
use lapin::options::{QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;

use crate::Global;

/// Exit code when the queue does not exist.
const NO_SUCH_QUEUE: u8 = 3;

/// Options of `celeriac purge`.
#[derive(Debug, Args)]
#[command(
    after_help = "Removes every task waiting in the work queue {namespace}.q.QUEUE, and nothing \
                  else: other queues, the dead-letter queue and tasks running now (unacked) stay.\n\
                  Tasks of the queue waiting in the delay levels (countdown, ETA, retry backoff) \
                  share those levels with every queue and cannot be picked out. With a state store \
                  (REDIS_URL), purge leaves a mark there and workers drop any task of the queue \
                  sent before the purge when it comes due (state `revoked`, error type `Purged`); \
                  workers read the marks every 2 seconds. Without a store those delayed tasks \
                  still run.\n\
                  --timeout bounds each wait on the broker or the store: connecting and finding the \
                  queue (nothing is purged if that takes longer), then purging and marking.\n\
                  Exit codes: 0 purged; 1 declined at the prompt, a broker or store failure, or no \
                  answer within --timeout (the output says what was done); 2 invalid arguments, or \
                  no --yes and stdin is not a terminal (nothing is purged); 3 no such queue."
)]
pub struct PurgeArgs {
    /// The logical queue to purge (its work queue is `{namespace}.q.QUEUE`).
    #[arg(long)]
    pub queue: String,

    /// Purge without asking; needed when stdin is not a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Print the outcome as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Leave no purge mark in the store even when REDIS_URL is set (the
    /// queue's delayed tasks then still run).
    #[arg(long)]
    pub no_store: bool,

    /// How long to wait for the broker (or the store) before giving up
    /// (`10s`, `500ms`): to connect and find the queue, then to purge it
    /// and to write the mark.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
}

/// Purges the queue.
pub async fn run(global: &Global, args: &PurgeArgs) -> ExitCode {
    if let Err(e) = validate_name("queue", &args.queue) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let topology = match Topology::new(global.namespace.clone()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let work_queue = topology.work_queue(&args.queue);
    if !args.yes && !std::io::stdin().is_terminal() {
        eprintln!(
            "error: refusing to purge {work_queue} without confirmation: stdin is not a terminal; \
             pass --yes to purge it"
        );
        return ExitCode::from(2);
    }
    let use_store = global.redis_given && !args.no_store;
    let timeout = humantime::format_duration(args.timeout);
    let broker = celeriac_producer::redact_url(&global.amqp_addr);
    let finding = async {
        let (connection, channel) = crate::events::connect(global, "celeriac purge").await?;
        let declared = channel
            .queue_declare(
                work_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        Ok::<_, ExitCode>((connection, channel, declared))
    };
    let (connection, channel, declared) = match tokio::time::timeout(args.timeout, finding).await {
        Ok(Ok(found)) => found,
        Ok(Err(code)) => return code,
        Err(_) => {
            eprintln!(
                "error: no answer from the broker at {broker} within {timeout} (--timeout): \
                 nothing purged"
            );
            return ExitCode::from(1);
        }
    };
    let waiting = match declared {
        Ok(queue) => queue.message_count(),
        Err(e) => {
            eprintln!(
                "error: no queue {work_queue} in namespace {:?}: {e}",
                global.namespace
            );
            let _ = tokio::time::timeout(args.timeout, connection.close(200, "done".into())).await;
            return ExitCode::from(NO_SUCH_QUEUE);
        }
    };
    if !args.yes {
        let delayed = if use_store {
            "its delayed tasks will be dropped when they come due"
        } else {
            "no state store: its delayed tasks will still run"
        };
        eprint!("purge {waiting} waiting tasks from {work_queue} ({delayed})? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let read = std::io::stdin().lock().read_line(&mut answer);
        if read.is_err() || !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            eprintln!("nothing purged");
            let _ = connection.close(200, "done".into()).await;
            return ExitCode::from(1);
        }
    }
    // Marked with the time before the purge: a task sent after that time
    // is not dropped, whichever way the two race.
    let purged_at = now_ms();
    let purging = async {
        let purged = channel
            .queue_purge(work_queue.as_str().into(), QueuePurgeOptions::default())
            .await;
        let (shards, in_shards) = match &purged {
            Ok(_) => purge_shards(&channel, &topology, &args.queue).await,
            Err(_) => (0, 0),
        };
        let (classes, in_classes) = match &purged {
            Ok(_) => purge_classes(&connection, &topology, &args.queue).await,
            Err(_) => (0, 0),
        };
        (purged, shards, in_shards, classes, in_classes)
    };
    let Ok((purged, shards, in_shards, classes, in_classes)) =
        tokio::time::timeout(args.timeout, purging).await
    else {
        eprintln!(
            "error: no answer from the broker at {broker} within {timeout} (--timeout) while \
             purging {work_queue}: it may be purged in part; nothing was marked in the store"
        );
        return ExitCode::from(1);
    };
    let _ = tokio::time::timeout(args.timeout, connection.close(200, "done".into())).await;
    let purged = match purged {
        Ok(count) => count + in_shards + in_classes,
        Err(e) => {
            eprintln!("error: cannot purge {work_queue}: {e}");
            return ExitCode::from(1);
        }
    };
    let marked = if use_store {
        let marking = mark(global, &args.queue, purged_at);
        Some(
            tokio::time::timeout(args.timeout, marking)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout} (--timeout)"))),
        )
    } else {
        None
    };
    let delayed = match &marked {
        Some(Ok(())) => "marked",
        Some(Err(_)) => "mark-failed",
        None => "not-purged",
    };
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "queue": args.queue,
                "broker_queue": work_queue,
                "purged": purged,
                "purged_at": purged_at,
                "delayed": delayed,
                "shards": shards,
                "tolerance_classes": classes,
            })
        );
    } else if shards > 0 || classes > 0 {
        outln!(
            "purged {purged} tasks from {work_queue}, its {shards} fair shards and its {classes} tolerance class queues"
        );
    } else {
        outln!("purged {purged} tasks from {work_queue}");
    }
    match marked {
        Some(Ok(())) => {
            if !args.json {
                outln!(
                    "tasks of queue {:?} sent before the purge and waiting in the delay levels will be dropped when they come due",
                    args.queue
                );
            }
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!(
                "error: the queue was purged, but no purge mark could be written to the store ({e}): \
                 its tasks waiting in the delay levels will still run"
            );
            ExitCode::from(1)
        }
        None => {
            eprintln!(
                "note: no state store (REDIS_URL not set{}): tasks of queue {:?} waiting in the delay levels \
                 (countdown, ETA, retries) were not purged and will still run",
                if args.no_store { ", or --no-store" } else { "" },
                args.queue
            );
            ExitCode::SUCCESS
        }
    }
}

/// Purges the shards of a fair queue (section 21 of SPEC.md), which are
/// numbered from 0 without gaps: up to the first that does not exist,
/// whose refusal closes the channel. Returns (shards, tasks purged).
async fn purge_shards(channel: &lapin::Channel, topology: &Topology, queue: &str) -> (u16, u32) {
    let (mut shards, mut tasks) = (0, 0);
    for shard in 0..celeriac_schema::fair::MAX_SHARDS {
        let name = topology.work_queue(&celeriac_schema::fair::shard_name(queue, shard));
        match channel
            .queue_purge(name.as_str().into(), QueuePurgeOptions::default())
            .await
        {
            Ok(count) => {
                shards += 1;
                tasks += count;
            }
            Err(_) => break,
        }
    }
    (shards, tasks)
}

/// Purges the tolerance class queues of `queue` (section 19 of SPEC.md),
/// declared only once a deferrable task was sent: each on a channel of its
/// own, since a missing queue closes the channel. Returns (classes found,
/// tasks purged).
async fn purge_classes(
    connection: &lapin::Connection,
    topology: &Topology,
    queue: &str,
) -> (u32, u32) {
    let (mut classes, mut tasks) = (0, 0);
    for class in 0..celeriac_schema::tolerance::TOLERANCE_CLASSES {
        let Ok(channel) = connection.create_channel().await else {
            break;
        };
        let name = topology.tolerance_queue(queue, class);
        if let Ok(count) = channel
            .queue_purge(name.as_str().into(), QueuePurgeOptions::default())
            .await
        {
            classes += 1;
            tasks += count;
            let _ = channel.close(200, "done".into()).await;
        }
    }
    (classes, tasks)
}

/// Writes the purge mark, kept as long as the longest delay.
async fn mark(global: &Global, queue: &str, at_ms: u64) -> Result<(), String> {
    let store = celeriac_store::RedisStore::connect_with_tls(
        &global.redis_url,
        &global.namespace,
        celeriac_schema::store::StoreSettings::default(),
        &global.tls.redis(),
    )
    .await
    .map_err(|e| e.to_string())?;
    store
        .mark_purged(queue, at_ms, MAX_DELAY)
        .await
        .map_err(|e| e.to_string())
}

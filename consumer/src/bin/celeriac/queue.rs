//! `celeriac queue fair QUEUE --shards S`: makes a logical queue fair, by
//! recording its shard count in the store's `{ns}:fair` hash, which
//! producers read when they connect and workers when they start.

use std::process::ExitCode;

use celeriac_schema::fair::{parse_shards, validate_shards};
use celeriac_schema::store::{ControlHash, Store};
use celeriac_schema::topology::validate_name;
use clap::{Args, Subcommand};

use crate::Global;

/// Options of `celeriac queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// What to do with a queue.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Make QUEUE fair: tasks sent with a tenant go to one of SHARDS shard
    /// queues by a hash of the tenant, which workers serve round-robin.
    /// The count can only grow (a shard dropped would strand its tasks);
    /// start producers and workers again to apply it.
    Fair {
        /// The logical queue.
        queue: String,
        /// Number of shard queues (1 to 256).
        #[arg(long)]
        shards: u64,
    },
    /// List the fair queues and their shard counts.
    Fairness,
}

/// Runs `celeriac queue`: 0 when done, 1 when the store failed, 2 for
/// invalid input (a bad name, a count out of range or lower than before).
pub async fn run(global: &Global, args: &QueueArgs) -> ExitCode {
    let store = match global.store("").await {
        Ok(store) => store,
        Err(code) => return code,
    };
    match &args.command {
        QueueCommand::Fair { queue, shards } => set_fair(&store, queue, *shards).await,
        QueueCommand::Fairness => match store.hash_all(ControlHash::Fair).await {
            Ok(entries) => {
                for (queue, value) in entries {
                    match parse_shards(&queue, &value) {
                        Ok(shards) => outln!("{queue}\t{shards}"),
                        Err(e) => outln!("{queue}\tinvalid: {e}"),
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot read the fair queues: {e}");
                ExitCode::from(1)
            }
        },
    }
}

async fn set_fair(store: &dyn Store, queue: &str, shards: u64) -> ExitCode {
    let checked = validate_name("queue", queue).and_then(|()| validate_shards(queue, shards));
    let shards = match checked {
        Ok(shards) => shards,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let current = match store.hash_all(ControlHash::Fair).await {
        Ok(entries) => entries
            .into_iter()
            .find(|(q, _)| q == queue)
            .and_then(|(_, value)| parse_shards(queue, &value).ok()),
        Err(e) => {
            eprintln!("error: cannot read the fair queues: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(current) = current.filter(|current| *current > shards) {
        eprintln!(
            "error: {queue} has {current} shards; fewer would strand the tasks of shards {shards} to {}",
            current - 1
        );
        return ExitCode::from(2);
    }
    let value = shards.to_string();
    match store
        .hash_put(ControlHash::Fair, queue, Some(value.as_bytes()))
        .await
    {
        Ok(()) => {
            outln!("{queue}: {shards} shards; producers and workers started from now on use them");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot store the fair queue: {e}");
            ExitCode::from(1)
        }
    }
}

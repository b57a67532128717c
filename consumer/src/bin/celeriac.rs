//! `celeriac`: the command line for people and scripts.
//!
//! `celeriac status <task-id>` shows what the state store knows about a
//! task: its state, attempts, timings, worker, error and result.

use std::process::ExitCode;

use celeriac_producer::{status, RedisStore};
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_schema::TaskId;
use clap::{Parser, Subcommand};

/// Exit code when the id is unknown to the store.
const UNKNOWN: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "celeriac",
    version,
    about = "Inspect celeriac tasks.",
    after_help = "Exit codes: 0 found, 1 the store failed, 2 invalid arguments, 3 unknown id."
)]
struct Cli {
    /// The Redis state store.
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,

    /// Namespace of the tasks.
    #[arg(
        long,
        global = true,
        env = "CELERIAC_NAMESPACE",
        default_value = "celeriac"
    )]
    namespace: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a task's state, attempts, timings, worker, error and result, or
    /// a workflow's state and every node's progress, attempts and error.
    Status {
        /// The task or workflow id (a UUID).
        id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Status { id, json } => {
            let Ok(task_id) = id.parse::<TaskId>() else {
                eprintln!("error: {id:?} is not a task id (a UUID such as 01890a5d-ac96-774b-bcce-b302099a8057)");
                return ExitCode::from(2);
            };
            let store =
                match RedisStore::connect(&cli.redis_url, &cli.namespace, StoreSettings::default())
                    .await
                {
                    Ok(store) => store,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(1);
                    }
                };
            match store.get(task_id).await {
                Ok(Some(record)) => {
                    if json {
                        println!("{:#}", status::to_json(&record));
                    } else {
                        print!("{}", status::to_table(&record));
                    }
                    ExitCode::SUCCESS
                }
                Ok(None) => match celeriac_producer::workflow_status(&store, task_id).await {
                    Ok(Some(workflow)) => {
                        if json {
                            println!("{:#}", status::workflow_to_json(&workflow));
                        } else {
                            print!("{}", status::workflow_to_table(&workflow));
                        }
                        ExitCode::SUCCESS
                    }
                    Ok(None) => {
                        eprintln!(
                        "error: no task or workflow {task_id} in namespace {:?} of the store at {}: it was never sent with a store, \
                         or its record expired (records live for the result TTL, one day by default)",
                        cli.namespace,
                        celeriac_producer::redact_url(&cli.redis_url)
                    );
                        ExitCode::from(UNKNOWN)
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(1)
                    }
                },
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

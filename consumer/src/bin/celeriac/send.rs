//! `celeriac send TASK --input JSON`: enqueue one task from a shell.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::SendOptions;
use celeriac_schema::store::{Store, TaskRecord};
use celeriac_schema::{TaskId, TaskState};
use clap::Args;

use crate::{fail, Global};

/// Options of `celeriac send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The registered task name (for example `images.resize`).
    pub task: String,

    /// The task's input as JSON; sent as MessagePack.
    #[arg(long, default_value = "null")]
    pub input: String,

    /// The logical queue (default: `default`).
    #[arg(long)]
    pub queue: Option<String>,

    /// An idempotency key: sending again with a key used within its TTL
    /// (one day) publishes nothing and prints the first task's id.
    #[arg(long)]
    pub key: Option<String>,

    /// Run it no sooner than this from now (`10s`, `5m`, `1h 30m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub countdown: Option<Duration>,

    /// The tenant the task runs for (1 to 128 bytes): per-tenant rate
    /// limits apply, and on a fair queue tenants share the workers
    /// round-robin.
    #[arg(long)]
    pub tenant: Option<String>,

    /// Delay tolerance: it may wait this long after it is due, behind
    /// urgent work (`30s`, `10m`; SPEC.md section 19).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub tolerance: Option<Duration>,

    /// Retries after a failure before it is dead-lettered.
    #[arg(long)]
    pub retries: Option<u32>,

    /// Units of a resource pool the task holds while it runs,
    /// `NAME=UNITS` (`gpu=1`); repeat the flag for several pools.
    #[arg(long = "pool", value_name = "NAME=UNITS", value_parser = celeriac_consumer::cli_policy::parse_pool_units)]
    pub pools: Vec<(String, u32)>,

    /// Wait for the task to finish and print its result as JSON.
    #[arg(long)]
    pub wait: bool,

    /// How long `--wait` waits.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s", requires = "wait")]
    pub timeout: Duration,

    /// Print JSON: `{"id": ...}`, with `--wait` also `state`, `result` or
    /// `error`.
    #[arg(long)]
    pub json: bool,

    /// Send without the state store (no `--key`, no `--wait`, no status).
    #[arg(long, conflicts_with_all = ["key", "wait"])]
    pub no_store: bool,

    /// Signing of the tasks published.
    #[command(flatten)]
    pub signing: crate::signing::SigningArgs,
}

/// Sends the task; exit code 0 when sent (and, with `--wait`, succeeded),
/// 1 when the broker, the store or the task failed, 2 for invalid input.
pub async fn run(global: &Global, args: &SendArgs) -> ExitCode {
    let json: serde_json::Value = match serde_json::from_str(&args.input) {
        Ok(value) => value,
        Err(e) => {
            eprintln!(
                "error: --input is not valid JSON ({e}); for example --input '{{\"n\": 1}}' or --input '\"text\"'"
            );
            return ExitCode::from(2);
        }
    };
    let input = match celeriac_schema::to_value(&json) {
        Ok(value) => value,
        Err(e) => {
            eprintln!("error: --input cannot be sent as MessagePack: {e}");
            return ExitCode::from(2);
        }
    };
    let keyring = match args.signing.keyring() {
        Ok(keyring) => keyring,
        Err(code) => return code,
    };
    let store: Option<Arc<dyn Store>> = if args.no_store {
        None
    } else {
        match global
            .store(" (pass --no-store to send without the state store)")
            .await
        {
            Ok(store) => Some(Arc::new(store)),
            Err(code) => return code,
        }
    };
    let producer = match global.producer(store.clone(), keyring).await {
        Ok(producer) => producer,
        Err(e) => return fail(&e),
    };
    let mut options = SendOptions::new();
    if let Some(queue) = &args.queue {
        options = options.queue(queue);
    }
    if let Some(key) = &args.key {
        options = options.idempotency_key(key);
    }
    if let Some(countdown) = args.countdown {
        options = options.countdown(countdown);
    }
    if let Some(tolerance) = args.tolerance {
        options = options.delay_tolerance(tolerance);
    }
    if let Some(retries) = args.retries {
        options = options.max_retries(retries);
    }
    if let Some(tenant) = &args.tenant {
        options = options.tenant(tenant);
    }
    for (name, units) in &args.pools {
        options = options.pool(name, *units);
    }
    let prepared = match producer.prepare_value(&args.task, input, &options) {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let id = match producer.send_prepared(&prepared).await {
        Ok(id) => id,
        Err(e) => return fail(&e),
    };
    match (args.wait, store) {
        (true, Some(store)) => wait(store.as_ref(), id, args.timeout, args.json).await,
        _ => {
            if args.json {
                outln!("{}", serde_json::json!({ "id": id.to_string() }));
            } else {
                outln!("{id}");
            }
            ExitCode::SUCCESS
        }
    }
}

/// Waits for task `id` and prints its result (or its failure).
async fn wait(store: &dyn Store, id: TaskId, timeout: Duration, json: bool) -> ExitCode {
    let record = match store.wait(id, timeout).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            let state = match store.get(id).await {
                Ok(Some(record)) => record.state.as_str(),
                _ => "unknown",
            };
            if json {
                outln!(
                    "{}",
                    serde_json::json!({ "id": id.to_string(), "state": state, "timed_out": true })
                );
            }
            eprintln!(
                "error: task {id} did not finish within {} (state: {state})",
                humantime::format_duration(timeout)
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("error: task {id} was sent, but waiting for it failed: {e}");
            return ExitCode::from(1);
        }
    };
    print_outcome(&record, json)
}

fn print_outcome(record: &TaskRecord, json: bool) -> ExitCode {
    let id = record.id.to_string();
    let state = record.state.as_str();
    if record.state == TaskState::Succeeded {
        // The lossless mapping of SPEC.md section 18.6.
        let result = celeriac_producer::status::result_json(record);
        if json {
            outln!(
                "{}",
                serde_json::json!({ "id": id, "state": state, "result": result })
            );
        } else {
            outln!("{result}");
        }
        return ExitCode::SUCCESS;
    }
    let error = record.error.as_ref();
    if json {
        let error =
            error.map(|e| serde_json::json!({ "type": e.error_type, "message": e.message }));
        outln!(
            "{}",
            serde_json::json!({ "id": id, "state": state, "error": error })
        );
    }
    match error {
        Some(e) => eprintln!("error: task {id} {state}: {e}"),
        None => eprintln!("error: task {id} {state}"),
    }
    ExitCode::from(1)
}

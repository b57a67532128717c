//! `celeriac submit flow.yaml`: a YAML workflow sent to the cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::flow::{Flow, FlowLimits};
use celeriac_producer::{status, Error, WorkflowHandle};
use celeriac_schema::control::{limit_entry, Command};
use celeriac_schema::store::{ControlHash, Store, TENANT_RATE_FIELD};
use celeriac_schema::TaskId;
use clap::Args;

use crate::{fail, Global};

/// Options of `celeriac submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The YAML workflow file.
    pub file: PathBuf,

    /// Wait for every node to finish and print their states.
    #[arg(long)]
    pub wait: bool,

    /// How long `--wait` waits (`60s`, `5m`, ...).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s", requires = "wait")]
    pub timeout: Duration,

    /// Print JSON: `{"workflow_id": ...}`, with `--wait` the workflow's
    /// status (as `celeriac status --json` shows it) on one line.
    #[arg(long)]
    pub json: bool,

    /// Check the file and print the workflow it compiles to (JSON), without
    /// sending anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Signing of the tasks published.
    #[command(flatten)]
    pub signing: crate::signing::SigningArgs,
}

/// Submits the flow; exit code 0 when submitted (and, with `--wait`, every
/// node succeeded), 1 when a node failed, the wait timed out or the broker
/// or the store failed, 2 for an invalid file.
pub async fn run(global: &Global, args: &SubmitArgs) -> ExitCode {
    let flow = match Flow::from_path(&args.file) {
        Ok(flow) => flow,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let workflow = flow.workflow(TaskId::new());
    if let Err(e) = workflow.validate() {
        eprintln!("error: {}: {e}", flow.file());
        return ExitCode::from(2);
    }
    if args.dry_run {
        return match serde_json::to_string_pretty(&workflow) {
            Ok(text) => {
                outln!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: the workflow cannot be shown as JSON: {e}");
                ExitCode::from(1)
            }
        };
    }
    let keyring = match args.signing.keyring() {
        Ok(keyring) => keyring,
        Err(code) => return code,
    };
    let store = match global.store(" (workflows need the state store)").await {
        Ok(store) => Arc::new(store),
        Err(code) => return code,
    };
    if let Err(e) = apply_limits(store.as_ref(), flow.limits()).await {
        eprintln!("error: {}: cannot store its limits: {e}", flow.file());
        return ExitCode::from(1);
    }
    let producer = match global.producer(Some(store), keyring).await {
        Ok(producer) => producer,
        Err(e) => return fail(&e),
    };
    let handle = match producer.submit(&workflow, &[]).await {
        Ok(handle) => handle,
        Err(e) => return fail(&e),
    };
    tracing::debug!(flow = flow.name(), workflow = %handle.id(), "flow submitted");
    if !args.wait {
        if args.json {
            outln!(
                "{}",
                serde_json::json!({
                    "workflow_id": handle.id().to_string(),
                    "flow": flow.name(),
                    "nodes": workflow.nodes.len(),
                })
            );
        } else {
            outln!("{}", handle.id());
        }
        return ExitCode::SUCCESS;
    }
    if !args.json {
        eprintln!(
            "submitted {} as workflow {} ({} nodes); waiting up to {}",
            flow.name(),
            handle.id(),
            workflow.nodes.len(),
            humantime::format_duration(args.timeout)
        );
    }
    wait(&handle, args.timeout, args.json).await
}

/// Writes the flow's `limits:` to the store, where every worker reads them
/// (the keys of `celeriac pool set` and `celeriac control rate-limit`):
/// pool capacities at once, rates at the workers' next heartbeat.
async fn apply_limits(store: &dyn Store, limits: &FlowLimits) -> Result<(), String> {
    if limits.is_empty() {
        return Ok(());
    }
    if !limits.pools.is_empty() {
        let policy = store.policy().ok_or("this store keeps no resource pools")?;
        for (pool, capacity) in &limits.pools {
            policy
                .set_pool(pool, Some(*capacity), false)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("pool {pool}: capacity {capacity}");
        }
    }
    let rates = limits
        .rates
        .iter()
        .filter_map(|(task, rate)| {
            let command = Command::RateLimit {
                task: task.clone(),
                rate: Some(rate.to_string()),
            };
            limit_entry(&command).map(|(field, _)| (field, rate))
        })
        .chain(
            limits
                .tenant_rates
                .iter()
                .map(|(tenant, rate)| (format!("{TENANT_RATE_FIELD}{tenant}"), rate)),
        );
    for (field, rate) in rates {
        let value = rate.to_string();
        store
            .hash_put(ControlHash::Limits, &field, Some(value.as_bytes()))
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("{field}: {value} (workers apply it at their next heartbeat)");
    }
    Ok(())
}

/// Waits for the workflow, then prints every node's state.
async fn wait(handle: &WorkflowHandle, timeout: Duration, json: bool) -> ExitCode {
    let outcome = handle.wait(timeout).await;
    let code = match &outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(Error::WorkflowFailed { failed, .. }) => {
            eprintln!(
                "error: workflow {} failed: {}",
                handle.id(),
                failed.join(", ")
            );
            ExitCode::from(1)
        }
        Err(Error::WaitTimedOut { .. }) => {
            eprintln!(
                "error: workflow {} did not finish within {}",
                handle.id(),
                humantime::format_duration(timeout)
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!(
                "error: workflow {} was submitted, but waiting for it failed: {e}",
                handle.id()
            );
            return ExitCode::from(1);
        }
    };
    match handle.status().await {
        Ok(Some(state)) => {
            if json {
                outln!("{}", status::workflow_to_json(&state));
            } else {
                out!("{}", status::workflow_to_table(&state));
            }
            code
        }
        Ok(None) => {
            eprintln!("error: workflow {} is not in the store", handle.id());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: cannot read workflow {}: {e}", handle.id());
            ExitCode::from(1)
        }
    }
}

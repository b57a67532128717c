//! `celeriac pool`: the capacities of the cluster's resource pools, and
//! `celeriac control tenant-rate-limit`.

use std::process::ExitCode;

use celeriac_schema::control::Rate;
use celeriac_schema::store::{ControlHash, Store, TENANT_RATE_FIELD};
use clap::{Args, Subcommand};

use crate::Global;

/// `celeriac pool COMMAND`.
#[derive(Debug, Args)]
pub struct PoolArgs {
    #[command(subcommand)]
    command: PoolCommand,
}

#[derive(Debug, Subcommand)]
enum PoolCommand {
    /// Set a pool's capacity in units (`off` removes the pool: tasks that
    /// name it are dead-lettered with error type UnknownPool).
    Set {
        /// The pool name.
        name: String,
        /// Units, at least 1, or `off`.
        capacity: String,
    },
    /// List the pools: capacity, units in use, holders.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `celeriac pool`.
pub async fn run(global: &Global, args: &PoolArgs) -> ExitCode {
    let capacity = match &args.command {
        PoolCommand::Set { capacity, .. } => match capacity.as_str() {
            "off" | "none" => None,
            text => match text.parse::<u32>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    eprintln!("error: invalid capacity {text:?}: a whole number of units, at least 1, or off");
                    return ExitCode::from(2);
                }
            },
        },
        PoolCommand::List { .. } => None,
    };
    let store = match global.store(" (pools live in the store)").await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let Some(policy) = store.policy() else {
        eprintln!("error: this store keeps no pools");
        return ExitCode::from(1);
    };
    match &args.command {
        PoolCommand::Set { name, .. } => {
            if let Err(e) = celeriac_schema::topology::validate_name("pool", name) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            match policy.set_pool(name, capacity, false).await {
                Ok(_) => {
                    match capacity {
                        Some(c) => eprintln!("pool {name}: capacity {c}"),
                        None => eprintln!("pool {name}: removed"),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        PoolCommand::List { json } => match policy.pools().await {
            Ok(pools) if *json => match serde_json::to_string(&pools) {
                Ok(text) => {
                    crate::write_stdout(format_args!("{text}\n"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            },
            Ok(pools) => {
                crate::write_stdout(format_args!(
                    "{:<24} {:>8} {:>8} {:>8}\n",
                    "POOL", "CAPACITY", "IN USE", "HOLDERS"
                ));
                for p in pools {
                    crate::write_stdout(format_args!(
                        "{:<24} {:>8} {:>8} {:>8}\n",
                        p.name, p.capacity, p.in_use, p.holders
                    ));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// `celeriac control tenant-rate-limit TENANT RATE`: kept in the store's
/// limits hash; workers read it on their next heartbeat.
pub async fn tenant_rate_limit(global: &Global, tenant: &str, rate: &str) -> ExitCode {
    let rate = match rate {
        "off" | "none" | "0" => None,
        text => match text.parse::<Rate>() {
            Ok(rate) => Some(rate.to_string()),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let store = match global.store(" (tenant limits live in the store)").await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let field = format!("{TENANT_RATE_FIELD}{tenant}");
    match store
        .hash_put(
            ControlHash::Limits,
            &field,
            rate.as_deref().map(str::as_bytes),
        )
        .await
    {
        Ok(()) => {
            match rate {
                Some(rate) => {
                    eprintln!("tenant {tenant}: {rate}; workers apply it at their next heartbeat")
                }
                None => {
                    eprintln!("tenant {tenant}: no limit; workers lift it at their next heartbeat")
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot store the limit: {e}");
            ExitCode::from(1)
        }
    }
}

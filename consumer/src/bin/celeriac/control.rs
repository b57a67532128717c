//! The control plane's subcommands: `revoke`, `control`, `inspect`,
//! `ping` and `workers`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::control::{ControlOptions, ControlReplies, RevokeOptions};
use celeriac_producer::Producer;
use celeriac_schema::control::{limit_entry, Command, Inspect, KillSignal, Rate, WorkerStatus};
use celeriac_schema::events::WorkerEventKind;
use celeriac_schema::store::{ControlHash, Store};
use clap::{Args, Subcommand};

use crate::{fail, Global};

/// Exit code when no worker, or not every named one, replied.
pub const NO_REPLY: u8 = 4;

/// Options of every command that talks to the workers.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Only these workers (ids, comma-separated); default all. The
    /// command waits until each named one answered, or the timeout.
    #[arg(long, short = 'd', value_delimiter = ',', global = true)]
    pub destination: Vec<String>,

    /// How long to wait for replies (`2s`, `500ms`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s", global = true)]
    pub timeout: Duration,

    /// Print one JSON object per worker (JSON Lines).
    #[arg(long, global = true)]
    pub json: bool,

    /// Signing of the request: the workers' key file when they require
    /// signatures (they ignore unsigned requests).
    #[command(flatten)]
    pub signing: crate::signing::SigningArgs,
}

/// `celeriac revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Task ids, workflow ids or idempotency keys.
    #[arg(required = true)]
    pub ids: Vec<String>,

    /// Also stop runs in progress (Rust handlers see their context
    /// cancelled; programs get the signal to their process group).
    #[arg(long)]
    pub terminate: bool,

    /// The signal of `--terminate`: TERM (a grace, then KILL) or KILL.
    #[arg(long, default_value = "TERM", requires = "terminate")]
    pub signal: KillSignal,

    /// How long the revocation holds.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1day")]
    pub ttl: Duration,

    /// Do not write the revocation to the store: broadcast only (workers
    /// started later, or restarted, do not know it).
    #[arg(long)]
    pub no_store: bool,

    /// Who hears it and how long to wait.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `celeriac control COMMAND`.
#[derive(Debug, Args)]
pub struct ControlCommandArgs {
    /// The command.
    #[command(subcommand)]
    pub command: ControlCommand,

    /// Who hears it and how long to wait.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// The commands of `celeriac control`.
#[derive(Debug, Subcommand)]
pub enum ControlCommand {
    /// Answer `pong`.
    Ping,
    /// Stop gracefully (as on SIGTERM).
    Shutdown,
    /// Run at most N tasks at once from now on (shrinking waits for
    /// running tasks, never stops one).
    SetConcurrency {
        /// The new limit.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: u32,
    },
    /// Start consuming a queue (its topology is declared).
    AddConsumer {
        /// The logical queue.
        queue: String,
    },
    /// Stop consuming a queue; its in-flight tasks finish.
    CancelConsumer {
        /// The logical queue.
        queue: String,
    },
    /// At most RATE starts of TASK (`10/s`, `100/m`, `1000/h`; `off` lifts
    /// it): across the cluster when workers have a store, else per worker.
    /// Kept in the store, so workers started later obey it.
    RateLimit {
        /// The task name.
        task: String,
        /// The rate, or `off`.
        rate: String,
    },
    /// At most RATE starts of TENANT's tasks (`10/s`; `off` lifts it), across
    /// the cluster. Kept in the store; workers apply it at their next
    /// heartbeat.
    TenantRateLimit {
        /// The tenant.
        tenant: String,
        /// The rate, or `off`.
        rate: String,
    },
    /// Time limits of TASK (`30s`, `5m`; `-` keeps the task's own). Kept in
    /// the store, so workers started later apply them.
    TimeLimit {
        /// The task name.
        task: String,
        /// Soft limit (Rust handlers read it from their context; programs
        /// get SIGTERM).
        soft: String,
        /// Hard limit: the run is aborted.
        hard: String,
    },
}

/// `celeriac inspect WHAT`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// active, reserved, scheduled, revoked, stats, registered or conf.
    pub what: Inspect,

    /// Who answers and how long to wait.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `celeriac workers`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Ask the workers (a broadcast) instead of reading the store's list.
    #[arg(long)]
    pub no_store: bool,

    /// How long to wait: for the store's list (to connect, then to read
    /// it), or without the store for the workers' replies; and who
    /// answers then.
    #[command(flatten)]
    pub control: ControlArgs,
}

impl ControlArgs {
    fn options(&self) -> ControlOptions {
        let mut options = ControlOptions::new().timeout(self.timeout);
        if !self.destination.is_empty() {
            options = options.destination(self.destination.clone());
        }
        options
    }
}

/// A producer (with the store when `with_store`, if it answers) for the
/// control subcommands.
async fn producer(
    global: &Global,
    args: &ControlArgs,
    with_store: bool,
) -> Result<Producer, ExitCode> {
    let keyring = args.signing.keyring()?;
    let store: Option<Arc<dyn Store>> = if with_store {
        match global.store("").await {
            Ok(store) => Some(Arc::new(store)),
            Err(_) => {
                eprintln!("warning: without the store this is broadcast only: workers started later do not know it");
                None
            }
        }
    } else {
        None
    };
    global.producer(store, keyring).await.map_err(|e| fail(&e))
}

/// Prints the replies and picks the exit code.
fn report(
    replies: &ControlReplies,
    json: bool,
    show: impl Fn(&serde_json::Value) -> String,
) -> ExitCode {
    for reply in &replies.replies {
        let result = reply
            .result
            .as_ref()
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(serde_json::Value::Null);
        if json {
            let line = serde_json::json!({
                "worker": reply.worker,
                "ok": reply.ok,
                "result": result,
                "error": reply.error,
            });
            outln!("{line}");
        } else if reply.ok {
            outln!("{}: {}", reply.worker, show(&result));
        } else {
            outln!(
                "{}: error: {}",
                reply.worker,
                reply.error.as_deref().unwrap_or("unknown")
            );
        }
    }
    for worker in &replies.missing {
        if json {
            let line = serde_json::json!({ "worker": worker, "ok": false, "error": "no reply" });
            outln!("{line}");
        } else {
            outln!("{worker}: no reply");
        }
    }
    if replies.any_error() {
        ExitCode::from(1)
    } else if replies.replies.is_empty() || !replies.missing.is_empty() {
        if replies.replies.is_empty() && replies.missing.is_empty() {
            eprintln!("error: no worker replied");
        }
        ExitCode::from(NO_REPLY)
    } else {
        ExitCode::SUCCESS
    }
}

fn compact(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `celeriac ping`.
pub async fn ping(global: &Global, args: &ControlArgs) -> ExitCode {
    let producer = match producer(global, args, false).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    match producer.control(Command::Ping, &args.options()).await {
        Ok(replies) => report(&replies, args.json, compact),
        Err(e) => fail(&e),
    }
}

/// `celeriac inspect WHAT`.
pub async fn inspect(global: &Global, args: &InspectArgs) -> ExitCode {
    let producer = match producer(global, &args.control, false).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let command = Command::Inspect { what: args.what };
    match producer.control(command, &args.control.options()).await {
        Ok(replies) => report(&replies, args.control.json, pretty),
        Err(e) => fail(&e),
    }
}

/// `celeriac revoke ID...`.
pub async fn revoke(global: &Global, args: &RevokeArgs) -> ExitCode {
    let producer = match producer(global, &args.control, !args.no_store).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut options = RevokeOptions::new().ttl(args.ttl);
    if args.terminate {
        options = options.terminate(args.signal);
    }
    options.control = args.control.options();
    match producer.revoke(&args.ids, &options).await {
        Ok(done) => {
            if !args.control.json {
                let held = if done.stored {
                    "stored and broadcast"
                } else {
                    "broadcast only"
                };
                eprintln!("revoked {} id(s), {held}", args.ids.len());
            }
            let code = report(&done.replies, args.control.json, compact);
            // Stored, a revocation holds with no worker listening.
            if done.stored && done.replies.replies.is_empty() && done.replies.missing.is_empty() {
                return ExitCode::SUCCESS;
            }
            code
        }
        Err(e) => fail(&e),
    }
}

fn parse_limit(text: &str) -> Result<Option<u64>, String> {
    if text == "-" {
        return Ok(None);
    }
    humantime::parse_duration(text)
        .map(|d| Some(d.as_millis() as u64))
        .map_err(|e| format!("invalid time limit {text:?}: {e} (e.g. 30s, 5m, or - for none)"))
}

/// `celeriac control COMMAND`.
pub async fn control(global: &Global, args: &ControlCommandArgs) -> ExitCode {
    let command = match &args.command {
        ControlCommand::Ping => Command::Ping,
        ControlCommand::TenantRateLimit { tenant, rate } => {
            return crate::pool::tenant_rate_limit(global, tenant, rate).await
        }
        ControlCommand::Shutdown => Command::Shutdown,
        ControlCommand::SetConcurrency { concurrency } => Command::SetConcurrency {
            concurrency: *concurrency,
        },
        ControlCommand::AddConsumer { queue } => Command::AddConsumer {
            queue: queue.clone(),
        },
        ControlCommand::CancelConsumer { queue } => Command::CancelConsumer {
            queue: queue.clone(),
        },
        ControlCommand::RateLimit { task, rate } => {
            let rate = match rate.as_str() {
                "off" | "none" | "0" => None,
                text => match text.parse::<Rate>() {
                    Ok(rate) => Some(rate.to_string()),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            Command::RateLimit {
                task: task.clone(),
                rate,
            }
        }
        ControlCommand::TimeLimit { task, soft, hard } => {
            match (parse_limit(soft), parse_limit(hard)) {
                (Ok(soft_ms), Ok(hard_ms)) => Command::TimeLimit {
                    task: task.clone(),
                    soft_ms,
                    hard_ms,
                },
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let persisted = limit_entry(&command);
    let producer = match producer(global, &args.control, persisted.is_some()).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut stored = false;
    if let (Some((field, value)), Some(store)) = (&persisted, producer.store()) {
        if let Err(e) = store
            .hash_put(
                ControlHash::Limits,
                field,
                value.as_deref().map(str::as_bytes),
            )
            .await
        {
            eprintln!("error: cannot store the limit: {e}");
            return ExitCode::from(1);
        }
        stored = true;
    }
    match producer.control(command, &args.control.options()).await {
        Ok(replies) => {
            let code = report(&replies, args.control.json, compact);
            if stored && replies.replies.is_empty() && replies.missing.is_empty() {
                eprintln!("stored: workers started from now on apply it");
                return ExitCode::SUCCESS;
            }
            code
        }
        Err(e) => fail(&e),
    }
}

/// `celeriac workers`.
pub async fn workers(global: &Global, args: &WorkersArgs) -> ExitCode {
    let timeout = args.control.timeout;
    let store = if args.no_store {
        None
    } else {
        match tokio::time::timeout(timeout, global.store("")).await {
            Ok(Ok(store)) => Some(store),
            Ok(Err(_)) => {
                eprintln!("warning: no store; asking the workers instead");
                None
            }
            Err(_) => {
                eprintln!(
                    "warning: no answer from the store within {} (--timeout); asking the workers instead",
                    humantime::format_duration(timeout)
                );
                None
            }
        }
    };
    let mut list: Vec<(WorkerStatus, bool)> = Vec::new();
    let listed = match &store {
        Some(store) => Some(
            match tokio::time::timeout(timeout, store.hash_all(ControlHash::Workers)).await {
                Ok(read) => read.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "no answer from the store within {} (--timeout)",
                    humantime::format_duration(timeout)
                )),
            },
        ),
        None => None,
    };
    let now = celeriac_schema::now_ms();
    match listed {
        Some(listed) => match listed {
            Ok(records) => {
                for (worker, bytes) in records {
                    match WorkerStatus::decode(&bytes) {
                        Ok(status) => {
                            let lost =
                                status.kind == WorkerEventKind::Lost || status.is_lost_at(now);
                            list.push((status, lost));
                        }
                        Err(e) => eprintln!("warning: an unreadable record for {worker}: {e}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
        None => {
            let producer = match producer(global, &args.control, false).await {
                Ok(p) => p,
                Err(code) => return code,
            };
            let command = Command::Inspect {
                what: Inspect::Stats,
            };
            let replies = match producer.control(command, &args.control.options()).await {
                Ok(replies) => replies,
                Err(e) => return fail(&e),
            };
            for reply in replies.replies.iter().filter(|r| r.ok) {
                let Some(stats) = reply.result.as_ref() else {
                    continue;
                };
                let Ok(stats) = serde_json::to_value(stats) else {
                    continue;
                };
                let text = |k: &str| stats[k].as_str().unwrap_or_default().to_owned();
                let number = |k: &str| stats[k].as_u64().unwrap_or_default();
                let uptime = number("uptime_ms");
                list.push((
                    WorkerStatus {
                        kind: WorkerEventKind::Online,
                        worker: reply.worker.clone(),
                        hostname: text("hostname"),
                        pid: number("pid") as u32,
                        queues: stats["queues"]
                            .as_array()
                            .map(|q| {
                                q.iter()
                                    .filter_map(|v| v.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        concurrency: number("concurrency") as u32,
                        in_flight: stats["stats"]["in_flight"].as_u64().unwrap_or_default() as u32,
                        processed: stats["stats"]["received"].as_u64().unwrap_or_default(),
                        started_at: now.saturating_sub(uptime),
                        at: now,
                        version: text("version"),
                        heartbeat_ms: 0,
                    },
                    false,
                ));
            }
        }
    }
    list.sort_by(|a, b| a.0.worker.cmp(&b.0.worker));
    if args.control.json {
        for (status, lost) in &list {
            let line = serde_json::json!({
                "worker": status.worker,
                "state": if *lost { "lost" } else { "online" },
                "hostname": status.hostname,
                "pid": status.pid,
                "queues": status.queues,
                "concurrency": status.concurrency,
                "in_flight": status.in_flight,
                "processed": status.processed,
                "uptime_ms": status.at.saturating_sub(status.started_at),
                "version": status.version,
                "last_heartbeat": status.at,
                "last_heartbeat_age_ms": now.saturating_sub(status.at),
            });
            outln!("{line}");
        }
    } else {
        outln!(
            "{:<28} {:<7} {:<16} {:>7} {:<20} {:>5} {:>9} {:>10} {:<8} {:>9}",
            "WORKER",
            "STATE",
            "HOST",
            "PID",
            "QUEUES",
            "CONC",
            "IN-FLIGHT",
            "UPTIME",
            "VERSION",
            "HEARTBEAT"
        );
        for (status, lost) in &list {
            let uptime = Duration::from_secs(status.at.saturating_sub(status.started_at) / 1000);
            let age = Duration::from_millis(now.saturating_sub(status.at) / 100 * 100);
            outln!(
                "{:<28} {:<7} {:<16} {:>7} {:<20} {:>5} {:>9} {:>10} {:<8} {:>9}",
                status.worker,
                if *lost { "lost" } else { "online" },
                status.hostname,
                status.pid,
                status.queues.join(","),
                status.concurrency,
                status.in_flight,
                humantime::format_duration(uptime).to_string(),
                status.version,
                format!("{} ago", humantime::format_duration(age)),
            );
        }
    }
    if list.iter().any(|(_, lost)| !lost) {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: no live worker");
        ExitCode::from(NO_REPLY)
    }
}

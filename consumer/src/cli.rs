//! The `celeriac-worker` command line.

use std::process::ExitCode;
use std::time::Duration;

use tracing::error;

use crate::registry::Registry;
use crate::worker::Worker;

mod args;
mod fair;
mod tls;
mod urgency;
mod values;

pub use args::Args;
pub use fair::FairQueue;
pub use values::MetricsAddr;

pub use self::tls::TlsArgs;
pub use self::urgency::{UrgencyArgs, WaitThreshold};

/// The broker URL when none is given.
pub const DEFAULT_AMQP_ADDR: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses the command line, runs a worker with the built-in tasks plus
/// whatever `extend` registers, and returns the process exit code.
pub fn main_with(extend: impl FnOnce(&mut Registry)) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(args.log_format);
    // Panics go to the log as structured events (a handler's panic is also
    // reported with its task id by the worker, which survives it).
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic");
    }));
    for secret in ["amqp_addr", "redis_url"] {
        if matches.value_source(secret) == Some(clap::parser::ValueSource::CommandLine) {
            tracing::warn!(
                flag = %format!("--{}", secret.replace('_', "-")),
                "a secret given as a flag is readable by every process on this host (/proc/PID/cmdline): use the variable or the -file flag"
            );
        }
    }
    let secrets = args
        .broker_url()
        .and_then(|amqp| Ok((amqp, args.store_url()?)));
    let (amqp_addr, redis_url) = match secrets {
        Ok(secrets) => secrets,
        Err(e) => {
            error!(error = %e, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    let mut registry = Registry::new();
    crate::builtin::register(&mut registry);
    let exec = match args.exec_config().prepare() {
        Ok(exec) => exec,
        Err(e) => {
            error!(error = %e, "cannot run programs as configured");
            return ExitCode::from(2);
        }
    };
    if exec.allowed().is_empty() && !exec.allows_any() {
        tracing::info!("no --exec-allow: celeriac.exec tasks are dead-lettered as forbidden");
    } else if let Err(e) = crate::exec::hide_worker_from_programs() {
        error!(error = %e, "cannot make the worker non-dumpable, which keeps programs from reading its environment");
        return ExitCode::from(1);
    }
    crate::exec::register(&mut registry, std::sync::Arc::new(exec));
    extend(&mut registry);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args, amqp_addr, redis_url, registry))
}

async fn run(
    args: Args,
    amqp_addr: String,
    redis_url: Option<String>,
    registry: Registry,
) -> ExitCode {
    // Before anything else, so a signal during start-up is a clean
    // shutdown rather than the default action.
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = args.tls.check(&amqp_addr, redis_url.as_deref()) {
        error!(error = %e, "invalid TLS options");
        return ExitCode::from(2);
    }
    let mut builder = Worker::builder(amqp_addr, registry)
        .tls(args.tls.broker())
        .namespace(args.namespace.clone())
        .queues(args.queues)
        .concurrency(args.concurrency)
        .grace(args.grace)
        .delivery_limit(args.delivery_limit)
        .consumer_timeout(args.consumer_timeout)
        .lease_ttl(args.lease_ttl)
        .limits(celeriac_schema::DecodeLimits {
            max_bytes: args.max_message_bytes,
            ..celeriac_schema::DecodeLimits::default()
        });
    if let Some(path) = &args.signing_keys {
        match celeriac_producer::signing::load_keyring(path) {
            Ok(keyring) => {
                tracing::info!(
                    signing_key = keyring.signing_key_id(),
                    keys = ?keyring.key_ids().collect::<Vec<_>>(),
                    "signatures required"
                );
                builder = builder.signing(keyring);
            }
            Err(e) => {
                error!(error = %e, "invalid --signing-keys");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(prefetch) = args.prefetch {
        builder = builder.prefetch(prefetch);
    }
    for FairQueue { queue, shards } in args.fair {
        builder = builder.fair_queue(queue, shards);
    }
    if let Some(id) = args.worker_id {
        builder = builder.worker_id(id);
    }
    builder = args.urgency.apply(builder);
    builder = args
        .policy
        .apply(builder)
        .events(args.events)
        .heartbeat(args.heartbeat)
        .queue_sample_interval(args.queue_sample_interval);
    if let Some(addr) = args.metrics_addr.0 {
        builder = builder.metrics_addr(addr);
    }
    if let Some(path) = &args.metrics_token_file {
        match read_token(path) {
            Ok(token) => builder = builder.metrics_token(token),
            Err(e) => {
                error!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(url) = &redis_url {
        if args.run_lease_ttl < Duration::from_secs(1) {
            error!("--run-lease-ttl must be at least 1s");
            return ExitCode::from(2);
        }
        let settings = celeriac_schema::store::StoreSettings {
            result_ttl: args.result_ttl,
            key_ttl: args.key_ttl,
            lease_ttl: args.run_lease_ttl,
        };
        let tls = args.tls.redis();
        let store =
            celeriac_producer::RedisStore::connect_with_tls(url, &args.namespace, settings, &tls);
        match store.await {
            Ok(store) => builder = builder.store(std::sync::Arc::new(store)),
            Err(e) => {
                error!(error = %e, "cannot use the state store (set REDIS_URL or REDIS_URL_FILE to a reachable Redis, or pass --no-store)");
                return ExitCode::from(1);
            }
        }
    }
    let worker = match builder.build() {
        Ok(worker) => worker,
        Err(e @ crate::Error::MetricsServer { .. }) => {
            error!(error = %e, "cannot start the metrics server (choose another --metrics-addr, or `off`)");
            return ExitCode::from(1);
        }
        Err(e) => {
            error!(error = %e, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    let handle = worker.handle();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutdown requested; finishing in-flight tasks");
        handle.shutdown();
        signals.next().await;
        tracing::warn!("second signal; exiting at once");
        std::process::exit(130);
    });
    match worker.run().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "worker failed");
            ExitCode::from(1)
        }
    }
}

/// SIGTERM and SIGINT, listened to from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The names of the metrics token, for messages.
const METRICS_TOKEN: crate::secrets::SecretNames = crate::secrets::SecretNames {
    flag: "--metrics-token",
    env: "CELERIAC_METRICS_TOKEN",
};

/// Reads the bearer token of `--metrics-token-file` from `path`, refusing
/// an empty one.
///
/// # Errors
///
/// A message naming the flag when the file cannot be read or is empty.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    match crate::secrets::resolve(METRICS_TOKEN, None, Some(path)) {
        Ok(Some(token)) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        Ok(_) => Err(format!(
            "--metrics-token-file {}: the file is empty",
            path.display()
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn metrics_listen_on_loopback_by_default() {
        let args = Args::try_parse_from(["celeriac-worker"]).expect("defaults parse");
        let addr = args.metrics_addr.0.expect("metrics on by default");
        assert!(addr.ip().is_loopback(), "default metrics address {addr}");
        assert_eq!(addr.port(), 9464);
    }

    #[test]
    fn a_metrics_token_file_must_hold_a_token() {
        let dir = std::env::temp_dir().join(format!("celeriac-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good");
        std::fs::write(&good, "s3cret\n").expect("write");
        assert_eq!(read_token(&good).as_deref(), Ok("s3cret"));
        let empty = dir.join("empty");
        std::fs::write(&empty, " \n").expect("write");
        assert!(read_token(&empty).is_err_and(|e| e.contains("is empty")));
        let missing = dir.join("missing");
        assert!(read_token(&missing).is_err_and(|e| e.contains("--metrics-token-file")));
        std::fs::remove_dir_all(&dir).ok();
    }
}

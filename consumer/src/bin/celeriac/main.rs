//! `celeriac`: the command line for people and scripts.
//!
//! `celeriac status <id>` shows what the state store knows about a task (its
//! state, attempts, timings, worker, error and result) or a workflow (every
//! node's progress, attempts and error).
//!
//! `celeriac send TASK --input JSON` enqueues one task; `celeriac beat
//! flow.yaml ...` submits scheduled flows at their ticks.
//!
//! `celeriac run --local flow.yaml` runs a YAML workflow in-process, with no
//! broker; `celeriac submit flow.yaml` sends it to the cluster.
//!
//! `celeriac revoke`, `control`, `inspect`, `ping` and `workers` talk to the
//! workers over the control plane.
//! `celeriac events` tails the event stream; `celeriac purge --queue Q`
//! empties a work queue.
//!
//! Each subcommand lives in its own module.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// `print!` to stdout, except that a closed pipe (`celeriac status ID |
/// head`) ends the output quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` to stdout, with [`out!`]'s handling of a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod beat;
mod beat_metrics;
mod control;
mod dashboard;
mod events;
mod exporter;
mod pool;
mod purge;
mod queue;
mod run;
mod send;
mod signing;
mod status;
mod submit;

/// Exit code when the id is unknown to the store.
const UNKNOWN: u8 = 3;

/// How long to try to reach the broker.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "celeriac",
    version,
    about = "Run, send and inspect celeriac tasks and workflows.",
    after_help = "Exit codes: 0 success, 1 a failure (of the store, the broker or a task; for control commands, a worker reported an error), 2 invalid arguments or input, 3 unknown id or queue, 4 no worker (or not every named worker) replied in time, or `events --count` not reached before `--timeout`."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,

    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand shares, as given.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// The RabbitMQ broker (default: amqp://guest:guest@127.0.0.1:5672/%2f).
    #[arg(long, global = true, env = "AMQP_ADDR", hide_env_values = true)]
    amqp_addr: Option<String>,

    /// A file holding the broker URL (a trailing newline is ignored); not
    /// together with --amqp-addr / AMQP_ADDR.
    #[arg(long, global = true, env = "AMQP_ADDR_FILE")]
    amqp_addr_file: Option<std::path::PathBuf>,

    /// The Redis state store (default: redis://127.0.0.1:6379).
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,

    /// A file holding the Redis URL (a trailing newline is ignored); not
    /// together with --redis-url / REDIS_URL.
    #[arg(long, global = true, env = "REDIS_URL_FILE")]
    redis_url_file: Option<std::path::PathBuf>,

    /// Namespace of the queues and the store keys.
    #[arg(
        long,
        global = true,
        env = "CELERIAC_NAMESPACE",
        default_value = "celeriac"
    )]
    namespace: String,

    /// TLS to the broker (amqps://) and Redis (rediss://).
    #[command(flatten)]
    tls: celeriac_consumer::cli::TlsArgs,
}

/// Options every subcommand shares, with the secrets read.
#[derive(Debug)]
pub struct Global {
    /// The RabbitMQ broker.
    pub amqp_addr: String,
    /// The Redis state store.
    pub redis_url: String,
    /// Whether a Redis URL was given (the default is used otherwise).
    pub redis_given: bool,
    /// Namespace of the queues and the store keys.
    pub namespace: String,
    /// TLS to the broker (amqps://) and Redis (rediss://).
    pub tls: celeriac_consumer::cli::TlsArgs,
}

impl GlobalArgs {
    /// Reads the secrets given as files.
    fn resolve(self) -> celeriac_consumer::Result<Global> {
        use celeriac_consumer::secrets::{resolve, AMQP_ADDR, REDIS_URL};
        let amqp_addr = resolve(AMQP_ADDR, self.amqp_addr, self.amqp_addr_file.as_deref())?;
        let redis_url = resolve(REDIS_URL, self.redis_url, self.redis_url_file.as_deref())?;
        Ok(Global {
            redis_given: redis_url.is_some(),
            amqp_addr: amqp_addr
                .unwrap_or_else(|| celeriac_consumer::cli::DEFAULT_AMQP_ADDR.to_owned()),
            redis_url: redis_url.unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
            namespace: self.namespace,
            tls: self.tls,
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a YAML workflow in-process with no broker: `celeriac run --local
    /// flow.yaml`. Shows node states as they change and a summary; exits 1
    /// when a node failed or was skipped, 2 for an invalid file.
    Run(run::RunArgs),
    /// Submit a YAML workflow to the cluster and print its id; with
    /// `--wait`, wait and print every node's state.
    Submit(submit::SubmitArgs),
    /// Enqueue one task: `celeriac send images.resize --input '{"w": 640}'`.
    /// Prints its id, or with `--wait` its result as JSON.
    Send(send::SendArgs),
    /// Submit the scheduled flows of YAML files at their ticks (interval or
    /// cron), once per tick across any number of replicas, until SIGTERM.
    Beat(beat::BeatArgs),
    /// Serve the depth and consumers of every queue of the namespace, read
    /// from the broker's management API, as Prometheus metrics (so a queue
    /// nobody consumes is seen).
    Exporter(exporter::ExporterArgs),
    /// Tail the event stream: task events (workers with --events,
    /// producers with events on) and worker events, as a table or JSON
    /// lines.
    Events(events::EventsArgs),
    /// Remove every task waiting in one work queue; asks first unless
    /// --yes.
    Purge(purge::PurgeArgs),
    /// Queue settings: `celeriac queue fair QUEUE --shards 8` makes tenants
    /// share QUEUE round-robin.
    Queue(queue::QueueArgs),
    /// Serve the web dashboard (queues, tasks, workflows, dead letters,
    /// workers): `celeriac dashboard --listen 127.0.0.1:8080`.
    Dashboard(dashboard::DashboardArgs),
    /// Show a task's state, attempts, timings, worker, error and result, or
    /// a workflow's state and every node's progress, attempts and error.
    ///
    /// Exit codes: 0 shown; 1 the store is unreachable or holds a record
    /// this build cannot read; 2 the id is not a UUID (or bad options); 3
    /// no task or workflow has this id (never recorded, or expired).
    #[command(
        after_help = "Exit codes: 0 shown, 1 store unreachable or record unreadable, 2 invalid id or options, \
                      3 unknown id (never recorded, or its record expired).\n\
                      --json prints one JSON object, version 1 (field \"v\"), specified in section 18.7 of \
                      broker-schema/SPEC.md; results use the lossless MessagePack-to-JSON mapping of section 18.6."
    )]
    Status {
        /// The task or workflow id (a UUID).
        id: String,
        /// Print one JSON object (SPEC.md section 18.7) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke task ids, workflow ids or idempotency keys: stored with a TTL
    /// and broadcast; queued and delayed ones never run, running ones stop
    /// with --terminate. Exit 0, 1 a worker reported an error, 4 not every
    /// named worker replied.
    Revoke(control::RevokeArgs),
    /// Send a command to the workers: ping, shutdown, set-concurrency,
    /// add-consumer, cancel-consumer, rate-limit, tenant-rate-limit,
    /// time-limit. Exit 0, 1 a
    /// worker reported an error, 4 no (or not every named) worker replied.
    Control(control::ControlCommandArgs),
    /// Ask the workers for active, reserved, scheduled, revoked, stats,
    /// registered or conf. Exit 0, 1 an error, 4 no (or not every named)
    /// worker replied.
    Inspect(control::InspectArgs),
    /// Ask the workers to answer. Exit 0, 4 no (or not every named) worker
    /// replied.
    Ping(control::ControlArgs),
    /// List the workers: host, pid, queues, concurrency, in-flight, uptime,
    /// version and last heartbeat; silent for three heartbeats: lost. From
    /// the store, or from a broadcast. Exit 0, 4 no live worker.
    Workers(control::WorkersArgs),
    /// Set or list the capacities of the cluster's resource pools (kept
    /// in the store). Exit 0, 1 the store failed, 2 bad input.
    Pool(pool::PoolArgs),
}

/// Writes `args` to stdout and flushes. A reader that went away is not an
/// error (it has what it wanted); any other write error is reported once on
/// stderr.
fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to stdout: {e}");
        }
    }
}

impl Global {
    /// The Redis store of the namespace; on failure the error (followed by
    /// `hint`) is printed and the exit code returned.
    pub async fn store(&self, hint: &str) -> Result<celeriac_store::RedisStore, ExitCode> {
        celeriac_store::RedisStore::connect_with_tls(
            &self.redis_url,
            &self.namespace,
            celeriac_schema::store::StoreSettings::default(),
            &self.tls.redis(),
        )
        .await
        .map_err(|e| {
            eprintln!("error: {e}{hint}");
            ExitCode::from(1)
        })
    }

    /// A producer for the broker and namespace, with `store` when given,
    /// signing with `signing` when given.
    pub async fn producer(
        &self,
        store: Option<std::sync::Arc<dyn celeriac_schema::store::Store>>,
        signing: Option<celeriac_schema::signing::Keyring>,
    ) -> celeriac_producer::Result<celeriac_producer::Producer> {
        self.producer_with_metrics(store, signing, None).await
    }

    /// [`Global::producer`], counting what it sends in `metrics`.
    pub async fn producer_with_metrics(
        &self,
        store: Option<std::sync::Arc<dyn celeriac_schema::store::Store>>,
        signing: Option<celeriac_schema::signing::Keyring>,
        metrics: Option<std::sync::Arc<celeriac_producer::metrics::ProducerMetrics>>,
    ) -> celeriac_producer::Result<celeriac_producer::Producer> {
        let mut builder = celeriac_producer::Producer::builder(&self.amqp_addr)
            .tls(self.tls.broker())
            .namespace(&self.namespace)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(store) = store {
            builder = builder.store(store);
        }
        if let Some(keyring) = signing {
            builder = builder.signing(keyring);
        }
        if let Some(metrics) = metrics {
            builder = builder.metrics(metrics);
        }
        builder.connect().await
    }
}

/// Prints a producer error; exit 2 when the input was at fault (a name,
/// options, a workflow, a URL, TLS files), 1 otherwise.
fn fail(e: &celeriac_producer::Error) -> ExitCode {
    use celeriac_producer::Error;
    eprintln!("error: {e}");
    match e {
        Error::Workflow(_)
        | Error::Schema(celeriac_schema::Error::InvalidName { .. })
        | Error::Schema(celeriac_schema::Error::InvalidShards { .. })
        | Error::InvalidOptions(_)
        | Error::InvalidUrl { .. }
        | Error::TlsConfig(_) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info,lapin=warn`).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
    let global = match cli.global.resolve() {
        Ok(global) => global,
        Err(celeriac_consumer::Error::Config(message)) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !matches!(cli.command, Command::Run(_)) {
        if let Err(e) = global.tls.check(&global.amqp_addr, Some(&global.redis_url)) {
            return fail(&e);
        }
    }
    match cli.command {
        Command::Status { id, json } => status::run(&global, &id, json).await,
        Command::Send(args) => send::run(&global, &args).await,
        Command::Beat(args) => beat::run(&global, &args).await,
        Command::Exporter(args) => exporter::run(&global, &args).await,
        Command::Dashboard(args) => dashboard::run(&global, &args).await,
        Command::Run(args) => run::run(&args).await,
        Command::Submit(args) => submit::run(&global, &args).await,
        Command::Revoke(args) => control::revoke(&global, &args).await,
        Command::Control(args) => control::control(&global, &args).await,
        Command::Inspect(args) => control::inspect(&global, &args).await,
        Command::Ping(args) => control::ping(&global, &args).await,
        Command::Workers(args) => control::workers(&global, &args).await,
        Command::Pool(args) => pool::run(&global, &args).await,
        Command::Events(args) => events::run(&global, &args).await,
        Command::Purge(args) => purge::run(&global, &args).await,
        Command::Queue(args) => queue::run(&global, &args).await,
    }
}

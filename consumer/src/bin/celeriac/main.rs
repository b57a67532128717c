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
mod run;
mod send;
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
    after_help = "Exit codes: 0 success, 1 a failure (of the store, the broker or a task), 2 invalid arguments or input, 3 unknown id."
)]
struct Cli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand shares.
#[derive(Debug, Args)]
pub struct Global {
    /// The RabbitMQ broker.
    #[arg(
        long,
        global = true,
        env = "AMQP_ADDR",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_addr: String,

    /// The Redis state store.
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Namespace of the queues and the store keys.
    #[arg(
        long,
        global = true,
        env = "CELERIAC_NAMESPACE",
        default_value = "celeriac"
    )]
    pub namespace: String,

    /// TLS to the broker (amqps://) and Redis (rediss://).
    #[command(flatten)]
    pub tls: celeriac_consumer::cli::TlsArgs,
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
    pub async fn store(&self, hint: &str) -> Result<celeriac_producer::RedisStore, ExitCode> {
        celeriac_producer::RedisStore::connect_with_tls(
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

    /// A producer for the broker and namespace, with `store` when given.
    pub async fn producer(
        &self,
        store: Option<std::sync::Arc<dyn celeriac_schema::store::Store>>,
    ) -> celeriac_producer::Result<celeriac_producer::Producer> {
        let mut builder = celeriac_producer::Producer::builder(&self.amqp_addr)
            .tls(self.tls.broker())
            .namespace(&self.namespace)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(store) = store {
            builder = builder.store(store);
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
        | Error::InvalidOptions(_)
        | Error::InvalidUrl { .. }
        | Error::TlsConfig(_) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
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
    if !matches!(cli.command, Command::Run(_)) {
        let global = &cli.global;
        if let Err(e) = global.tls.check(&global.amqp_addr, Some(&global.redis_url)) {
            return fail(&e);
        }
    }
    match cli.command {
        Command::Status { id, json } => status::run(&cli.global, &id, json).await,
        Command::Send(args) => send::run(&cli.global, &args).await,
        Command::Beat(args) => beat::run(&cli.global, &args).await,
        Command::Run(args) => run::run(&args).await,
        Command::Submit(args) => submit::run(&cli.global, &args).await,
    }
}

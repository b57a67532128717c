//! `celeriac-dlq`: inspect, export, import, replay and purge celeriac dead
//! letters. See `celeriac-dlq --help` and the crate README.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = celeriac_dlq::Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,lapin=off")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("celeriac-dlq: cannot start the async runtime: {e}");
            return ExitCode::from(celeriac_dlq::exit::ERROR);
        }
    };
    match runtime.block_on(celeriac_dlq::run(cli)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            if !matches!(e, celeriac_dlq::Error::BrokenPipe) {
                eprintln!("celeriac-dlq: {e}");
            }
            e.to_exit_code()
        }
    }
}

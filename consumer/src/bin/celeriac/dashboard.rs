//! `celeriac dashboard`: the web dashboard of a namespace (queues, tasks,
//! workflows, dead letters, workers), served until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use celeriac_dashboard::{Config, Dashboard, Login, RevokeHook, WorkerSource};
use clap::Args;

use crate::Global;

/// The options of `celeriac dashboard`.
#[derive(Debug, Args)]
#[command(
    after_help = "Without --token-file or --basic-auth-file the dashboard is read-only: \
replay, delete and revoke answer 403. With one, every page and API request needs it. \
Exit codes: 0 stopped by SIGTERM or Ctrl-C, 1 the store, the broker or the address failed, \
2 invalid arguments or files."
)]
pub struct DashboardArgs {
    /// Address to serve on; loopback by default, as the dashboard shows
    /// task inputs and results.
    #[arg(
        long,
        env = "CELERIAC_DASHBOARD_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,

    /// Refuse every write (replay, delete, revoke) even with a login.
    #[arg(long)]
    read_only: bool,

    /// Require this token (one line) as `Authorization: Bearer <token>`
    /// or through the login page, and allow writes.
    #[arg(long, env = "CELERIAC_DASHBOARD_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,

    /// Require HTTP basic auth with the `user:password` of this file, and
    /// allow writes.
    #[arg(
        long,
        env = "CELERIAC_DASHBOARD_BASIC_AUTH_FILE",
        value_name = "PATH",
        conflicts_with = "token_file"
    )]
    basic_auth_file: Option<PathBuf>,

    /// The RabbitMQ management API (default: the broker's host, port
    /// 15672); without it queues are read with passive declares.
    #[arg(long, env = "CELERIAC_MANAGEMENT_URL", value_name = "URL")]
    management_url: Option<String>,

    /// A logical queue to show when the management API cannot list them
    /// (repeatable; `default` and the queues of recent tasks always are).
    #[arg(long = "queue", value_name = "QUEUE")]
    queues: Vec<String>,

    #[command(flatten)]
    signing: crate::signing::SigningArgs,
}

/// The control plane's revoke for the dashboard's revoke button; `None`
/// disables the button. Wire the control plane's revoke here.
fn revoke_hook(_global: &Global) -> Option<RevokeHook> {
    None
}

/// Where the Workers page reads heartbeats; `None`: no heartbeat data
/// (the page shows the workers seen in recent tasks). Wire the control
/// plane's heartbeat reader here.
fn heartbeat_source(_global: &Global) -> Option<Arc<dyn WorkerSource>> {
    None
}

pub async fn run(global: &Global, args: &DashboardArgs) -> ExitCode {
    let login = match (&args.token_file, &args.basic_auth_file) {
        (Some(path), _) => Login::token_file(path).map(Some),
        (None, Some(path)) => Login::basic_auth_file(path).map(Some),
        (None, None) => Ok(None),
    };
    let login = match login {
        Ok(login) => login,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let signing = match args.signing.keyring() {
        Ok(keyring) => keyring,
        Err(code) => return code,
    };
    let store = match global.store("").await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let mut config = Config::new(&global.amqp_addr, &global.namespace);
    config.broker_tls = global.tls.broker();
    config.management_url = args.management_url.clone();
    config.queues = args.queues.clone();
    config.read_only = args.read_only;
    config.signing = signing;
    let writable = login.is_some() && !args.read_only;
    if login.is_none() && !args.listen.ip().is_loopback() {
        eprintln!(
            "warning: serving on {} without a login: anyone who reaches it sees task inputs, \
             results and errors (it stays read-only); use --token-file or --basic-auth-file",
            args.listen
        );
    }
    config.login = login;
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let mut dashboard = Dashboard::new(config, store);
    if let Some(hook) = revoke_hook(global) {
        dashboard = dashboard.revoke(hook);
    }
    if let Some(source) = heartbeat_source(global) {
        dashboard = dashboard.workers(source);
    }
    eprintln!(
        "dashboard of namespace {:?} on http://{} ({})",
        global.namespace,
        args.listen,
        if writable { "read-write" } else { "read-only" }
    );
    match dashboard.serve(listener, shutdown()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(celeriac_dashboard::Error::Config(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

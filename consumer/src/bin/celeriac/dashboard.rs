//! `celeriac dashboard`: the web dashboard of a namespace (queues, tasks,
//! workflows, dead letters, workers), served until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use celeriac_dashboard::{Config, Dashboard, Login, RevokeHook, StoreHeartbeats};
use celeriac_producer::control::RevokeOptions;
use celeriac_schema::control::KillSignal;
use celeriac_schema::signing::Keyring;
use celeriac_schema::store::Store;
use celeriac_schema::TaskId;
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

    /// Require HTTP basic auth with the `user:password` of this file (or
    /// the `username` and `password` files of this directory, as a mounted
    /// Kubernetes basic-auth Secret holds them), and allow writes.
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

/// The control plane's revoke behind the dashboard's revoke button: the
/// id is revoked in the store (so a queued or delayed copy never runs) and
/// broadcast to the workers; a run in progress finishes, unless the
/// dashboard asks to terminate it (SIGTERM). `None` (the button disabled)
/// when the broker cannot be reached at start.
async fn revoke_hook(
    global: &Global,
    store: Arc<dyn Store>,
    signing: Option<Keyring>,
) -> Option<RevokeHook> {
    let producer = match global.producer(Some(store), signing).await {
        Ok(producer) => producer,
        Err(e) => {
            eprintln!("warning: no revoke button: {e}");
            return None;
        }
    };
    Some(Arc::new(
        move |id: TaskId, how: celeriac_dashboard::RevokeOptions| {
            let producer = producer.clone();
            Box::pin(async move {
                let options = if how.terminate {
                    RevokeOptions::new().terminate(KillSignal::Term)
                } else {
                    RevokeOptions::new()
                };
                let revoked = producer
                    .revoke(&[id.to_string()], &options)
                    .await
                    .map_err(|e| e.to_string())?;
                let heard = revoked.replies.replies.len();
                let what = if how.terminate {
                    format!("revoked {id} and sent SIGTERM to its run, if any")
                } else {
                    format!("revoked {id}")
                };
                Ok(if revoked.stored {
                    format!("{what}; {heard} worker(s) acknowledged")
                } else {
                    format!("{what} on the {heard} worker(s) that acknowledged (no store)")
                })
            })
        },
    ))
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
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let revoke = if writable {
        revoke_hook(global, shared.clone(), config.signing.clone()).await
    } else {
        None
    };
    let mut dashboard =
        Dashboard::new(config, store).workers(Arc::new(StoreHeartbeats::new(shared)));
    if let Some(hook) = revoke {
        dashboard = dashboard.revoke(hook);
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

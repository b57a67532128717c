//! `celeriac beat flow.yaml [more.yaml ...]`: submit the scheduled flows
//! (and scheduled tasks of flows) at their ticks, until SIGTERM or Ctrl-C.
//!
//! Run as many replicas as you like on one namespace: each tick is
//! submitted once (see `celeriac_producer::beat`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use celeriac_producer::beat::{Beat, BeatEntry, BeatOptions, RedisBeatState};
use celeriac_producer::flow::Flow;
use celeriac_schema::store::Store;
use celeriac_schema::workflow::Workflow;
use clap::Args;

use crate::Global;

/// Options of `celeriac beat`.
#[derive(Debug, Args)]
pub struct BeatArgs {
    /// YAML flows with a `schedule` (on the flow or on some of its tasks),
    /// or directories whose `*.yaml` and `*.yml` files are read.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// This replica's name in the tick keys it takes (default: host name,
    /// process id and a random suffix).
    #[arg(long, env = "CELERIAC_BEAT_REPLICA")]
    pub replica: Option<String>,

    /// Only check the files and print the schedules and their next ticks.
    #[arg(long)]
    pub check: bool,

    /// Signing of the tasks published.
    #[command(flatten)]
    pub signing: crate::signing::SigningArgs,

    /// Where to serve /metrics (Prometheus), /healthz and /readyz; `off`
    /// for no server. Loopback by default: bind 0.0.0.0:9465 in a pod.
    #[arg(long, env = "CELERIAC_METRICS_ADDR", default_value = "127.0.0.1:9465")]
    pub metrics_addr: celeriac_consumer::cli::MetricsAddr,

    /// A file holding the bearer token that /metrics requires (the probes
    /// stay open).
    #[arg(long, env = "CELERIAC_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
}

/// Runs beat; exit code 0 after a clean stop, 1 when the broker or the
/// store fails at start-up, 2 for invalid files.
pub async fn run(global: &Global, args: &BeatArgs) -> ExitCode {
    crate::init_logs();
    let stop = shutdown();
    let entries = match entries(&args.files) {
        Ok(entries) => entries,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let keyring = match args.signing.keyring() {
        Ok(keyring) => keyring,
        Err(code) => return code,
    };
    let now = SystemTime::now();
    for entry in &entries {
        let next = entry.schedule().next_after(now).map_or_else(
            || "never".to_owned(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        );
        outln!(
            "{}  {}  overlap {}  next {next}",
            entry.label(),
            entry.schedule(),
            entry.overlap()
        );
    }
    if args.check {
        return ExitCode::SUCCESS;
    }
    let token = match &args.metrics_token_file {
        None => None,
        Some(path) => match celeriac_consumer::cli::read_token(path) {
            Ok(token) => Some(token),
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
        },
    };
    // Bound before connecting, so a taken port fails at once.
    let listener = match args.metrics_addr.0 {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                eprintln!("error: cannot serve metrics on {addr} (choose another --metrics-addr, or `off`): {e}");
                return ExitCode::from(1);
            }
        },
    };
    let store = match global.store("").await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let tls = global.tls.redis();
    let state = RedisBeatState::connect_with_tls(&global.redis_url, &global.namespace, &tls);
    let state = match state.await {
        Ok(state) => state,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let store: Arc<dyn Store> = Arc::new(store);
    let registry = prometheus::Registry::new();
    let metrics = match celeriac_producer::metrics::ProducerMetrics::register(&registry) {
        Ok(metrics) => metrics,
        Err(e) => {
            eprintln!("error: cannot set up beat's metrics: {e}");
            return ExitCode::from(1);
        }
    };
    let producer = match global
        .producer_with_metrics(Some(store), keyring, Some(metrics))
        .await
    {
        Ok(producer) => producer,
        Err(e) => return crate::fail(&e),
    };
    let mut options = BeatOptions::default();
    if let Some(replica) = &args.replica {
        options.replica = replica.clone();
    }
    let count = entries.len();
    let beat = Beat::new(producer, Arc::new(state), entries).options(options);
    let http_stop = tokio_util::sync::CancellationToken::new();
    let _http_guard = http_stop.clone().drop_guard();
    if let Some(listener) = listener {
        match crate::beat_metrics::BeatEndpoints::new(registry, beat.monitor(), count, token) {
            Ok(endpoints) => {
                tokio::spawn(celeriac_consumer::http::serve(
                    listener,
                    Arc::new(endpoints),
                    http_stop.clone(),
                ));
            }
            Err(e) => {
                eprintln!("error: cannot set up beat's metrics: {e}");
                return ExitCode::from(1);
            }
        }
    }
    match beat.run(stop).await {
        Ok(stats) => {
            eprintln!(
                "beat stopped: {} submitted, {} taken by other replicas, {} taken over from replicas that stopped, {} skipped, {} queued, {} missed, {} failed",
                stats.submitted,
                stats.taken,
                stats.taken_over,
                stats.skipped,
                stats.queued,
                stats.missed,
                stats.failed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Every scheduled entry of the files, or what is wrong with them.
fn entries(paths: &[PathBuf]) -> Result<Vec<BeatEntry>, String> {
    let mut entries = Vec::new();
    let mut names = HashSet::new();
    for path in &flow_files(paths)? {
        let flow = Arc::new(Flow::from_path(path).map_err(|e| e.to_string())?);
        if !names.insert(flow.name().to_owned()) {
            return Err(format!(
                "{}: a flow named {:?} is already scheduled from another file; flow names must be unique",
                path.display(),
                flow.name()
            ));
        }
        let scheduled = flow.scheduled();
        if scheduled.is_empty() {
            return Err(format!(
                "{}: flow {:?} has no schedule: add `schedule:` (seconds or a cron expression) to the flow or to a task",
                path.display(),
                flow.name()
            ));
        }
        for s in scheduled {
            let entry = s.entry.clone();
            if flow
                .workflow_for(entry.as_deref(), celeriac_schema::TaskId::new())
                .is_none()
            {
                return Err(format!(
                    "{}: scheduled entry {entry:?} names no task of flow {:?}",
                    path.display(),
                    flow.name()
                ));
            }
            let build_flow = flow.clone();
            entries.push(BeatEntry::new(
                flow.name(),
                entry.clone(),
                s.schedule,
                s.overlap,
                move |id| {
                    build_flow
                        .workflow_for(entry.as_deref(), id)
                        .unwrap_or(Workflow {
                            id,
                            nodes: Vec::new(),
                        })
                },
            ));
        }
    }
    Ok(entries)
}

/// The files named, with each directory replaced by its YAML files in
/// name order.
fn flow_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let read = std::fs::read_dir(path)
            .map_err(|e| format!("{}: cannot read the directory: {e}", path.display()))?;
        let mut found: Vec<PathBuf> = read
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|ext| ext == "yaml" || ext == "yml")
            })
            .collect();
        if found.is_empty() {
            return Err(format!(
                "{}: no .yaml or .yml files in this directory",
                path.display()
            ));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Completes on SIGTERM or Ctrl-C. Listens from the moment it is called
/// (not first polled), so a SIGTERM while beat connects stops it cleanly.
pub fn shutdown() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        match term {
            Some(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = ctrl_c => {}
                }
            }
            None => {
                let _ = ctrl_c.await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("stopping: no new ticks");
    }
}

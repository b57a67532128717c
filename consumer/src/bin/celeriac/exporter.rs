//! `celeriac exporter`: the depth and consumers of every queue of the
//! namespace, read from the broker's management API, as Prometheus
//! metrics.
//!
//! Workers sample only the queues they consume, so a queue nobody consumes
//! (a producer's typo, workers scaled to zero) is invisible in their
//! metrics. The exporter lists them all:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `celeriac_broker_queue_messages` | gauge | queue, kind (work, dlq) |
//! | `celeriac_broker_queue_unacked` | gauge | queue, kind |
//! | `celeriac_broker_queue_consumers` | gauge | queue, kind |
//! | `celeriac_broker_queues` | gauge | |
//! | `celeriac_exporter_up` | gauge | |
//!
//! A queue that disappears from the broker disappears from the metrics.
//! Ready while the last read of the management API succeeded.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use celeriac_consumer::http::Endpoints;
use celeriac_dlq::discover::{Management, QueueDepth};
use celeriac_schema::Topology;
use clap::Args;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

use crate::Global;

/// Options of `celeriac exporter`.
#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// Where to serve /metrics, /healthz and /readyz. Loopback by default:
    /// bind 0.0.0.0:9466 in a pod.
    #[arg(long, env = "CELERIAC_METRICS_ADDR", default_value = "127.0.0.1:9466")]
    pub listen: std::net::SocketAddr,

    /// How often the queues are read from the broker.
    #[arg(long, env = "CELERIAC_EXPORTER_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// The management API's base URL (default: the broker's host, port
    /// 15672, or https on 15671 for amqps://), with the broker URL's
    /// credentials and virtual host.
    #[arg(long, env = "CELERIAC_MANAGEMENT_URL")]
    pub management_url: Option<String>,

    /// A file holding the bearer token that /metrics requires (the probes
    /// stay open).
    #[arg(long, env = "CELERIAC_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
}

/// The gauges, and whether the last read worked.
struct QueueGauges {
    registry: Registry,
    messages: IntGaugeVec,
    unacked: IntGaugeVec,
    consumers: IntGaugeVec,
    queues: IntGauge,
    up: IntGauge,
    /// Why the last read failed, if it did.
    last_error: Mutex<Option<String>>,
    token: Option<String>,
}

impl QueueGauges {
    fn new(token: Option<String>) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let vec = |name: &str, help: &str| -> prometheus::Result<IntGaugeVec> {
            let family = IntGaugeVec::new(Opts::new(name, help), &["queue", "kind"])?;
            registry.register(Box::new(family.clone()))?;
            Ok(family)
        };
        let one = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let gauge = IntGauge::with_opts(Opts::new(name, help))?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        Ok(QueueGauges {
            messages: vec(
                "celeriac_broker_queue_messages",
                "Messages ready in the queue, as the broker counts them.",
            )?,
            unacked: vec(
                "celeriac_broker_queue_unacked",
                "Messages delivered and not yet acknowledged.",
            )?,
            consumers: vec("celeriac_broker_queue_consumers", "Consumers of the queue.")?,
            queues: one(
                "celeriac_broker_queues",
                "Work and dead-letter queues of the namespace.",
            )?,
            up: one(
                "celeriac_exporter_up",
                "1 when the last read of the management API succeeded.",
            )?,
            registry,
            last_error: Mutex::new(Some("no read yet".to_owned())),
            token,
        })
    }

    /// Replaces the gauges with `depths`.
    fn set(&self, depths: &[QueueDepth]) {
        self.messages.reset();
        self.unacked.reset();
        self.consumers.reset();
        for d in depths {
            let labels = [d.queue.as_str(), d.kind.as_str()];
            let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.messages.with_label_values(&labels).set(clamp(d.ready));
            self.unacked
                .with_label_values(&labels)
                .set(clamp(d.unacked));
            self.consumers
                .with_label_values(&labels)
                .set(clamp(d.consumers));
        }
        self.queues
            .set(i64::try_from(depths.len()).unwrap_or(i64::MAX));
        self.up.set(1);
        *self.error() = None;
    }

    fn failed(&self, reason: String) {
        self.up.set(0);
        *self.error() = Some(reason);
    }

    fn error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Endpoints for QueueGauges {
    fn render_metrics(&self) -> prometheus::Result<String> {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather())
    }

    fn readiness(&self) -> Result<(), String> {
        match &*self.error() {
            None => Ok(()),
            Some(reason) => Err(format!("cannot read the queues: {reason}")),
        }
    }

    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// Runs the exporter until SIGTERM or Ctrl-C: exit 0 after a clean stop,
/// 1 when the address cannot be bound, 2 for invalid options.
pub async fn run(global: &Global, args: &ExporterArgs) -> ExitCode {
    crate::init_logs();
    let topology = match Topology::new(global.namespace.clone()) {
        Ok(topology) => topology,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let management = match Management::for_amqp(&global.amqp_addr, args.management_url.as_deref()) {
        Ok(management) => management.with_tls(global.tls.broker()),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
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
    let gauges = match QueueGauges::new(token) {
        Ok(gauges) => Arc::new(gauges),
        Err(e) => {
            eprintln!("error: cannot set up the metrics: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "error: cannot serve metrics on {} (choose another --listen): {e}",
                args.listen
            );
            return ExitCode::from(1);
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(celeriac_consumer::http::serve(
        listener,
        gauges.clone(),
        stop.clone(),
    ));
    tracing::info!(
        listen = %args.listen,
        management = %management.base,
        namespace = %global.namespace,
        "exporting the namespace's queues"
    );
    let mut tick = tokio::time::interval(args.interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = crate::beat::shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        match management.queue_depths(&topology).await {
            Ok(depths) => gauges.set(&depths),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queues from the management API");
                gauges.failed(e.to_string());
            }
        }
    }
    stop.cancel();
    ExitCode::SUCCESS
}

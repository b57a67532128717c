//! `celeriac-bench`: end-to-end throughput of celeriac against a raw lapin
//! loop with the same safety settings, on the same broker, in the same run.
//!
//! Each run measures, each in a fresh namespace that is deleted afterwards:
//!
//! - **raw lapin**: one connection publishes N messages to a durable quorum
//!   queue (the arguments of a celeriac work queue) through a direct
//!   exchange, persistent and mandatory, with publisher confirms pipelined
//!   over a sliding window of 2048 (as `Producer::send_batch` does); another
//!   connection, consuming since before the first publish with the same
//!   per-consumer prefetch, acks with `multiple=true` once per burst of
//!   deliveries. Bodies and properties are those celeriac sends for the
//!   same task (`celeriac_schema::encode`, `envelope_properties`), so the
//!   bytes on the wire match. Throughput = N / (first publish .. last ack).
//! - **celeriac**: a `celeriac-bench-worker` process (its RSS is its own)
//!   consumes while `Producer::send_batch` sends N `bench.noop` tasks in
//!   chunks. Throughput = N / (first publish .. the worker ran the N-th
//!   task); the worker acks each finished prefix at once, and after it
//!   exits the bench checks that its queue is empty and nothing was
//!   dead-lettered. Latency is from just before the `send_batch` call that
//!   carries a task to the start of its handler. The worker's peak RSS is
//!   its VmHWM, read while it runs and before it is stopped with SIGTERM.
//!
//! - **celeriac signed** (with `--signing`): the same with signed
//!   envelopes: the producer signs every task with a fresh HMAC-SHA256 key,
//!   the worker (`--signing-keys`) verifies every delivery before decoding
//!   it. Reported under `with_signing`, with its ratio to plain celeriac.
//!
//! With an `amqps://` broker URL (and `--tls-ca`, `--tls-cert`, `--tls-key`
//! as the worker takes them) every connection, raw lapin's and the
//! worker's alike, goes over TLS: run it once plain and once over TLS to
//! measure what TLS costs.
//!
//! One JSON object goes to stdout: the medians at the top level and every
//! run under `runs`. Progress goes to stderr. Exit codes: 0 ok, 1 a run
//! failed (timeout, broker unreachable, lost or duplicated tasks), 2 usage.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use celeriac_consumer::cli::TlsArgs;
use celeriac_producer::tls::TlsOptions;
use celeriac_producer::topology::field_table;
use celeriac_producer::{publish, Producer, SendOptions};
use celeriac_schema::store::StoreSettings;
use celeriac_schema::topology::DELAY_LEVELS;
use celeriac_schema::{encode, Envelope, Task, Topology};
use celeriac_tests::test_tasks::{unix_micros, BenchNoop, NoopInput};
use clap::Parser;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Confirms in flight at once, as in `Producer::send_batch`.
const CONFIRM_WINDOW: usize = 2048;
/// How long connecting to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle worker runs before its resident memory is read.
const IDLE_WAIT: Duration = Duration::from_secs(2);
/// The name of the worker binary, beside this one.
const WORKER_BIN: &str = "celeriac-bench-worker";
/// Linux `USER_HZ`: /proc CPU times are in these ticks.
const TICKS_PER_SECOND: f64 = 100.0;

/// Measures celeriac's end-to-end throughput against a raw lapin loop with
/// the same safety settings, on the broker at AMQP_ADDR.
#[derive(Debug, Parser)]
#[command(name = "celeriac-bench", version, about)]
struct Args {
    /// Broker URL.
    #[arg(
        long,
        env = "AMQP_ADDR",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_addr: String,

    /// Messages (raw) and tasks (celeriac) per measurement.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    tasks: u64,

    /// Runs; each measures both, and the top level reports medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,

    /// The worker's concurrency.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,

    /// Per-consumer prefetch, for both the raw consumer and the worker
    /// (default 256: from there on the consumer keeps up with the producer
    /// on a 2-core machine; at 128 tasks wait about a second).
    #[arg(long)]
    prefetch: Option<u16>,

    /// Tasks per `send_batch` call.
    #[arg(long, default_value_t = 5_000)]
    chunk: usize,

    /// Longest one measurement may take before the run fails (e.g. 90s, 5m).
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Pause after each measurement, so the broker's clean-up does not land
    /// in the next one.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    settle: Duration,

    /// The Redis state store for the third measurement (celeriac with
    /// results, task states and idempotency keys on); without it only raw
    /// lapin and plain celeriac are measured.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,

    /// The bench worker binary (default: `celeriac-bench-worker` beside this
    /// executable).
    #[arg(long)]
    worker_bin: Option<PathBuf>,

    /// Also measure celeriac with signed envelopes in every run: the
    /// producer signs with a fresh HMAC key, the worker requires and
    /// verifies signatures (`--signing-keys`).
    #[arg(long)]
    signing: bool,
    /// TLS for an amqps:// broker and a rediss:// store, as the worker's.
    #[command(flatten)]
    tls: TlsArgs,
}

/// Prefetch of both consumers unless `--prefetch` says otherwise.
const DEFAULT_PREFETCH: u16 = 256;

impl Args {
    fn prefetch(&self) -> u16 {
        self.prefetch.unwrap_or(DEFAULT_PREFETCH).max(1)
    }

    /// The `--tls-*` and `--redis-tls-*` flags given, for the worker.
    fn tls_flags(&self) -> Vec<String> {
        let t = &self.tls;
        [
            ("--tls-ca", &t.tls_ca),
            ("--tls-cert", &t.tls_cert),
            ("--tls-key", &t.tls_key),
            ("--redis-tls-ca", &t.redis_tls_ca),
            ("--redis-tls-cert", &t.redis_tls_cert),
            ("--redis-tls-key", &t.redis_tls_key),
        ]
        .into_iter()
        .filter_map(|(flag, path)| Some([flag.to_owned(), path.as_ref()?.display().to_string()]))
        .flatten()
        .collect()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    celeriac_tests::print_report("celeriac-bench", 1, None, bench(args))
}

async fn bench(args: Args) -> Result<Report> {
    let worker_bin = locate_worker(args.worker_bin.as_deref())?;
    let probe = connect(&args.amqp_addr, &args.tls.broker(), "probe")
        .await
        .map_err(|e| anyhow!("{e:#}; {}", celeriac_tests::HOW_TO_PROVIDE_A_BROKER))?;
    let _ = probe.close(200, "probe done".into()).await;
    let broker_version = broker_version(&args.amqp_addr);
    let broker_pid = local_broker_pid(&args.amqp_addr);
    let body_bytes = encode(&noop_envelope()?)?.len();
    eprintln!(
        "celeriac-bench: {} tasks x {} runs, prefetch {}, concurrency {}, chunk {}, body {} bytes, broker {}",
        args.tasks,
        args.runs,
        args.prefetch(),
        args.concurrency,
        args.chunk,
        body_bytes,
        broker_version.as_deref().unwrap_or("version unknown"),
    );
    match broker_pid {
        Some(pid) => eprintln!("celeriac-bench: the broker is pid {pid} on this machine"),
        None => {
            eprintln!("celeriac-bench: the broker is not on this machine; no broker CPU figures")
        }
    }

    let keys = args.signing.then(bench_key_file).transpose()?;
    let mut runs = Vec::new();
    let mut store_runs: Vec<Option<(CeleriacResult, f64)>> = Vec::new();
    let mut signed_runs: Vec<Option<(CeleriacResult, f64)>> = Vec::new();
    for run in 1..=args.runs {
        // Alternate the order so that neither side always follows the
        // other's clean-up.
        let store_url = args.redis_url.as_deref();
        let phase = |store, keys| celeriac_phase(&args, &worker_bin, broker_pid, run, store, keys);
        let (raw, celeriac, stored, signed) = if run % 2 == 1 {
            let raw = raw_phase(&args, broker_pid, run).await?;
            let celeriac = phase(None, None).await?;
            let signed = match &keys {
                Some(path) => Some(phase(None, Some(path.as_path())).await?),
                None => None,
            };
            let stored = match store_url {
                Some(url) => Some(phase(Some(url), None).await?),
                None => None,
            };
            (raw, celeriac, stored, signed)
        } else {
            let stored = match store_url {
                Some(url) => Some(phase(Some(url), None).await?),
                None => None,
            };
            let signed = match &keys {
                Some(path) => Some(phase(None, Some(path.as_path())).await?),
                None => None,
            };
            let celeriac = phase(None, None).await?;
            let raw = raw_phase(&args, broker_pid, run).await?;
            (raw, celeriac, stored, signed)
        };
        let signed_ratio = signed
            .as_ref()
            .map(|s| s.tasks_per_sec() / raw.msgs_per_sec());
        if let Some(s) = &signed {
            eprintln!(
                "run {run}/{}: signed {:.0} tasks/s, {:.3} of plain celeriac",
                args.runs,
                s.tasks_per_sec(),
                s.tasks_per_sec() / celeriac.tasks_per_sec()
            );
        }
        signed_runs.push(signed.zip(signed_ratio));
        let ratio = celeriac.tasks_per_sec() / raw.msgs_per_sec();
        let store_ratio = stored
            .as_ref()
            .map(|s| s.tasks_per_sec() / raw.msgs_per_sec());
        eprintln!(
            "run {run}/{}: ratio {ratio:.3}, with the store {}",
            args.runs,
            store_ratio.map_or("not measured".to_owned(), |r| format!("{r:.3}"))
        );
        runs.push((raw, celeriac, ratio));
        store_runs.push(stored.zip(store_ratio));
    }

    if let Some(path) = &keys {
        let _ = std::fs::remove_file(path);
    }
    let med =
        |f: &dyn Fn(&(RawResult, CeleriacResult, f64)) -> f64| median(runs.iter().map(f).collect());
    Ok(Report {
        date: iso_date(SystemTime::now()),
        machine: machine(),
        broker_version,
        tasks: args.tasks,
        raw_lapin: RawFigures {
            msgs_per_sec: round(med(&|r| r.0.msgs_per_sec()), 1),
            seconds: round(med(&|r| r.0.seconds), 3),
            publish_seconds: None,
            acks_sent: None,
            cpu_seconds: None,
        },
        celeriac: CeleriacFigures {
            tasks_per_sec: round(med(&|r| r.1.tasks_per_sec()), 1),
            seconds: round(med(&|r| r.1.seconds), 3),
            latency_ms: Latency {
                p50: round(med(&|r| r.1.p50_us as f64 / 1000.0), 3),
                p99: round(med(&|r| r.1.p99_us as f64 / 1000.0), 3),
                max: None,
            },
            worker_peak_rss_mib: round(med(&|r| mib(r.1.peak_rss_kib)), 2),
            worker_idle_rss_mib: round(med(&|r| mib(r.1.idle_rss_kib)), 2),
            publish_seconds: None,
            cpu_seconds: None,
        },
        ratio: round(med(&|r| r.2), 3),
        with_signing: variant_figures(&signed_runs, &runs),
        with_store: variant_figures(&store_runs, &runs),
        settings: Settings {
            runs: args.runs,
            prefetch: args.prefetch(),
            concurrency: args.concurrency,
            chunk: args.chunk,
            confirm_window: CONFIRM_WINDOW,
            body_bytes,
            queue: "durable quorum queue with the arguments of a celeriac work queue",
            messages: "persistent, mandatory, publisher confirms pipelined",
            acks: "manual, multiple=true over contiguous finished deliveries",
        },
        runs: runs
            .iter()
            .zip(1..)
            .map(|((raw, celeriac, ratio), run)| RunFigures {
                run,
                order: if run % 2 == 1 {
                    "raw lapin, then celeriac"
                } else {
                    "celeriac, then raw lapin"
                },
                raw_lapin: raw.figures(),
                celeriac: celeriac.figures(),
                ratio: round(*ratio, 3),
            })
            .collect(),
    })
}

/// The medians of a variant of celeriac (with the store, or signed) over
/// the runs that measured it, beside raw lapin and plain celeriac.
fn variant_figures(
    variant: &[Option<(CeleriacResult, f64)>],
    runs: &[(RawResult, CeleriacResult, f64)],
) -> Option<StoreFigures> {
    if variant.is_empty() || !variant.iter().all(Option::is_some) {
        return None;
    }
    let all: Vec<&(CeleriacResult, f64)> = variant.iter().flatten().collect();
    let med =
        |f: &dyn Fn(&(CeleriacResult, f64)) -> f64| median(all.iter().map(|r| f(r)).collect());
    Some(StoreFigures {
        tasks_per_sec: round(med(&|r| r.0.tasks_per_sec()), 1),
        seconds: round(med(&|r| r.0.seconds), 3),
        latency_ms: Latency {
            p50: round(med(&|r| r.0.p50_us as f64 / 1000.0), 3),
            p99: round(med(&|r| r.0.p99_us as f64 / 1000.0), 3),
            max: None,
        },
        worker_peak_rss_mib: round(med(&|r| mib(r.0.peak_rss_kib)), 2),
        ratio_to_raw: round(med(&|r| r.1), 3),
        ratio_to_plain: round(
            median(
                all.iter()
                    .zip(runs)
                    .map(|(s, plain)| s.0.tasks_per_sec() / plain.1.tasks_per_sec())
                    .collect(),
            ),
            3,
        ),
        runs: all.iter().map(|r| r.0.figures()).collect(),
    })
}

/// The JSON report: medians at the top level, then every run.
#[derive(Debug, Serialize)]
struct Report {
    date: String,
    machine: Machine,
    broker_version: Option<String>,
    tasks: u64,
    raw_lapin: RawFigures,
    celeriac: CeleriacFigures,
    /// celeriac tasks/s over raw lapin msgs/s (median of the runs' ratios).
    ratio: f64,
    /// celeriac with the Redis store: results, task states, execution
    /// idempotency keys and run leases (when a Redis URL was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    with_store: Option<StoreFigures>,
    /// celeriac with signed envelopes (with `--signing`): the producer
    /// signs, the worker verifies every delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    with_signing: Option<StoreFigures>,
    settings: Settings,
    runs: Vec<RunFigures>,
}

#[derive(Debug, Serialize)]
struct StoreFigures {
    tasks_per_sec: f64,
    seconds: f64,
    latency_ms: Latency,
    worker_peak_rss_mib: f64,
    /// Over raw lapin in the same run (median).
    ratio_to_raw: f64,
    /// Over plain celeriac in the same run (median).
    ratio_to_plain: f64,
    runs: Vec<CeleriacFigures>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpu: Option<String>,
    cores: usize,
    memory_gib: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Settings {
    runs: u64,
    prefetch: u16,
    concurrency: usize,
    chunk: usize,
    confirm_window: usize,
    body_bytes: usize,
    queue: &'static str,
    messages: &'static str,
    acks: &'static str,
}

#[derive(Debug, Serialize)]
struct RunFigures {
    run: u64,
    order: &'static str,
    raw_lapin: RawFigures,
    celeriac: CeleriacFigures,
    ratio: f64,
}

#[derive(Debug, Serialize)]
struct RawFigures {
    msgs_per_sec: f64,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acks_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_seconds: Option<CpuSeconds>,
}

#[derive(Debug, Serialize)]
struct CeleriacFigures {
    tasks_per_sec: f64,
    seconds: f64,
    latency_ms: Latency,
    worker_peak_rss_mib: f64,
    worker_idle_rss_mib: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_seconds: Option<CpuSeconds>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<f64>,
}

/// CPU seconds spent during one measurement: by each process (the broker's
/// only when it runs on this machine), by the whole machine, and by
/// everything else on it (other load skews a run).
#[derive(Debug, Clone, Copy, Serialize)]
struct CpuSeconds {
    broker: Option<f64>,
    bench: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker: Option<f64>,
    machine: Option<f64>,
    other: Option<f64>,
    iowait: Option<f64>,
}

// ---------------------------------------------------------------------------
// Raw lapin

struct RawResult {
    tasks: u64,
    seconds: f64,
    publish_seconds: f64,
    acks: u64,
    cpu: CpuSeconds,
}

impl RawResult {
    fn msgs_per_sec(&self) -> f64 {
        self.tasks as f64 / self.seconds
    }

    fn figures(&self) -> RawFigures {
        RawFigures {
            msgs_per_sec: round(self.msgs_per_sec(), 1),
            seconds: round(self.seconds, 3),
            publish_seconds: Some(round(self.publish_seconds, 3)),
            acks_sent: Some(self.acks),
            cpu_seconds: Some(self.cpu),
        }
    }
}

async fn raw_phase(args: &Args, broker_pid: Option<u32>, run: u64) -> Result<RawResult> {
    let topology = Topology::new(namespace("raw"))?;
    eprintln!(
        "run {run}/{}: raw lapin in {}",
        args.runs,
        topology.namespace()
    );
    let result = tokio::time::timeout(args.timeout, raw_measure(args, &topology, broker_pid))
        .await
        .map_err(|_| anyhow!("raw lapin: not done within {:?}", args.timeout))
        .and_then(|r| r);
    cleanup(
        &args.amqp_addr,
        &args.tls.broker(),
        &[topology.work_queue("raw")],
        &[topology.work_exchange()],
    )
    .await;
    let result = result.context("raw lapin")?;
    eprintln!(
        "run {run}/{}: raw lapin: {} msgs in {:.3} s = {:.0} msgs/s (published in {:.3} s, {} acks)",
        args.runs,
        result.tasks,
        result.seconds,
        result.msgs_per_sec(),
        result.publish_seconds,
        result.acks
    );
    tokio::time::sleep(args.settle).await;
    Ok(result)
}

async fn raw_measure(
    args: &Args,
    topology: &Topology,
    broker_pid: Option<u32>,
) -> Result<RawResult> {
    let n = args.tasks;
    let queue = topology.work_queue("raw");
    let exchange = topology.work_exchange();
    let consuming = connect(&args.amqp_addr, &args.tls.broker(), "raw consumer").await?;
    let publishing = connect(&args.amqp_addr, &args.tls.broker(), "raw publisher").await?;

    let channel = consuming.create_channel().await?;
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            field_table(&topology.work_queue_arguments("raw")),
        )
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "raw".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .basic_qos(args.prefetch(), BasicQosOptions { global: false })
        .await?;
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "celeriac-bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let publisher = publishing.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    let cpu_before = CpuSnapshot::take(broker_pid, None);
    let start = Instant::now();
    let consumed = tokio::spawn(raw_consume(channel.clone(), consumer, n));
    let mut pending = VecDeque::with_capacity(CONFIRM_WINDOW);
    for _ in 0..n {
        let env = noop_envelope()?;
        let body = encode(&env)?;
        let props = publish::envelope_properties(&env, publish::envelope_headers(&env, "raw"));
        let confirm = publisher
            .basic_publish(
                exchange.as_str().into(),
                "raw".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                props,
            )
            .await?;
        pending.push_back(confirm);
        if pending.len() >= CONFIRM_WINDOW {
            if let Some(confirm) = pending.pop_front() {
                check_confirm(confirm.await?)?;
            }
        }
    }
    while let Some(confirm) = pending.pop_front() {
        check_confirm(confirm.await?)?;
    }
    let published = start.elapsed();
    let (end, acks) = consumed.await.context("the raw consumer panicked")??;
    let cpu = CpuSnapshot::take(broker_pid, None).since(&cpu_before);
    let _ = publishing.close(200, "done".into()).await;
    let _ = consuming.close(200, "done".into()).await;
    Ok(RawResult {
        tasks: n,
        seconds: end.duration_since(start).as_secs_f64(),
        publish_seconds: published.as_secs_f64(),
        acks,
        cpu,
    })
}

fn check_confirm(confirmation: Confirmation) -> Result<()> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        other => bail!("the broker did not take a message: {other:?}"),
    }
}

/// Consumes `n` deliveries, acking each burst that arrived together with
/// one `multiple` ack; returns when the last ack is written and how many
/// acks were sent.
async fn raw_consume(channel: Channel, mut consumer: Consumer, n: u64) -> Result<(Instant, u64)> {
    let mut received = 0u64;
    let mut acks = 0u64;
    while received < n {
        let delivery = consumer
            .next()
            .await
            .ok_or_else(|| anyhow!("the broker cancelled the raw consumer"))??;
        let mut last = delivery.delivery_tag;
        received += 1;
        while received < n {
            match consumer.next().now_or_never() {
                Some(Some(Ok(delivery))) => {
                    last = delivery.delivery_tag;
                    received += 1;
                }
                Some(Some(Err(e))) => return Err(e.into()),
                Some(None) => bail!("the broker cancelled the raw consumer"),
                None => break,
            }
        }
        channel
            .basic_ack(last, BasicAckOptions { multiple: true })
            .await?;
        acks += 1;
    }
    Ok((Instant::now(), acks))
}

// ---------------------------------------------------------------------------
// celeriac

struct CeleriacResult {
    tasks: u64,
    seconds: f64,
    publish_seconds: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    peak_rss_kib: u64,
    idle_rss_kib: u64,
    cpu: CpuSeconds,
}

impl CeleriacResult {
    fn tasks_per_sec(&self) -> f64 {
        self.tasks as f64 / self.seconds
    }

    fn figures(&self) -> CeleriacFigures {
        CeleriacFigures {
            tasks_per_sec: round(self.tasks_per_sec(), 1),
            seconds: round(self.seconds, 3),
            latency_ms: Latency {
                p50: round(self.p50_us as f64 / 1000.0, 3),
                p99: round(self.p99_us as f64 / 1000.0, 3),
                max: Some(round(self.max_us as f64 / 1000.0, 3)),
            },
            worker_peak_rss_mib: round(mib(self.peak_rss_kib), 2),
            worker_idle_rss_mib: round(mib(self.idle_rss_kib), 2),
            publish_seconds: Some(round(self.publish_seconds, 3)),
            cpu_seconds: Some(self.cpu),
        }
    }
}

async fn celeriac_phase(
    args: &Args,
    worker_bin: &Path,
    broker_pid: Option<u32>,
    run: u64,
    store_url: Option<&str>,
    signing_keys: Option<&Path>,
) -> Result<CeleriacResult> {
    let kind = match (store_url, signing_keys) {
        (Some(_), _) => "celeriac-store",
        (None, Some(_)) => "celeriac-signed",
        (None, None) => "celeriac",
    };
    let topology = Topology::new(namespace(kind))?;
    eprintln!(
        "run {run}/{}: {kind} in {}",
        args.runs,
        topology.namespace()
    );
    let result = tokio::time::timeout(
        args.timeout,
        celeriac_measure(
            args,
            &topology,
            worker_bin,
            broker_pid,
            store_url,
            signing_keys,
        ),
    )
    .await
    .map_err(|_| anyhow!("celeriac: not done within {:?}", args.timeout))
    .and_then(|r| r);
    let mut queues = vec![
        topology.work_queue("default"),
        topology.dead_letter_queue("default"),
    ];
    let mut exchanges = vec![
        topology.work_exchange(),
        topology.dead_letter_exchange(),
        topology.delay_delivery_exchange(),
        topology.events_exchange(),
        topology.control_exchange(),
    ];
    for level in 0..DELAY_LEVELS {
        queues.push(topology.delay_queue(level));
        exchanges.push(topology.delay_exchange(level));
    }
    cleanup(&args.amqp_addr, &args.tls.broker(), &queues, &exchanges).await;
    if let Some(url) = store_url {
        celeriac_tests::delete_redis_keys(url, topology.namespace()).await;
    }
    let result = result.context(kind)?;
    eprintln!(
        "run {run}/{}: {kind}: {} tasks in {:.3} s = {:.0} tasks/s (published in {:.3} s), \
         latency p50 {:.1} ms p99 {:.1} ms, worker RSS idle {:.1} MiB peak {:.1} MiB",
        args.runs,
        result.tasks,
        result.seconds,
        result.tasks_per_sec(),
        result.publish_seconds,
        result.p50_us as f64 / 1000.0,
        result.p99_us as f64 / 1000.0,
        result.idle_rss_kib as f64 / 1024.0,
        result.peak_rss_kib as f64 / 1024.0,
    );
    tokio::time::sleep(args.settle).await;
    Ok(result)
}

/// What the bench worker prints when it stops.
#[derive(Debug, Deserialize)]
struct WorkerSummary {
    count: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

async fn celeriac_measure(
    args: &Args,
    topology: &Topology,
    worker_bin: &Path,
    broker_pid: Option<u32>,
    store_url: Option<&str>,
    signing_keys: Option<&Path>,
) -> Result<CeleriacResult> {
    let n = args.tasks;
    let ns = topology.namespace();
    // Declares the namespace, so the worker can be watched for readiness.
    let mut producer = Producer::builder(&args.amqp_addr)
        .tls(args.tls.broker())
        .namespace(ns);
    if let Some(url) = store_url {
        let tls = args.tls.redis();
        let store = celeriac_producer::RedisStore::connect_with_tls(
            url,
            ns,
            StoreSettings::default(),
            &tls,
        )
        .await
        .map_err(|e| anyhow!("{e}; {}", celeriac_tests::HOW_TO_PROVIDE_REDIS))?;
        producer = producer.store(std::sync::Arc::new(store));
    }
    if let Some(path) = signing_keys {
        producer = producer.signing(celeriac_producer::signing::load_keyring(path)?);
    }
    let producer = producer.connect().await?;
    let admin = connect(&args.amqp_addr, &args.tls.broker(), "watch").await?;
    let channel = admin.create_channel().await?;
    let work_queue = topology.work_queue("default");

    let mut command = tokio::process::Command::new(worker_bin);
    command
        .args(["--namespace", ns, "--queue", "default", "--grace", "10s"])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(["--prefetch", &args.prefetch().to_string()])
        .args(args.tls_flags())
        .env("AMQP_ADDR", &args.amqp_addr)
        .env_remove("REDIS_URL")
        .env("CELERIAC_METRICS_ADDR", "127.0.0.1:0")
        .env("CELERIAC_BENCH_TASKS", n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(url) = store_url {
        command.args(["--redis-url", url]);
    }
    if let Some(path) = signing_keys {
        command.arg("--signing-keys").arg(path);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    let mut worker = command
        .spawn()
        .with_context(|| format!("starting {}", worker_bin.display()))?;
    let launched = Instant::now();
    let pid = worker
        .id()
        .ok_or_else(|| anyhow!("the worker exited at once"))?;
    let stdout = worker
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no pipe from the worker"))?;
    let mut lines = BufReader::new(stdout).lines();

    // Ready once its consumer is on the queue; idle memory after IDLE_WAIT.
    loop {
        if let Some(status) = worker.try_wait()? {
            bail!("the worker exited before consuming ({status})");
        }
        let q = channel
            .queue_declare(
                work_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        if q.consumer_count() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(IDLE_WAIT.saturating_sub(launched.elapsed())).await;
    let idle_rss_kib = proc_status_kib(pid, "VmRSS").unwrap_or(0);

    let cpu_before = CpuSnapshot::take(broker_pid, Some(pid));
    let start_us = unix_micros();
    let start = Instant::now();
    let sending = {
        let producer = producer.clone();
        let chunk = args.chunk.max(1) as u64;
        tokio::spawn(async move {
            let options = SendOptions::new();
            let mut sent = 0u64;
            while sent < n {
                let size = chunk.min(n - sent);
                producer
                    .send_batch::<BenchNoop>(
                        (0..size).map(|_| NoopInput { t: unix_micros() }),
                        &options,
                    )
                    .await?;
                sent += size;
            }
            Ok::<_, celeriac_producer::Error>(Instant::now())
        })
    };

    let mut peak_rss_kib = 0;
    let mut sample = tokio::time::interval(Duration::from_millis(100));
    let done_us = loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => {
                    if let Some(at) = line.strip_prefix("done ") {
                        break at.trim().parse::<u64>().context("the worker's done line")?;
                    }
                }
                None => bail!("the worker closed its output before running every task"),
            },
            status = worker.wait() => bail!("the worker exited during the run ({})", status?),
            _ = sample.tick() => {
                peak_rss_kib = peak_rss_kib.max(proc_status_kib(pid, "VmHWM").unwrap_or(0));
            }
        }
    };
    peak_rss_kib = peak_rss_kib.max(proc_status_kib(pid, "VmHWM").unwrap_or(0));
    let cpu = CpuSnapshot::take(broker_pid, Some(pid)).since(&cpu_before);
    let published = sending
        .await
        .context("the producer panicked")?
        .context("sending tasks")?;

    // Stop it and read its summary; closing its channel hands back anything
    // unacked, which the queue check below would then see.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -TERM {pid} failed");
    }
    let mut summary = None;
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with('{') {
                summary = Some(serde_json::from_str::<WorkerSummary>(&line)?);
            }
        }
        worker.wait().await?;
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match drained {
        Ok(result) => result?,
        Err(_) => {
            let _ = worker.kill().await;
            bail!("the worker did not stop within 30 s of SIGTERM");
        }
    }
    let summary = summary.ok_or_else(|| anyhow!("the worker printed no summary"))?;
    if summary.count != n {
        bail!(
            "the worker ran {} tasks for {n} sent: some ran twice",
            summary.count
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for queue in [work_queue.clone(), topology.dead_letter_queue("default")] {
        let left = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?
            .message_count();
        if left != 0 {
            bail!("{left} messages left in {queue} after the worker stopped");
        }
    }
    let _ = admin.close(200, "done".into()).await;

    Ok(CeleriacResult {
        tasks: n,
        seconds: done_us.saturating_sub(start_us) as f64 / 1e6,
        publish_seconds: published.duration_since(start).as_secs_f64(),
        p50_us: summary.p50_us,
        p99_us: summary.p99_us,
        max_us: summary.max_us,
        peak_rss_kib,
        idle_rss_kib,
        cpu,
    })
}

/// A key file with one fresh key, for the signed measurement.
fn bench_key_file() -> Result<PathBuf> {
    use base64::Engine;
    let secret: Vec<u8> = uuid::Uuid::now_v7()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::now_v7().as_bytes())
        .copied()
        .collect();
    let path = std::env::temp_dir().join(format!("celeriac-bench-{}.keys", std::process::id()));
    let line = format!(
        "bench {}\n",
        base64::engine::general_purpose::STANDARD.encode(secret)
    );
    std::fs::write(&path, line).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn locate_worker(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .ok_or_else(|| anyhow!("this executable has no directory"))?
            .join(WORKER_BIN),
    };
    if !path.is_file() {
        bail!(
            "the bench worker {} does not exist: build it with \
             `cargo build --release -p celeriac-tests`, or pass --worker-bin",
            path.display()
        );
    }
    Ok(path)
}

// ---------------------------------------------------------------------------
// Broker housekeeping

/// Connects within [`CONNECT_TIMEOUT`] (a broker that accepts TCP but
/// never answers would otherwise hang the bench).
async fn connect(url: &str, tls: &TlsOptions, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("celeriac-bench {name}").into());
    let redacted = celeriac_producer::redact_url(url);
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        celeriac_producer::tls::connect(url, props, tls),
    )
    .await
    .map_err(|_| anyhow!("no answer from the broker at {redacted} within {CONNECT_TIMEOUT:?}"))?
    .with_context(|| format!("cannot reach the broker at {redacted}"))
}

/// A fresh namespace: `bench-{kind}-{random}`.
fn namespace(kind: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("bench-{kind}-{}", &id[id.len() - 10..])
}

/// Deletes queues and exchanges, on a connection of its own (the measuring
/// ones may be gone after a failure); reports what it could not delete.
async fn cleanup(url: &str, tls: &TlsOptions, queues: &[String], exchanges: &[String]) {
    let work = async {
        let connection = connect(url, tls, "clean-up").await?;
        let mut channel = connection.create_channel().await?;
        let mut failed = Vec::new();
        for queue in queues {
            if !channel.status().connected() {
                channel = connection.create_channel().await?;
            }
            if let Err(e) = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
            {
                failed.push(format!("queue {queue}: {e}"));
            }
        }
        for exchange in exchanges {
            if !channel.status().connected() {
                channel = connection.create_channel().await?;
            }
            if let Err(e) = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
            {
                failed.push(format!("exchange {exchange}: {e}"));
            }
        }
        let _ = connection.close(200, "clean-up done".into()).await;
        Ok::<_, anyhow::Error>(failed)
    };
    match tokio::time::timeout(Duration::from_secs(60), work).await {
        Ok(Ok(failed)) if failed.is_empty() => {}
        Ok(Ok(failed)) => eprintln!("clean-up: could not delete {}", failed.join("; ")),
        Ok(Err(e)) => eprintln!("clean-up: {e:#}"),
        Err(_) => eprintln!("clean-up: not done within 60 s"),
    }
}

/// The broker's version from its `connection.start` server properties.
fn broker_version(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let uri: lapin::uri::AMQPUri = url.parse().ok()?;
    if uri.scheme != lapin::uri::AMQPScheme::AMQP {
        return None;
    }
    let timeout = Duration::from_secs(5);
    let address = std::net::ToSocketAddrs::to_socket_addrs(&(
        uri.authority.host.as_str(),
        uri.authority.port,
    ))
    .ok()?
    .next()?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"AMQP\x00\x00\x09\x01").ok()?;
    let mut header = [0u8; 7];
    stream.read_exact(&mut header).ok()?;
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
    if size > 1 << 20 {
        return None;
    }
    let mut frame = vec![0u8; size];
    stream.read_exact(&mut frame).ok()?;
    let key = b"\x07versionS";
    let at = frame.windows(key.len()).position(|w| w == key)? + key.len();
    let len = u32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?) as usize;
    let version = frame.get(at + 4..at + 4 + len)?;
    Some(String::from_utf8_lossy(version).into_owned())
}

/// The pid of the process listening on the broker's port, when the broker
/// runs on this machine (found through its listening socket, so another
/// RabbitMQ node on the same machine is not mistaken for it).
fn local_broker_pid(url: &str) -> Option<u32> {
    let uri: lapin::uri::AMQPUri = url.parse().ok()?;
    let host = uri.authority.host.as_str();
    if !matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]") {
        return None;
    }
    let port = format!(":{:04X}", uri.authority.port);
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state (0A = LISTEN), inode.
            if let (Some(local), Some(&"0A"), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            {
                if local.ends_with(&port) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
                .then_some(pid)
        })
}

// ---------------------------------------------------------------------------
// Measuring helpers

/// The envelope `Producer::send_batch` builds for one `bench.noop` task.
fn noop_envelope() -> Result<Envelope> {
    let input = celeriac_schema::to_value(&NoopInput { t: unix_micros() })?;
    Ok(Envelope::new(BenchNoop::NAME, input))
}

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| kib_field(line, field))
}

/// User plus system CPU time of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is the
    // third field, utime the 14th and stime the 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Busy and iowait CPU seconds of the whole machine, from /proc/stat.
fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already in user).
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    Some((busy / TICKS_PER_SECOND, at(4) / TICKS_PER_SECOND))
}

#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    broker: Option<f64>,
    bench: Option<f64>,
    worker: Option<f64>,
    machine: Option<(f64, f64)>,
}

impl CpuSnapshot {
    fn take(broker: Option<u32>, worker: Option<u32>) -> Self {
        CpuSnapshot {
            broker: broker.and_then(|pid| cpu_seconds(&pid.to_string())),
            bench: cpu_seconds("self"),
            worker: worker.and_then(|pid| cpu_seconds(&pid.to_string())),
            machine: machine_cpu_seconds(),
        }
    }

    fn since(&self, before: &CpuSnapshot) -> CpuSeconds {
        let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        let broker = diff(self.broker, before.broker);
        let bench = diff(self.bench, before.bench);
        let worker = diff(self.worker, before.worker);
        let machine = diff(self.machine.map(|m| m.0), before.machine.map(|m| m.0));
        let iowait = diff(self.machine.map(|m| m.1), before.machine.map(|m| m.1));
        let other = (|| Some(machine? - broker? - bench? - worker.unwrap_or(0.0)))();
        let r = |v: Option<f64>| v.map(|v| round(v, 2));
        CpuSeconds {
            broker: r(broker),
            bench: r(bench),
            worker: r(worker),
            machine: r(machine),
            other: r(other.map(|o| o.max(0.0))),
            iowait: r(iowait),
        }
    }
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_owned())
    });
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| kib_field(l, "MemTotal")));
    Machine {
        cpu,
        cores,
        memory_gib: memory_kib.map(|k| round(mib(k) / 1024.0, 1)),
    }
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .strip_prefix(':')?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC.
fn iso_date(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(iso_date(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661);
        assert_eq!(iso_date(leap), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}

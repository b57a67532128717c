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
//! - **the best raw loop** (with `--best` or `--ablation`): the raw loop
//!   with the same safety (durable quorum queue, persistent messages,
//!   publisher confirms, manual acks) and the same body, but none of
//!   celeriac's extras: a plain quorum queue, no mandatory flag, no
//!   headers, a confirm window of 8192, `multiple` acks. Reported as
//!   `raw_best` (with its `config` and `ratio_to_like_for_like`), and
//!   celeriac against it as `ratio_to_best` (top level, each run, and
//!   `with_store` / `with_signing`).
//! - **ablation** (with `--ablation`): the like-for-like raw loop with one
//!   ingredient changed at a time: queue arguments (delivery limit only;
//!   dead-lettering and reject-publish only; none), mandatory off, no
//!   headers, body (zeros of the same length; 16 bytes), confirm window
//!   (256; 8192), one ack per message. Reported as `raw_ablation`:
//!   `[{ingredient, setting, msgs_per_sec, ratio_to_like_for_like}]`,
//!   medians, and per run with seconds and CPU. In runs where raw lapin
//!   goes first, the variants come first and the like-for-like loop last,
//!   so that it always sits next to celeriac.
//!
//! - **paced** (with `--paced RATE,...` and `--paced-seconds S`, after the
//!   runs): for each rate, the like-for-like raw loop and then celeriac
//!   (a running bench worker) get RATE x S messages on a token schedule (a
//!   1 ms timer sends what is due; celeriac's tasks of one tick go out in
//!   one `send_batch` call, calls overlapping). Reported as `paced`:
//!   `[{rate, seconds, raw_lapin, celeriac}]`, each side with `sent`,
//!   `achieved_rate` (sent over first send .. last confirm), `drain_ms`
//!   (end of the schedule .. last delivery or handler start), `kept_up`
//!   (achieved at least 95% of the rate and drained within 1 s),
//!   `latency_ms` `{p50, p99, p999, max}` (raw: publish to delivery;
//!   celeriac: enqueue to handler start) and `cpu_seconds`.
//!
//! With an `amqps://` broker URL (and `--tls-ca`, `--tls-cert`, `--tls-key`
//! as the worker takes them) every connection, raw lapin's and the
//! worker's alike, goes over TLS: run it once plain and once over TLS to
//! measure what TLS costs.
//!
//! One JSON object goes to stdout: the medians at the top level and every
//! run under `runs`. Progress goes to stderr. Exit codes: 0 ok, 1 a run
//! failed (timeout, broker unreachable, lost or duplicated tasks), 2 usage.

mod ablation;
mod broker;
mod celeriac;
mod machine;
mod paced;
mod raw;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};
use celeriac_consumer::cli::TlsArgs;
use celeriac_schema::encode;
use clap::Parser;

use crate::ablation::raw_side;
use crate::broker::{broker_version, connect, local_broker_pid, local_store_pid};
use crate::celeriac::{bench_key_file, celeriac_phase, locate_worker, CeleriacResult, Side};
use crate::machine::{machine, Servers};
use crate::raw::{noop_envelope, RawConfig, CONFIRM_WINDOW};
use crate::report::{
    ablation_figures, best_figures, iso_date, median, mib, round, run_figures, variant_figures,
    CeleriacFigures, Latency, RawFigures, Report, Run, Settings,
};

/// Measures celeriac's end-to-end throughput against a raw lapin loop with
/// the same safety settings, on the broker at AMQP_ADDR.
#[derive(Debug, Parser)]
#[command(name = "celeriac-bench", version, about)]
pub struct Args {
    /// Broker URL.
    #[arg(
        long,
        env = "AMQP_ADDR",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_addr: String,

    /// Messages (raw) and tasks (celeriac) per measurement.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: u64,

    /// Runs; each measures both, and the top level reports medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,

    /// The worker's concurrency.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,

    /// Per-consumer prefetch, for both the raw consumer and the worker
    /// (default 256: from there on the consumer keeps up with the producer
    /// on a 2-core machine; at 128 tasks wait about a second).
    #[arg(long)]
    pub prefetch: Option<u16>,

    /// Tasks per `send_batch` call.
    #[arg(long, default_value_t = 5_000)]
    pub chunk: usize,

    /// Longest one measurement may take before the run fails (e.g. 90s, 5m).
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Pause after each measurement, so the broker's clean-up does not land
    /// in the next one.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub settle: Duration,

    /// The Redis state store for the third measurement (celeriac with
    /// results, task states and idempotency keys on); without it only raw
    /// lapin and plain celeriac are measured. When the Redis server runs on
    /// this machine, every measurement reports its CPU (`store`).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// The bench worker binary (default: `celeriac-bench-worker` beside this
    /// executable).
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,

    /// Also measure celeriac with signed envelopes in every run: the
    /// producer signs with a fresh HMAC key, the worker requires and
    /// verifies signatures (`--signing-keys`).
    #[arg(long)]
    pub signing: bool,
    /// Also measure the best raw loop with the same safety in every run
    /// (no queue extras, no mandatory flag, no headers, a confirm window
    /// of 8192, batched acks, celeriac's body) and report celeriac against
    /// it (`raw_best`, `ratio_to_best`).
    #[arg(long)]
    pub best: bool,

    /// Also measure, in every run, the raw loop with each ingredient
    /// changed one at a time (queue arguments, mandatory flag, headers,
    /// body, confirm window, ack batching), and the best raw loop
    /// (`raw_ablation`, `raw_best`, `ratio_to_best`). Eleven more raw
    /// measurements per run.
    #[arg(long)]
    pub ablation: bool,

    /// Paced mode: after the runs, send at each of these fixed rates
    /// (messages per second, comma-separated, e.g. 2000,5000,10000) to
    /// the raw loop and to a running worker, and report latency
    /// percentiles per rate (`paced`).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    pub paced: Vec<u64>,

    /// How long each paced measurement sends, in seconds.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    pub paced_seconds: f64,
    /// TLS for an amqps:// broker and a rediss:// store, as the worker's.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Prefetch of both consumers unless `--prefetch` says otherwise.
const DEFAULT_PREFETCH: u16 = 256;

impl Args {
    /// The per-consumer prefetch of both consumers.
    pub fn prefetch(&self) -> u16 {
        self.prefetch.unwrap_or(DEFAULT_PREFETCH).max(1)
    }

    /// The `--tls-*` and `--redis-tls-*` flags given, for the worker.
    pub fn tls_flags(&self) -> Vec<String> {
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

fn positive_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(s),
        _ => Err(format!("{value:?} is not a positive number of seconds")),
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
    let servers = Servers {
        broker: local_broker_pid(&args.amqp_addr),
        store: args.redis_url.as_deref().and_then(local_store_pid),
    };
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
    match servers.broker {
        Some(pid) => eprintln!("celeriac-bench: the broker is pid {pid} on this machine"),
        None => {
            eprintln!("celeriac-bench: the broker is not on this machine; no broker CPU figures")
        }
    }
    match (servers.store, &args.redis_url) {
        (Some(pid), _) => eprintln!("celeriac-bench: the store is pid {pid} on this machine"),
        (None, Some(_)) => {
            eprintln!("celeriac-bench: the store is not on this machine; no store CPU figures")
        }
        (None, None) => {}
    }

    let keys = args.signing.then(bench_key_file).transpose()?;
    let mut runs: Vec<Run> = Vec::new();
    let mut store_runs: Vec<Option<(CeleriacResult, f64)>> = Vec::new();
    let mut signed_runs: Vec<Option<(CeleriacResult, f64)>> = Vec::new();
    let plain = Side {
        worker_bin: &worker_bin,
        store_url: None,
        signing_keys: None,
    };
    let stored_side = args.redis_url.as_deref().map(|url| Side {
        store_url: Some(url),
        ..plain
    });
    let signed_side = keys.as_deref().map(|path| Side {
        signing_keys: Some(path),
        ..plain
    });
    for run in 1..=args.runs {
        // Alternate the order so that neither side always follows the
        // other's clean-up.
        let phase = |side| celeriac_phase(&args, side, servers, run);
        let (raw, celeriac, stored, signed) = if run % 2 == 1 {
            let raw = raw_side(&args, servers, run, true).await?;
            let celeriac = phase(plain).await?;
            let signed = match signed_side {
                Some(side) => Some(phase(side).await?),
                None => None,
            };
            let stored = match stored_side {
                Some(side) => Some(phase(side).await?),
                None => None,
            };
            (raw, celeriac, stored, signed)
        } else {
            let stored = match stored_side {
                Some(side) => Some(phase(side).await?),
                None => None,
            };
            let signed = match signed_side {
                Some(side) => Some(phase(side).await?),
                None => None,
            };
            let celeriac = phase(plain).await?;
            let raw = raw_side(&args, servers, run, false).await?;
            (raw, celeriac, stored, signed)
        };
        let raw_rate = raw.like.msgs_per_sec();
        let signed_ratio = signed.as_ref().map(|s| s.tasks_per_sec() / raw_rate);
        if let Some(s) = &signed {
            eprintln!(
                "run {run}/{}: signed {:.0} tasks/s, {:.3} of plain celeriac",
                args.runs,
                s.tasks_per_sec(),
                s.tasks_per_sec() / celeriac.tasks_per_sec()
            );
        }
        signed_runs.push(signed.zip(signed_ratio));
        let ratio = celeriac.tasks_per_sec() / raw_rate;
        let store_ratio = stored.as_ref().map(|s| s.tasks_per_sec() / raw_rate);
        let this = Run {
            raw: raw.like,
            celeriac,
            ratio,
            best: raw.best,
            ablation: raw.ablation,
        };
        eprintln!(
            "run {run}/{}: ratio {ratio:.3}, to the best raw loop {}, with the store {}",
            args.runs,
            this.ratio_to_best()
                .map_or("not measured".to_owned(), |r| format!("{r:.3}")),
            store_ratio.map_or("not measured".to_owned(), |r| format!("{r:.3}"))
        );
        runs.push(this);
        store_runs.push(stored.zip(store_ratio));
    }

    let paced = if args.paced.is_empty() {
        None
    } else {
        Some(paced::paced(&args, &worker_bin, servers).await?)
    };

    if let Some(path) = &keys {
        let _ = std::fs::remove_file(path);
    }
    let med = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let ratios_to_best: Option<Vec<f64>> = runs.iter().map(Run::ratio_to_best).collect();
    Ok(Report {
        date: iso_date(SystemTime::now()),
        machine: machine(),
        broker_version,
        tasks: args.tasks,
        raw_lapin: RawFigures {
            msgs_per_sec: round(med(&|r| r.raw.msgs_per_sec()), 1),
            seconds: round(med(&|r| r.raw.seconds), 3),
            publish_seconds: None,
            acks_sent: None,
            cpu_seconds: None,
        },
        celeriac: CeleriacFigures {
            tasks_per_sec: round(med(&|r| r.celeriac.tasks_per_sec()), 1),
            seconds: round(med(&|r| r.celeriac.seconds), 3),
            latency_ms: Latency {
                p50: round(med(&|r| r.celeriac.p50_us as f64 / 1000.0), 3),
                p99: round(med(&|r| r.celeriac.p99_us as f64 / 1000.0), 3),
                p999: None,
                max: None,
            },
            worker_peak_rss_mib: round(med(&|r| mib(r.celeriac.peak_rss_kib)), 2),
            worker_idle_rss_mib: round(med(&|r| mib(r.celeriac.idle_rss_kib)), 2),
            publish_seconds: None,
            cpu_seconds: None,
        },
        ratio: round(med(&|r| r.ratio), 3),
        raw_best: best_figures(&runs, RawConfig::BEST.figures(body_bytes)),
        ratio_to_best: ratios_to_best
            .filter(|r| !r.is_empty())
            .map(|r| round(median(r), 3)),
        raw_ablation: ablation_figures(&runs),
        with_signing: variant_figures(&signed_runs, &runs),
        with_store: variant_figures(&store_runs, &runs),
        paced,
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
            .map(|(run, n)| run_figures(run, n))
            .collect(),
    })
}

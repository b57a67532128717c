//! `celeriac-worker` with one more task for the benchmark (`celeriac-bench`):
//!
//! - `bench.noop` `{ "t": u64 }`: does nothing but note how long the task
//!   took from `t` (Unix microseconds, stamped by the sender just before
//!   sending) to the start of its handler.
//!
//! The sender sets `CELERIAC_BENCH_TASKS` to the number of tasks it sends;
//! when that many have run, the worker prints `done {unix_micros}` on
//! stdout. When it stops (SIGTERM), it prints one JSON line with the count
//! and the latency percentiles in microseconds (`count`, `p50_us`,
//! `p99_us`, `p999_us`, `max_us`). Logs go to stderr as usual.
//!
//! Latencies go into a fixed log-linear histogram
//! ([`celeriac_tests::latency::Histogram`], about 30 KiB, 1.6% resolution)
//! rather than a growing list, so that measuring does not inflate the
//! memory being measured.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use celeriac_consumer::{TaskContext, TaskError};
use celeriac_tests::latency::Histogram;
use celeriac_tests::test_tasks::{unix_micros, BenchNoop};

static HISTOGRAM: Histogram = Histogram::new();
static STARTED: AtomicU64 = AtomicU64::new(0);
static EXPECTED: OnceLock<u64> = OnceLock::new();

fn record(sent_at: u64) {
    let now = unix_micros();
    HISTOGRAM.record(now.saturating_sub(sent_at));
    let started = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
    if EXPECTED.get() == Some(&started) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "done {now}");
        let _ = out.flush();
    }
}

fn summary() -> String {
    serde_json::json!({
        "count": HISTOGRAM.count(),
        "p50_us": HISTOGRAM.percentile(0.50),
        "p99_us": HISTOGRAM.percentile(0.99),
        "p999_us": HISTOGRAM.percentile(0.999),
        "max_us": HISTOGRAM.max(),
    })
    .to_string()
}

fn main() -> ExitCode {
    if let Some(n) = std::env::var("CELERIAC_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let _ = EXPECTED.set(n);
    }
    let code = celeriac_consumer::cli::main_with(|registry| {
        registry.register::<BenchNoop, _, _>(|input, _ctx: TaskContext| async move {
            record(input.t);
            Ok::<_, TaskError>(())
        });
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", summary());
    let _ = out.flush();
    code
}

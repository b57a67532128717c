//! `celeriac-worker` with one more task for the benchmark (`celeriac-bench`):
//!
//! - `bench.noop` `{ "t": u64 }`: does nothing but note how long the task
//!   took from `t` (Unix microseconds, stamped by the sender just before
//!   sending) to the start of its handler.
//!
//! The sender sets `CELERIAC_BENCH_TASKS` to the number of tasks it sends;
//! when that many have run, the worker prints `done {unix_micros}` on
//! stdout. When it stops (SIGTERM), it prints one JSON line with the count
//! and the latency percentiles in microseconds. Logs go to stderr as usual.
//!
//! Latencies go into a fixed log-linear histogram (about 30 KiB, 1.6%
//! resolution) rather than a growing list, so that measuring does not
//! inflate the memory being measured.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use celeriac_consumer::{TaskContext, TaskError};
use celeriac_tests::test_tasks::{unix_micros, BenchNoop};

/// Values below this are their own bucket.
const EXACT: u64 = 128;
/// Buckets per power of two above [`EXACT`].
const SUB_BUCKETS: u64 = 64;
const BUCKETS: usize = (EXACT + (64 - 7) * SUB_BUCKETS) as usize;

static HISTOGRAM: [AtomicU64; BUCKETS] = [const { AtomicU64::new(0) }; BUCKETS];
static STARTED: AtomicU64 = AtomicU64::new(0);
static MAX_LATENCY: AtomicU64 = AtomicU64::new(0);
static EXPECTED: OnceLock<u64> = OnceLock::new();

fn bucket(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let exp = u64::from(63 - v.leading_zeros());
    let mantissa = (v >> (exp - 6)) - SUB_BUCKETS;
    (EXACT + (exp - 7) * SUB_BUCKETS + mantissa) as usize
}

/// The middle of bucket `i`.
fn bucket_value(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let exp = (i - EXACT) / SUB_BUCKETS + 7;
    let mantissa = (i - EXACT) % SUB_BUCKETS + SUB_BUCKETS;
    let low = mantissa << (exp - 6);
    low + (1u64 << (exp - 6)) / 2
}

fn percentile(counts: &[u64], total: u64, p: f64) -> u64 {
    if total == 0 {
        return 0;
    }
    let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return bucket_value(i);
        }
    }
    0
}

fn record(sent_at: u64) {
    let now = unix_micros();
    let latency = now.saturating_sub(sent_at);
    HISTOGRAM[bucket(latency)].fetch_add(1, Ordering::Relaxed);
    MAX_LATENCY.fetch_max(latency, Ordering::Relaxed);
    let started = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
    if EXPECTED.get() == Some(&started) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "done {now}");
        let _ = out.flush();
    }
}

fn summary() -> String {
    let counts: Vec<u64> = HISTOGRAM
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let total: u64 = counts.iter().sum();
    serde_json::json!({
        "count": total,
        "p50_us": percentile(&counts, total, 0.50),
        "p99_us": percentile(&counts, total, 0.99),
        "max_us": MAX_LATENCY.load(Ordering::Relaxed),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in (0..10_000_000u64).step_by(997) {
            let b = bucket(v);
            assert!(b >= last && b < BUCKETS);
            last = b;
            let mid = bucket_value(b);
            let err = mid.abs_diff(v) as f64 / v.max(1) as f64;
            assert!(err <= 1.0 / 64.0, "{v} -> {mid}");
        }
        assert!(bucket(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_walk_the_counts() {
        let mut counts = vec![0u64; BUCKETS];
        counts[bucket(10)] = 50;
        counts[bucket(1000)] = 49;
        counts[bucket(100_000)] = 1;
        assert_eq!(percentile(&counts, 100, 0.5), 10);
        assert!(percentile(&counts, 100, 0.99).abs_diff(1000) <= 16);
        assert!(percentile(&counts, 100, 1.0).abs_diff(100_000) <= 1600);
    }
}

//! Scheduling overhead of the in-process `LocalScheduler`.
//!
//! Builds random DAGs of no-op tasks (fixed seed; node i depends on up to
//! three distinct earlier nodes, so about three edges a node) at several
//! sizes, runs each several times, and prints one JSON document: every run,
//! then per size the medians of the time per node and per edge, in wall
//! time and in CPU time of the process (which a busy machine inflates
//! less). With no-op tasks the whole run time is the scheduler's; linear
//! growth shows as a flat time per node across sizes.
//!
//! ```text
//! cargo build --release -p celeriac-tests --bin celeriac-dag-bench
//! target/release/celeriac-dag-bench [--sizes 1000,10000,100000] [--runs 5] [--workers 4]
//!     [--threads N] [--blocking]
//! ```
//!
//! Exit codes: 0 ok, 2 usage or failure.

use std::process::ExitCode;
use std::time::Instant;

use celeriac_consumer::{LocalScheduler, LocalTask, TaskError, TaskOptions};
use clap::Parser;
use serde_json::{json, Value};

/// Measures the LocalScheduler on random DAGs of no-op tasks.
#[derive(Debug, Parser)]
#[command(name = "celeriac-dag-bench")]
struct Args {
    /// Numbers of nodes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    sizes: Vec<usize>,
    /// Runs per size.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The scheduler's max_workers.
    #[arg(long, default_value_t = celeriac_consumer::local::DEFAULT_MAX_WORKERS)]
    workers: usize,
    /// Edges per node (to distinct earlier nodes, fewer for the first ones).
    #[arg(long, default_value_t = 3)]
    edges: usize,
    /// Plain closures on blocking threads instead of async no-ops.
    #[arg(long)]
    blocking: bool,
    /// Worker threads of the tokio runtime (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the graph generator.
    #[arg(long, default_value_t = 0x5eed_0f_da65)]
    seed: u64,
}

/// xorshift64*: a fixed, dependency-free generator, so the graphs are the
/// same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Node i's dependencies: up to `per_node` distinct nodes below i.
fn random_dag(n: usize, per_node: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = Rng(seed.max(1));
    (0..n)
        .map(|i| {
            let want = per_node.min(i);
            let mut deps: Vec<usize> = Vec::with_capacity(want);
            while deps.len() < want {
                let d = rng.below(i);
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
            deps
        })
        .collect()
}

/// CPU time used so far by every live thread of the process, in
/// nanoseconds (Linux; `None` elsewhere). Unlike wall time it does not
/// count waiting for a CPU on a busy machine.
fn cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

async fn measure(args: &Args) -> anyhow::Result<Value> {
    let task = if args.blocking {
        LocalTask::blocking(|_| Ok::<_, TaskError>(()))
    } else {
        LocalTask::new(|_| async { Ok::<_, TaskError>(()) })
    };
    let mut runs = Vec::new();
    let mut summary = Vec::new();
    for &n in &args.sizes {
        let graph = random_dag(n, args.edges, args.seed);
        let ids: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let edges: usize = graph.iter().map(Vec::len).sum();
        let (mut per_node, mut per_edge, mut totals) = (Vec::new(), Vec::new(), Vec::new());
        let mut cpu_per_node = Vec::new();
        for run in 0..args.runs {
            let cpu_before = cpu_ns();
            let started = Instant::now();
            let mut scheduler = LocalScheduler::with_max_workers(args.workers);
            for (i, deps) in graph.iter().enumerate() {
                let options = TaskOptions::new().depends_on(deps.iter().map(|&d| ids[d].clone()));
                scheduler.add_task_with(ids[i].clone(), task.clone(), options)?;
            }
            let built = started.elapsed();
            let results = scheduler.run().await?;
            let total = started.elapsed();
            let cpu_us = cpu_before
                .zip(cpu_ns())
                .map(|(before, after)| after.saturating_sub(before) as f64 / 1e3);
            let ran = total - built;
            let succeeded = results.values().filter(|r| r.is_success()).count();
            anyhow::ensure!(succeeded == n, "only {succeeded} of {n} tasks succeeded");
            drop(results);
            let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
            per_node.push(us(total) / n as f64);
            per_edge.push(us(total) / edges.max(1) as f64);
            totals.push(total.as_secs_f64() * 1e3);
            if let Some(cpu) = cpu_us {
                cpu_per_node.push(cpu / n as f64);
            }
            runs.push(json!({
                "nodes": n,
                "edges": edges,
                "run": run + 1,
                "add_ms": round(built.as_secs_f64() * 1e3, 2),
                "run_ms": round(ran.as_secs_f64() * 1e3, 2),
                "total_ms": round(total.as_secs_f64() * 1e3, 2),
                "us_per_node": round(us(total) / n as f64, 3),
                "us_per_edge": round(us(total) / edges.max(1) as f64, 3),
                "run_us_per_node": round(us(ran) / n as f64, 3),
                "cpu_us_per_node": cpu_us.map(|cpu| round(cpu / n as f64, 3)),
            }));
        }
        summary.push(json!({
            "nodes": n,
            "edges": edges,
            "runs": args.runs,
            "median_total_ms": round(median(&mut totals), 2),
            "median_us_per_node": round(median(&mut per_node), 3),
            "median_us_per_edge": round(median(&mut per_edge), 3),
            "median_cpu_us_per_node": (!cpu_per_node.is_empty())
                .then(|| round(median(&mut cpu_per_node), 3)),
        }));
    }
    // Per-node cost relative to the smallest size: about 1.0 throughout
    // means the total grows linearly.
    let base = summary
        .first()
        .and_then(|s| s["median_us_per_node"].as_f64())
        .unwrap_or(f64::NAN);
    let cpu_base = summary
        .first()
        .and_then(|s| s["median_cpu_us_per_node"].as_f64())
        .unwrap_or(f64::NAN);
    let growth: Vec<Value> = summary
        .iter()
        .map(|s| {
            let per_node = s["median_us_per_node"].as_f64().unwrap_or(f64::NAN);
            let cpu = s["median_cpu_us_per_node"].as_f64().unwrap_or(f64::NAN);
            json!({
                "nodes": s["nodes"],
                "per_node_vs_smallest": round(per_node / base, 2),
                "cpu_per_node_vs_smallest": round(cpu / cpu_base, 2),
            })
        })
        .collect();
    Ok(json!({
        "benchmark": "local_scheduler",
        "task": if args.blocking { "blocking no-op" } else { "async no-op" },
        "max_workers": args.workers,
        "edges_per_node": args.edges,
        "seed": args.seed,
        "runtime_worker_threads": args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        "runs": runs,
        "summary": summary,
        "growth": growth,
    }))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    celeriac_tests::print_report("celeriac-dag-bench", 2, args.threads, measure(&args))
}

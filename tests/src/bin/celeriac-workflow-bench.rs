//! `celeriac-workflow-bench`: what the coordinator costs, on the real
//! broker and Redis.
//!
//! Each run measures, each in a fresh namespace (deleted afterwards), with
//! one in-process worker (the coordinator runs inside workers) and the
//! state store on:
//!
//! - **plain**: N independent no-op tasks sent with `send_batch`, until the
//!   worker has run them all;
//! - **dag**: a DAG of the same N no-op tasks in 10 layers, each node
//!   depending on 3 random nodes of the layer before (wide enough to keep
//!   the worker busy), until the workflow has finished;
//! - **chords** of 100, 1,000 and 10,000 members: the release latency, from
//!   the moment the last member finished to the start of the callback
//!   (both as recorded in the store).
//!
//! Coordinator overhead per node = (dag seconds − plain seconds) / N. One
//! JSON object goes to stdout (medians and every run); progress to stderr.
//! Exit codes: 0 ok, 1 a run failed, 2 usage.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use celeriac_consumer::{Registry, TaskContext, TaskError, Worker, WorkerHandle};
use celeriac_producer::canvas::{chord, group, Signature};
use celeriac_producer::{Producer, SendOptions};
use celeriac_schema::store::{Store, StoreSettings, WorkflowState};
use celeriac_schema::workflow::{node_task_id, InputFrom, Node, Workflow};
use celeriac_schema::{Task, Topology};
use celeriac_store::RedisStore;
use clap::Parser;
use serde::Serialize;

/// The no-op task every node runs.
struct Noop;
impl Task for Noop {
    const NAME: &'static str = "bench.wf-noop";
    type Input = rmpv::Value;
    type Output = u8;
}

/// Measures the coordinator: DAG overhead per node and chord release
/// latency.
#[derive(Debug, Parser)]
#[command(name = "celeriac-workflow-bench", version, about)]
struct Args {
    /// Broker URL.
    #[arg(
        long,
        env = "AMQP_ADDR",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_addr: String,
    /// Redis URL.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,
    /// Tasks (plain) and nodes (dag) per measurement.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Runs; the top level reports medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The worker's concurrency.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    nodes: usize,
    edges_per_node: f64,
    plain_seconds: f64,
    dag_seconds: f64,
    coordinator_overhead_us_per_node: f64,
    chord_release_ms: Vec<ChordFigure>,
    runs: Vec<RunFigures>,
}

#[derive(Debug, Serialize, Clone)]
struct ChordFigure {
    members: usize,
    release_ms: f64,
    total_seconds: f64,
}

#[derive(Debug, Serialize)]
struct RunFigures {
    plain_seconds: f64,
    dag_seconds: f64,
    overhead_us_per_node: f64,
    chords: Vec<ChordFigure>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    celeriac_tests::print_report("celeriac-workflow-bench", 1, None, bench(args))
}

struct Setup {
    ns: String,
    store: Arc<dyn Store>,
    producer: Producer,
    worker: WorkerHandle,
    run: tokio::task::JoinHandle<celeriac_consumer::Result<celeriac_consumer::StatsSnapshot>>,
}

async fn setup(args: &Args, kind: &str) -> Result<Setup> {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let ns = format!("bench-{kind}-{}", &id[id.len() - 10..]);
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect(&args.redis_url, &ns, StoreSettings::default())
            .await
            .map_err(|e| anyhow!("{e}; {}", celeriac_tests::HOW_TO_PROVIDE_REDIS))?,
    );
    let mut registry = Registry::new();
    registry.register::<Noop, _, _>(|_, _ctx: TaskContext| async { Ok::<_, TaskError>(0u8) });
    let worker = Worker::builder(&args.amqp_addr, registry)
        .namespace(&ns)
        .concurrency(args.concurrency)
        .store(store.clone())
        .build()?;
    let handle = worker.handle();
    let run = tokio::spawn(worker.run());
    let ready = Instant::now();
    while !handle.is_ready() {
        if ready.elapsed() > Duration::from_secs(20) {
            bail!("the worker did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let producer = Producer::builder(&args.amqp_addr)
        .namespace(&ns)
        .store(store.clone())
        .connect()
        .await?;
    Ok(Setup {
        ns,
        store,
        producer,
        worker: handle,
        run,
    })
}

async fn teardown(args: &Args, setup: Setup) {
    setup.worker.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(15), setup.run).await;
    if let Ok(topology) = Topology::new(setup.ns.clone()) {
        let _ = delete_namespace(&args.amqp_addr, &args.redis_url, &topology).await;
    }
}

async fn delete_namespace(amqp: &str, redis_url: &str, topology: &Topology) -> Result<()> {
    use celeriac_schema::topology::Declaration;
    let conn = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let mut declarations = topology.shared_declarations();
    declarations.extend(topology.queue_declarations("default")?);
    for d in declarations {
        match d {
            Declaration::Queue { name, .. } => {
                let _ = channel
                    .queue_delete(
                        name.as_str().into(),
                        lapin::options::QueueDeleteOptions::default(),
                    )
                    .await;
            }
            Declaration::Exchange { name, .. } => {
                let _ = channel
                    .exchange_delete(
                        name.as_str().into(),
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            _ => {}
        }
    }
    let _ = conn.close(200, "bench done".into()).await;
    celeriac_tests::delete_redis_keys(redis_url, topology.namespace()).await;
    Ok(())
}

async fn plain(args: &Args) -> Result<f64> {
    let s = setup(args, "wf-plain").await?;
    let start = Instant::now();
    s.producer
        .send_batch::<Noop>(
            std::iter::repeat_n(rmpv::Value::Nil, args.nodes),
            &SendOptions::new(),
        )
        .await?;
    while s.worker.stats().succeeded < args.nodes as u64 {
        if start.elapsed() > Duration::from_secs(300) {
            bail!("plain tasks not done in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    teardown(args, s).await;
    Ok(seconds)
}

/// Ten layers; each node depends on three random nodes of the layer before.
fn layered(nodes: usize) -> (Workflow, usize) {
    let layers = 10;
    let width = nodes.div_ceil(layers);
    let mut rng = celeriac_tests::XorShift::new(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next_u64();
    let mut wf = Workflow::new();
    let mut edges = 0;
    for i in 0..nodes {
        let layer = i / width;
        let mut deps = Vec::new();
        if layer > 0 {
            let prev = (layer - 1) * width;
            for _ in 0..3 {
                let d = prev + (next() % width as u64) as usize;
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
        }
        edges += deps.len();
        wf.push(
            Node::new(format!("n{i}"), Noop::NAME, rmpv::Value::Nil)
                .after(deps.iter().map(|d| format!("n{d}")))
                .input_from(InputFrom::ByName),
        );
    }
    (wf, edges)
}

async fn dag(args: &Args) -> Result<(f64, usize)> {
    let s = setup(args, "wf-dag").await?;
    let (wf, edges) = layered(args.nodes);
    let start = Instant::now();
    let handle = s.producer.submit(&wf, &[]).await?;
    let record = s
        .store
        .wait_workflow(handle.id(), Duration::from_secs(300))
        .await?
        .ok_or_else(|| anyhow!("the DAG did not finish in 300 s"))?;
    if record.state != WorkflowState::Succeeded {
        bail!("the DAG ended {:?}", record.state);
    }
    let seconds = start.elapsed().as_secs_f64();
    teardown(args, s).await;
    Ok((seconds, edges))
}

async fn chord_release(args: &Args, members: usize) -> Result<ChordFigure> {
    let s = setup(args, "wf-chord").await?;
    let canvas = chord(
        group((0..members).map(|_| Signature::untyped(Noop::NAME, Some(rmpv::Value::Nil)))),
        Signature::callback::<Noop>(),
    );
    let start = Instant::now();
    let handle = s.producer.submit_canvas(&canvas).await?;
    let record = s
        .store
        .wait_workflow(handle.id(), Duration::from_secs(300))
        .await?
        .ok_or_else(|| anyhow!("the chord did not finish in 300 s"))?;
    let total_seconds = start.elapsed().as_secs_f64();
    let callback = record
        .outputs
        .first()
        .ok_or_else(|| anyhow!("the chord has no output"))?;
    let started = s
        .store
        .get(node_task_id(handle.id(), callback))
        .await?
        .and_then(|r| r.started_at)
        .ok_or_else(|| anyhow!("the callback never started"))?;
    let mut last_member = 0;
    for node in record.progress.keys().filter(|n| *n != callback) {
        if let Some(r) = s.store.get(node_task_id(handle.id(), node)).await? {
            last_member = last_member.max(r.finished_at.unwrap_or(0));
        }
    }
    teardown(args, s).await;
    Ok(ChordFigure {
        members,
        release_ms: started as f64 - last_member as f64,
        total_seconds,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

async fn bench(args: Args) -> Result<Report> {
    let mut runs = Vec::new();
    let mut edges = 0;
    for run in 1..=args.runs {
        let plain_seconds = plain(&args).await?;
        let (dag_seconds, e) = dag(&args).await?;
        edges = e;
        let overhead = (dag_seconds - plain_seconds) / args.nodes as f64 * 1e6;
        let mut chords = Vec::new();
        for members in [100, 1_000, 10_000] {
            chords.push(chord_release(&args, members).await?);
        }
        eprintln!(
            "run {run}/{}: plain {plain_seconds:.3} s, dag {dag_seconds:.3} s, overhead {overhead:.1} µs/node, chord release {:?} ms",
            args.runs,
            chords.iter().map(|c| c.release_ms).collect::<Vec<_>>()
        );
        runs.push(RunFigures {
            plain_seconds,
            dag_seconds,
            overhead_us_per_node: overhead,
            chords,
        });
    }
    let chord_release_ms = [100, 1_000, 10_000]
        .iter()
        .enumerate()
        .map(|(i, &members)| ChordFigure {
            members,
            release_ms: median(runs.iter().map(|r| r.chords[i].release_ms).collect()),
            total_seconds: median(runs.iter().map(|r| r.chords[i].total_seconds).collect()),
        })
        .collect();
    Ok(Report {
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        nodes: args.nodes,
        edges_per_node: edges as f64 / args.nodes as f64,
        plain_seconds: median(runs.iter().map(|r| r.plain_seconds).collect()),
        dag_seconds: median(runs.iter().map(|r| r.dag_seconds).collect()),
        coordinator_overhead_us_per_node: median(
            runs.iter().map(|r| r.overhead_us_per_node).collect(),
        ),
        chord_release_ms,
        runs,
    })
}

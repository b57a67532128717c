//! The celeriac side: a `celeriac-bench-worker` process consuming while a
//! `Producer` sends `bench.noop` tasks, plain, with the store or signed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use celeriac_producer::{Producer, SendOptions};
use celeriac_schema::store::StoreSettings;
use celeriac_schema::topology::DELAY_LEVELS;
use celeriac_schema::Topology;
use celeriac_tests::test_tasks::{unix_micros, BenchNoop, NoopInput};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::broker::{cleanup, connect, namespace};
use crate::machine::{proc_status_kib, CpuSeconds, CpuSnapshot, Servers};
use crate::report::{mib, round, CeleriacFigures, Latency};
use crate::Args;

/// How long an idle worker runs before its resident memory is read.
const IDLE_WAIT: Duration = Duration::from_secs(2);
/// The name of the worker binary, beside this one.
const WORKER_BIN: &str = "celeriac-bench-worker";

pub struct CeleriacResult {
    pub tasks: u64,
    pub seconds: f64,
    pub publish_seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub peak_rss_kib: u64,
    pub idle_rss_kib: u64,
    pub cpu: CpuSeconds,
}

impl CeleriacResult {
    pub fn tasks_per_sec(&self) -> f64 {
        self.tasks as f64 / self.seconds
    }

    pub fn figures(&self) -> CeleriacFigures {
        CeleriacFigures {
            tasks_per_sec: round(self.tasks_per_sec(), 1),
            seconds: round(self.seconds, 3),
            latency_ms: Latency {
                p50: round(self.p50_us as f64 / 1000.0, 3),
                p99: round(self.p99_us as f64 / 1000.0, 3),
                p999: None,
                max: Some(round(self.max_us as f64 / 1000.0, 3)),
            },
            worker_peak_rss_mib: round(mib(self.peak_rss_kib), 2),
            worker_idle_rss_mib: round(mib(self.idle_rss_kib), 2),
            publish_seconds: Some(round(self.publish_seconds, 3)),
            cpu_seconds: Some(self.cpu),
        }
    }
}

/// What celeriac is measured with: the worker binary, and optionally the
/// store and signing keys.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub worker_bin: &'a Path,
    pub store_url: Option<&'a str>,
    pub signing_keys: Option<&'a Path>,
}

impl Side<'_> {
    pub fn kind(&self) -> &'static str {
        match (self.store_url, self.signing_keys) {
            (Some(_), _) => "celeriac-store",
            (None, Some(_)) => "celeriac-signed",
            (None, None) => "celeriac",
        }
    }
}

pub async fn celeriac_phase(
    args: &Args,
    side: Side<'_>,
    servers: Servers,
    run: u64,
) -> Result<CeleriacResult> {
    let kind = side.kind();
    let topology = Topology::new(namespace(kind))?;
    eprintln!(
        "run {run}/{}: {kind} in {}",
        args.runs,
        topology.namespace()
    );
    let result = tokio::time::timeout(
        args.timeout,
        celeriac_measure(args, &topology, side, servers),
    )
    .await
    .map_err(|_| anyhow!("celeriac: not done within {:?}", args.timeout))
    .and_then(|r| r);
    cleanup_celeriac(args, &topology, side.store_url).await;
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

/// Deletes a celeriac namespace's queues, exchanges and store keys.
pub async fn cleanup_celeriac(args: &Args, topology: &Topology, store_url: Option<&str>) {
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
    // The worker declares a tolerance class queue per rung for each queue
    // it consumes; left behind, they pile up as quorum queues on the broker.
    for class in 0..celeriac_schema::tolerance::TOLERANCE_CLASSES_MS.len() {
        queues.push(topology.tolerance_queue("default", class as u32));
    }
    cleanup(&args.amqp_addr, &args.tls.broker(), &queues, &exchanges).await;
    if let Some(url) = store_url {
        celeriac_tests::delete_redis_keys(url, topology.namespace()).await;
    }
}

/// What the bench worker prints when it stops.
#[derive(Debug, Deserialize)]
pub struct WorkerSummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    #[serde(default)]
    pub p999_us: u64,
    pub max_us: u64,
}

/// The producer for a measurement (declaring the namespace), with the store
/// and signing keys of `side`.
pub async fn producer(args: &Args, ns: &str, side: Side<'_>) -> Result<Producer> {
    let mut producer = Producer::builder(&args.amqp_addr)
        .tls(args.tls.broker())
        .namespace(ns);
    if let Some(url) = side.store_url {
        let tls = args.tls.redis();
        let store =
            celeriac_store::RedisStore::connect_with_tls(url, ns, StoreSettings::default(), &tls)
                .await
                .map_err(|e| anyhow!("{e}; {}", celeriac_tests::HOW_TO_PROVIDE_REDIS))?;
        producer = producer.store(std::sync::Arc::new(store));
    }
    if let Some(path) = side.signing_keys {
        producer = producer.signing(celeriac_producer::signing::load_keyring(path)?);
    }
    Ok(producer.connect().await?)
}

/// A running bench worker, consuming the namespace's `default` queue, that
/// says `done` once it has started `n` tasks.
pub struct WorkerProcess {
    child: Child,
    pub pid: u32,
    lines: Lines<BufReader<ChildStdout>>,
    admin: Connection,
    channel: Channel,
    work_queue: String,
    dead_letter_queue: String,
    /// Its VmRSS once consuming and idle.
    pub idle_rss_kib: u64,
    /// Its VmHWM, as last sampled.
    pub peak_rss_kib: u64,
}

impl WorkerProcess {
    /// Starts the worker and returns once it consumes and has run idle for
    /// [`IDLE_WAIT`] since its start.
    pub async fn start(
        args: &Args,
        topology: &Topology,
        side: Side<'_>,
        n: u64,
    ) -> Result<WorkerProcess> {
        let ns = topology.namespace();
        let admin = connect(&args.amqp_addr, &args.tls.broker(), "watch").await?;
        let channel = admin.create_channel().await?;
        let work_queue = topology.work_queue("default");

        let mut command = tokio::process::Command::new(side.worker_bin);
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
        if let Some(url) = side.store_url {
            // In the environment, not on the command line where every
            // process could read its password.
            command.env("REDIS_URL", url);
        }
        if let Some(path) = side.signing_keys {
            command.arg("--signing-keys").arg(path);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", side.worker_bin.display()))?;
        let launched = Instant::now();
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the worker exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no pipe from the worker"))?;
        let lines = BufReader::new(stdout).lines();

        // Ready once its consumer is on the queue; idle memory after IDLE_WAIT.
        loop {
            if let Some(status) = child.try_wait()? {
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
        Ok(WorkerProcess {
            child,
            pid,
            lines,
            admin,
            channel,
            work_queue,
            dead_letter_queue: topology.dead_letter_queue("default"),
            idle_rss_kib,
            peak_rss_kib: 0,
        })
    }

    /// Waits for the worker's `done` line (it has started all `n` tasks)
    /// and returns its Unix time in microseconds; samples the peak RSS
    /// every 100 ms meanwhile.
    pub async fn wait_done(&mut self) -> Result<u64> {
        let mut sample = tokio::time::interval(Duration::from_millis(100));
        let done_us = loop {
            tokio::select! {
                line = self.lines.next_line() => match line? {
                    Some(line) => {
                        if let Some(at) = line.strip_prefix("done ") {
                            break at.trim().parse::<u64>().context("the worker's done line")?;
                        }
                    }
                    None => bail!("the worker closed its output before running every task"),
                },
                status = self.child.wait() => {
                    bail!("the worker exited during the run ({})", status?)
                }
                _ = sample.tick() => self.sample_rss(),
            }
        };
        self.sample_rss();
        Ok(done_us)
    }

    fn sample_rss(&mut self) {
        let now = proc_status_kib(self.pid, "VmHWM").unwrap_or(0);
        self.peak_rss_kib = self.peak_rss_kib.max(now);
    }

    /// Stops the worker with SIGTERM, reads its summary, checks that it
    /// ran exactly `n` tasks and that its work queue and dead-letter queue
    /// are empty.
    pub async fn stop(mut self, n: u64) -> Result<WorkerSummary> {
        // Closing its channel hands back anything unacked, which the queue
        // check below would then see.
        let pid = self.pid;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        let mut summary = None;
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.lines.next_line().await? {
                if line.starts_with('{') {
                    summary = Some(serde_json::from_str::<WorkerSummary>(&line)?);
                }
            }
            self.child.wait().await?;
            Ok::<_, anyhow::Error>(())
        })
        .await;
        match drained {
            Ok(result) => result?,
            Err(_) => {
                let _ = self.child.kill().await;
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
        for queue in [&self.work_queue, &self.dead_letter_queue] {
            let left = self
                .channel
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
        let _ = self.admin.close(200, "done".into()).await;
        Ok(summary)
    }
}

async fn celeriac_measure(
    args: &Args,
    topology: &Topology,
    side: Side<'_>,
    servers: Servers,
) -> Result<CeleriacResult> {
    let n = args.tasks;
    // Declares the namespace, so the worker can be watched for readiness.
    let producer = producer(args, topology.namespace(), side).await?;
    let mut worker = WorkerProcess::start(args, topology, side, n).await?;

    let cpu_before = CpuSnapshot::take(servers, Some(worker.pid));
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

    let done_us = worker.wait_done().await?;
    let cpu = CpuSnapshot::take(servers, Some(worker.pid)).since(&cpu_before);
    let published = sending
        .await
        .context("the producer panicked")?
        .context("sending tasks")?;
    let (idle_rss_kib, peak_rss_kib) = (worker.idle_rss_kib, worker.peak_rss_kib);
    let summary = worker.stop(n).await?;

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
pub fn bench_key_file() -> Result<PathBuf> {
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

pub fn locate_worker(given: Option<&Path>) -> Result<PathBuf> {
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

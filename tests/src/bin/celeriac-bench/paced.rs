//! The paced mode: tasks sent at a fixed rate, well below saturation, to
//! measure the latency a task sees on an unloaded system: enqueue to
//! handler start for celeriac (the bench worker's histogram), publish to
//! delivery for the raw lapin loop (the floor).
//!
//! The sender follows a token schedule: every millisecond it sends the
//! messages due by then (`rate` x elapsed, minus those sent), so the load
//! is smooth rather than bursty; a sender that falls behind catches up
//! with bigger batches, and shows as an achieved rate below the target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use celeriac_producer::SendOptions;
use celeriac_schema::Topology;
use celeriac_tests::latency::Histogram;
use celeriac_tests::test_tasks::{unix_micros, BenchNoop, NoopInput};
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::broker::namespace;
use crate::celeriac::{cleanup_celeriac, producer, Side, WorkerProcess};
use crate::machine::{CpuSeconds, CpuSnapshot, Servers};
use crate::raw::{check_confirm, cleanup_raw, raw_consume, Messages, Queued, RawConfig, RawLoop};
use crate::report::{mib, round, Latency};
use crate::Args;

/// How often the sender sends what is due.
const TICK: Duration = Duration::from_millis(1);
/// `send_batch` calls of the celeriac sender in flight at once.
const MAX_BATCHES_IN_FLIGHT: usize = 256;
/// A side kept up when it sent at least this share of the target rate...
const KEPT_UP_RATE: f64 = 0.95;
/// ...and the last task started within this long of the schedule's end.
const KEPT_UP_DRAIN: Duration = Duration::from_secs(1);

/// One rate: both sides.
#[derive(Debug, Serialize)]
pub struct PacedFigures {
    /// The target rate, messages (tasks) per second.
    pub rate: u64,
    /// How long the schedule runs.
    pub seconds: f64,
    pub raw_lapin: PacedSide,
    pub celeriac: PacedSide,
}

/// One side at one rate.
#[derive(Debug, Serialize)]
pub struct PacedSide {
    /// Messages (tasks) sent: rate x seconds.
    pub sent: u64,
    /// `sent` over the time from the first send to the last confirm.
    pub achieved_rate: f64,
    /// From the end of the schedule to the last delivery (raw) or the last
    /// handler start (celeriac), in ms; negative when it came before the
    /// schedule's end.
    pub drain_ms: f64,
    /// Achieved at least 95% of the rate, and drained within 1 s.
    pub kept_up: bool,
    /// Publish to delivery (raw), enqueue to handler start (celeriac).
    pub latency_ms: Latency,
    pub cpu_seconds: CpuSeconds,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_peak_rss_mib: Option<f64>,
}

/// Hands out the messages due on a 1 ms timer.
struct Pacer {
    rate: f64,
    total: u64,
    sent: u64,
    start: Instant,
    timer: tokio::time::Interval,
}

impl Pacer {
    fn new(rate: u64, total: u64) -> Pacer {
        let mut timer = tokio::time::interval(TICK);
        timer.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Pacer {
            rate: rate as f64,
            total,
            sent: 0,
            start: Instant::now(),
            timer,
        }
    }

    /// How many to send now (after waiting for the next tick with any due);
    /// `None` once all are handed out.
    async fn next(&mut self) -> Option<u64> {
        while self.sent < self.total {
            self.timer.tick().await;
            let due = ((self.start.elapsed().as_secs_f64() * self.rate) as u64).min(self.total);
            if due > self.sent {
                let batch = due - self.sent;
                self.sent = due;
                return Some(batch);
            }
        }
        None
    }

    /// When the schedule ends, in Unix microseconds.
    fn end_us(&self, start_us: u64) -> u64 {
        start_us + (self.total as f64 / self.rate * 1e6) as u64
    }
}

/// What one paced side measured, before it becomes figures.
struct Paced {
    sent: u64,
    rate: u64,
    schedule_end_us: u64,
    sending: Duration,
    last_us: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    cpu: CpuSeconds,
    peak_rss_kib: Option<u64>,
}

impl Paced {
    fn figures(&self) -> PacedSide {
        let achieved = self.sent as f64 / self.sending.as_secs_f64().max(1e-9);
        let drain_us = self.last_us as f64 - self.schedule_end_us as f64;
        let ms = |us: u64| round(us as f64 / 1000.0, 3);
        PacedSide {
            sent: self.sent,
            achieved_rate: round(achieved, 1),
            drain_ms: round(drain_us / 1000.0, 3),
            kept_up: achieved >= KEPT_UP_RATE * self.rate as f64
                && drain_us <= KEPT_UP_DRAIN.as_micros() as f64,
            latency_ms: Latency {
                p50: ms(self.p50_us),
                p99: ms(self.p99_us),
                p999: Some(ms(self.p999_us)),
                max: Some(ms(self.max_us)),
            },
            cpu_seconds: self.cpu,
            worker_peak_rss_mib: self.peak_rss_kib.map(|k| round(mib(k), 2)),
        }
    }

    fn describe(&self, label: &str) -> String {
        let f = self.figures();
        format!(
            "paced {} msgs/s, {label}: achieved {:.0}/s, drain {:.1} ms, kept up {}, \
             latency p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
            self.rate,
            f.achieved_rate,
            f.drain_ms,
            f.kept_up,
            f.latency_ms.p50,
            f.latency_ms.p99,
            f.latency_ms.p999.unwrap_or(0.0),
            f.latency_ms.max.unwrap_or(0.0),
        )
    }
}

/// Measures every rate of `--paced`, raw lapin then celeriac at each.
pub async fn paced(
    args: &Args,
    worker_bin: &std::path::Path,
    servers: Servers,
) -> Result<Vec<PacedFigures>> {
    let mut figures = Vec::new();
    for &rate in &args.paced {
        let total = ((rate as f64 * args.paced_seconds).round() as u64).max(1);
        let limit = args.timeout + Duration::from_secs_f64(args.paced_seconds);

        let topology = Topology::new(namespace("raw"))?;
        eprintln!("paced {rate} msgs/s: raw lapin in {}", topology.namespace());
        let raw = tokio::time::timeout(limit, raw_paced(args, &topology, servers, rate, total))
            .await
            .map_err(|_| anyhow!("paced raw lapin: not done within {limit:?}"))
            .and_then(|r| r);
        cleanup_raw(args, &topology).await;
        let raw = raw.context("paced raw lapin")?;
        eprintln!("{}", raw.describe("raw lapin"));
        tokio::time::sleep(args.settle).await;

        let side = Side {
            worker_bin,
            store_url: None,
            signing_keys: None,
        };
        let topology = Topology::new(namespace("celeriac"))?;
        eprintln!("paced {rate} msgs/s: celeriac in {}", topology.namespace());
        let celeriac = tokio::time::timeout(
            limit,
            celeriac_paced(args, &topology, side, servers, rate, total),
        )
        .await
        .map_err(|_| anyhow!("paced celeriac: not done within {limit:?}"))
        .and_then(|r| r);
        cleanup_celeriac(args, &topology, None).await;
        let celeriac = celeriac.context("paced celeriac")?;
        eprintln!("{}", celeriac.describe("celeriac"));
        tokio::time::sleep(args.settle).await;

        figures.push(PacedFigures {
            rate,
            seconds: args.paced_seconds,
            raw_lapin: raw.figures(),
            celeriac: celeriac.figures(),
        });
    }
    Ok(figures)
}

/// The like-for-like raw loop at `rate`: the consumer decodes each body
/// and records publish (the input's `t`) to delivery.
async fn raw_paced(
    args: &Args,
    topology: &Topology,
    servers: Servers,
    rate: u64,
    total: u64,
) -> Result<Paced> {
    let config = RawConfig::LIKE_FOR_LIKE;
    let mut raw = RawLoop::open(args, topology, &config).await?;
    let messages = Messages::new(&config)?;
    let options = messages.options();
    let histogram = Arc::new(Histogram::new());

    let cpu_before = CpuSnapshot::take(servers, None);
    let consumed = tokio::spawn(raw_consume(
        raw.channel.clone(),
        raw.take_consumer()?,
        total,
        config.acks,
        Some(histogram.clone()),
    ));
    // Confirms are awaited in order by a task of their own, within the
    // window, so the schedule never waits for one.
    let window = Arc::new(Semaphore::new(config.window));
    let (confirms, mut pending) = mpsc::unbounded_channel::<(Queued, OwnedSemaphorePermit)>();
    let confirmer = tokio::spawn(async move {
        while let Some((confirm, permit)) = pending.recv().await {
            check_confirm(confirm.await?.await?)?;
            drop(permit);
        }
        Ok::<_, anyhow::Error>(Instant::now())
    });

    let start_us = unix_micros();
    let mut pacer = Pacer::new(rate, total);
    while let Some(batch) = pacer.next().await {
        for _ in 0..batch {
            let permit = window.clone().acquire_owned().await?;
            let (body, props) = messages.next()?;
            let confirm = raw.publish(config.writes, options, body, props).await?;
            confirms
                .send((confirm, permit))
                .map_err(|_| anyhow!("the confirm reader stopped"))?;
        }
    }
    drop(confirms);
    let confirmed = confirmer.await.context("the confirm reader panicked")??;
    let (delivered, _) = consumed.await.context("the raw consumer panicked")??;
    let last_us = start_us + delivered.duration_since(pacer.start).as_micros() as u64;
    let cpu = CpuSnapshot::take(servers, None).since(&cpu_before);
    raw.close().await;
    Ok(Paced {
        sent: total,
        rate,
        schedule_end_us: pacer.end_us(start_us),
        sending: confirmed.duration_since(pacer.start),
        last_us,
        p50_us: histogram.percentile(0.50),
        p99_us: histogram.percentile(0.99),
        p999_us: histogram.percentile(0.999),
        max_us: histogram.max(),
        cpu,
        peak_rss_kib: None,
    })
}

/// celeriac at `rate`: each tick's tasks go out in one `send_batch` call
/// of their own (calls overlap, as independent callers' would), to a
/// running bench worker, whose histogram gives enqueue to handler start.
async fn celeriac_paced(
    args: &Args,
    topology: &Topology,
    side: Side<'_>,
    servers: Servers,
    rate: u64,
    total: u64,
) -> Result<Paced> {
    let producer = producer(args, topology.namespace(), side).await?;
    let mut worker = WorkerProcess::start(args, topology, side, total).await?;

    let cpu_before = CpuSnapshot::take(servers, Some(worker.pid));
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let mut calls = JoinSet::new();
    let start_us = unix_micros();
    let mut pacer = Pacer::new(rate, total);
    while let Some(batch) = pacer.next().await {
        let permit = in_flight.clone().acquire_owned().await?;
        let producer = producer.clone();
        let inputs: Vec<NoopInput> = (0..batch).map(|_| NoopInput { t: unix_micros() }).collect();
        calls.spawn(async move {
            let sent = producer
                .send_batch::<BenchNoop>(inputs, &SendOptions::new())
                .await;
            drop(permit);
            sent.map(|_| ())
        });
        while let Some(call) = calls.try_join_next() {
            call.context("a send_batch call panicked")?
                .context("sending tasks")?;
        }
    }
    while let Some(call) = calls.join_next().await {
        call.context("a send_batch call panicked")?
            .context("sending tasks")?;
    }
    let confirmed = Instant::now();
    let last_us = worker.wait_done().await?;
    let cpu = CpuSnapshot::take(servers, Some(worker.pid)).since(&cpu_before);
    let peak_rss_kib = worker.peak_rss_kib;
    let summary = worker.stop(total).await?;
    Ok(Paced {
        sent: total,
        rate,
        schedule_end_us: pacer.end_us(start_us),
        sending: confirmed.duration_since(pacer.start),
        last_us,
        p50_us: summary.p50_us,
        p99_us: summary.p99_us,
        p999_us: summary.p999_us,
        max_us: summary.max_us,
        cpu,
        peak_rss_kib: Some(peak_rss_kib),
    })
}

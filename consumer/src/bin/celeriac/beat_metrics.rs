//! `/metrics`, `/healthz` and `/readyz` of `celeriac beat`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `celeriac_beat_ticks_total` | counter | outcome: submitted, taken, taken_over, skipped, queued, missed, failed |
//! | `celeriac_beat_last_tick_timestamp_seconds` | gauge | |
//! | `celeriac_beat_entries` | gauge | |
//! | `celeriac_beat_up` | gauge | |
//!
//! plus the producer's `celeriac_tasks_sent_total`,
//! `celeriac_tasks_send_failed_total` and `celeriac_publish_confirm_seconds`
//! (see `celeriac_producer::metrics`), registered in the same registry.
//!
//! Ready once the scheduling loop turns, and for as long as it keeps
//! turning: a loop that has not turned for [`STALLED_AFTER`] (it turns
//! every half second) is reported not ready, and `/metrics` shows
//! `celeriac_beat_up 0`.

use std::time::Duration;

use celeriac_consumer::http::Endpoints;
use celeriac_producer::beat::{BeatMonitor, BeatStats};
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// How long the loop may go without turning before beat is not ready.
const STALLED_AFTER: Duration = Duration::from_secs(30);

/// Reads one count of the stats.
type Read = fn(&BeatStats) -> u64;

/// The outcomes of `celeriac_beat_ticks_total`, read from the stats.
const OUTCOMES: [(&str, Read); 7] = [
    ("submitted", |s| s.submitted),
    ("taken", |s| s.taken),
    ("taken_over", |s| s.taken_over),
    ("skipped", |s| s.skipped),
    ("queued", |s| s.queued),
    ("missed", |s| s.missed),
    ("failed", |s| s.failed),
];

/// What beat's probe server reads.
pub struct BeatEndpoints {
    monitor: BeatMonitor,
    registry: Registry,
    ticks: Vec<(IntCounter, Read)>,
    last_tick: Gauge,
    up: IntGauge,
    token: Option<String>,
}

impl BeatEndpoints {
    /// Metrics of the beat `monitor` watches, over `entries` entries, in
    /// `registry` (which may hold other metrics already).
    ///
    /// # Errors
    ///
    /// When a metric cannot be registered (a bug in the names here).
    pub fn new(
        registry: Registry,
        monitor: BeatMonitor,
        entries: usize,
        token: Option<String>,
    ) -> prometheus::Result<Self> {
        let family = IntCounterVec::new(
            Opts::new(
                "celeriac_beat_ticks_total",
                "Ticks this beat replica handled, by outcome.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(family.clone()))?;
        let ticks = OUTCOMES
            .iter()
            .map(|(name, read)| (family.with_label_values(&[name]), *read))
            .collect();
        let last_tick = Gauge::with_opts(Opts::new(
            "celeriac_beat_last_tick_timestamp_seconds",
            "When this replica last handled a tick (Unix seconds; 0 before the first).",
        ))?;
        registry.register(Box::new(last_tick.clone()))?;
        let count = IntGauge::with_opts(Opts::new(
            "celeriac_beat_entries",
            "Scheduled entries this beat runs.",
        ))?;
        registry.register(Box::new(count.clone()))?;
        count.set(i64::try_from(entries).unwrap_or(i64::MAX));
        let up = IntGauge::with_opts(Opts::new(
            "celeriac_beat_up",
            "1 while the scheduling loop turns.",
        ))?;
        registry.register(Box::new(up.clone()))?;
        Ok(BeatEndpoints {
            monitor,
            registry,
            ticks,
            last_tick,
            up,
            token,
        })
    }
}

impl Endpoints for BeatEndpoints {
    fn render_metrics(&self) -> prometheus::Result<String> {
        let stats = self.monitor.stats();
        for (counter, read) in &self.ticks {
            let now = read(&stats);
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        let last = stats.last_tick_ms.unwrap_or(0);
        self.last_tick.set(last as f64 / 1000.0);
        self.up.set(i64::from(self.readiness().is_ok()));
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather())
    }

    fn readiness(&self) -> Result<(), String> {
        match self.monitor.since_last_turn() {
            None => Err("the schedule is not running yet".to_owned()),
            Some(idle) if idle > STALLED_AFTER => Err(format!(
                "the scheduling loop has not turned for {}s",
                idle.as_secs()
            )),
            Some(_) => Ok(()),
        }
    }

    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

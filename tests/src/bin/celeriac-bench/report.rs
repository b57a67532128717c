//! The JSON report: its structures, the medians over runs, and the small
//! numeric helpers they use.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::celeriac::CeleriacResult;
use crate::machine::{CpuSeconds, Machine};
use crate::paced::PacedFigures;
use crate::raw::{RawConfigFigures, RawResult};

/// The JSON report: medians at the top level, then every run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub broker_version: Option<String>,
    pub tasks: u64,
    pub raw_lapin: RawFigures,
    pub celeriac: CeleriacFigures,
    /// celeriac tasks/s over raw lapin msgs/s (median of the runs' ratios).
    pub ratio: f64,
    /// The best raw loop with the same safety (with `--best` or
    /// `--ablation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_best: Option<BestFigures>,
    /// celeriac tasks/s over the best raw loop's msgs/s (median of the
    /// runs' ratios).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_best: Option<f64>,
    /// The raw loop with one ingredient changed at a time (with
    /// `--ablation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_ablation: Option<Vec<AblationFigures>>,
    /// celeriac with the Redis store: results, task states, execution
    /// idempotency keys and run leases (when a Redis URL was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_store: Option<StoreFigures>,
    /// celeriac with signed envelopes (with `--signing`): the producer
    /// signs, the worker verifies every delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_signing: Option<StoreFigures>,
    /// Latency at fixed send rates (with `--paced`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paced: Option<Vec<PacedFigures>>,
    pub settings: Settings,
    pub runs: Vec<RunFigures>,
}

#[derive(Debug, Serialize)]
pub struct StoreFigures {
    pub tasks_per_sec: f64,
    pub seconds: f64,
    pub latency_ms: Latency,
    pub worker_peak_rss_mib: f64,
    /// Over raw lapin in the same run (median).
    pub ratio_to_raw: f64,
    /// Over plain celeriac in the same run (median).
    pub ratio_to_plain: f64,
    /// Over the best raw loop in the same run (median), when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_best: Option<f64>,
    pub runs: Vec<CeleriacFigures>,
}

/// The best raw loop: medians, and what it is.
#[derive(Debug, Serialize)]
pub struct BestFigures {
    pub msgs_per_sec: f64,
    pub seconds: f64,
    /// Over the like-for-like raw loop in the same run (median).
    pub ratio_to_like_for_like: f64,
    pub config: RawConfigFigures,
}

/// One ingredient of the raw loop changed, medians over the runs.
#[derive(Debug, Serialize)]
pub struct AblationFigures {
    pub ingredient: &'static str,
    pub setting: &'static str,
    pub msgs_per_sec: f64,
    /// Over the like-for-like raw loop in the same run (median).
    pub ratio_to_like_for_like: f64,
}

/// One ingredient of the raw loop changed, in one run.
#[derive(Debug, Serialize)]
pub struct RunAblation {
    pub ingredient: &'static str,
    pub setting: &'static str,
    pub msgs_per_sec: f64,
    pub seconds: f64,
    pub ratio_to_like_for_like: f64,
    pub cpu_seconds: CpuSeconds,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub runs: u64,
    pub prefetch: u16,
    pub concurrency: usize,
    pub chunk: usize,
    pub confirm_window: usize,
    pub body_bytes: usize,
    pub queue: &'static str,
    pub messages: &'static str,
    pub acks: &'static str,
}

#[derive(Debug, Serialize)]
pub struct RunFigures {
    pub run: u64,
    pub order: &'static str,
    pub raw_lapin: RawFigures,
    pub celeriac: CeleriacFigures,
    pub ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_best: Option<RawFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_best: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_ablation: Option<Vec<RunAblation>>,
}

#[derive(Debug, Serialize)]
pub struct RawFigures {
    pub msgs_per_sec: f64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acks_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<CpuSeconds>,
}

#[derive(Debug, Serialize)]
pub struct CeleriacFigures {
    pub tasks_per_sec: f64,
    pub seconds: f64,
    pub latency_ms: Latency,
    pub worker_peak_rss_mib: f64,
    pub worker_idle_rss_mib: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<CpuSeconds>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p999: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// One measured run: the like-for-like raw loop, plain celeriac and their
/// ratio, and the extra raw loops when measured.
pub struct Run {
    pub raw: RawResult,
    pub celeriac: CeleriacResult,
    pub ratio: f64,
    pub best: Option<RawResult>,
    pub ablation: Vec<(&'static str, &'static str, RawResult)>,
}

impl Run {
    /// celeriac over the best raw loop, when it was measured.
    pub fn ratio_to_best(&self) -> Option<f64> {
        let best = self.best.as_ref()?;
        Some(self.celeriac.tasks_per_sec() / best.msgs_per_sec())
    }
}

/// The medians of a variant of celeriac (with the store, or signed) over
/// the runs that measured it, beside raw lapin and plain celeriac.
pub fn variant_figures(
    variant: &[Option<(CeleriacResult, f64)>],
    runs: &[Run],
) -> Option<StoreFigures> {
    if variant.is_empty() || !variant.iter().all(Option::is_some) {
        return None;
    }
    let all: Vec<&(CeleriacResult, f64)> = variant.iter().flatten().collect();
    let med =
        |f: &dyn Fn(&(CeleriacResult, f64)) -> f64| median(all.iter().map(|r| f(r)).collect());
    let to_best: Option<Vec<f64>> = all
        .iter()
        .zip(runs)
        .map(|(s, run)| Some(s.0.tasks_per_sec() / run.best.as_ref()?.msgs_per_sec()))
        .collect();
    Some(StoreFigures {
        tasks_per_sec: round(med(&|r| r.0.tasks_per_sec()), 1),
        seconds: round(med(&|r| r.0.seconds), 3),
        latency_ms: Latency {
            p50: round(med(&|r| r.0.p50_us as f64 / 1000.0), 3),
            p99: round(med(&|r| r.0.p99_us as f64 / 1000.0), 3),
            p999: None,
            max: None,
        },
        worker_peak_rss_mib: round(med(&|r| mib(r.0.peak_rss_kib)), 2),
        ratio_to_raw: round(med(&|r| r.1), 3),
        ratio_to_plain: round(
            median(
                all.iter()
                    .zip(runs)
                    .map(|(s, run)| s.0.tasks_per_sec() / run.celeriac.tasks_per_sec())
                    .collect(),
            ),
            3,
        ),
        ratio_to_best: to_best.map(|r| round(median(r), 3)),
        runs: all.iter().map(|r| r.0.figures()).collect(),
    })
}

/// The medians of the best raw loop over the runs, when every run measured
/// it.
pub fn best_figures(runs: &[Run], config: RawConfigFigures) -> Option<BestFigures> {
    let best: Option<Vec<(&RawResult, &RawResult)>> = runs
        .iter()
        .map(|r| Some((r.best.as_ref()?, &r.raw)))
        .collect();
    let best = best.filter(|b| !b.is_empty())?;
    Some(BestFigures {
        msgs_per_sec: round(median(best.iter().map(|b| b.0.msgs_per_sec()).collect()), 1),
        seconds: round(median(best.iter().map(|b| b.0.seconds).collect()), 3),
        ratio_to_like_for_like: round(
            median(
                best.iter()
                    .map(|(b, raw)| b.msgs_per_sec() / raw.msgs_per_sec())
                    .collect(),
            ),
            3,
        ),
        config,
    })
}

/// The medians of each ablation variant over the runs (variants in the
/// order of the first run).
pub fn ablation_figures(runs: &[Run]) -> Option<Vec<AblationFigures>> {
    let first = runs.first()?;
    if first.ablation.is_empty() {
        return None;
    }
    let figures = first
        .ablation
        .iter()
        .map(|(ingredient, setting, _)| {
            let same: Vec<(&RawResult, &RawResult)> = runs
                .iter()
                .flat_map(|run| {
                    run.ablation
                        .iter()
                        .filter(|(i, s, _)| i == ingredient && s == setting)
                        .map(move |(_, _, r)| (r, &run.raw))
                })
                .collect();
            AblationFigures {
                ingredient,
                setting,
                msgs_per_sec: round(median(same.iter().map(|r| r.0.msgs_per_sec()).collect()), 1),
                ratio_to_like_for_like: round(
                    median(
                        same.iter()
                            .map(|(r, raw)| r.msgs_per_sec() / raw.msgs_per_sec())
                            .collect(),
                    ),
                    3,
                ),
            }
        })
        .collect();
    Some(figures)
}

/// One run's figures for the report.
pub fn run_figures(run: &Run, number: u64) -> RunFigures {
    let ablation: Vec<RunAblation> = run
        .ablation
        .iter()
        .map(|(ingredient, setting, r)| RunAblation {
            ingredient,
            setting,
            msgs_per_sec: round(r.msgs_per_sec(), 1),
            seconds: round(r.seconds, 3),
            ratio_to_like_for_like: round(r.msgs_per_sec() / run.raw.msgs_per_sec(), 3),
            cpu_seconds: r.cpu,
        })
        .collect();
    RunFigures {
        run: number,
        order: if number % 2 == 1 {
            "raw lapin, then celeriac"
        } else {
            "celeriac, then raw lapin"
        },
        raw_lapin: run.raw.figures(),
        celeriac: run.celeriac.figures(),
        ratio: round(run.ratio, 3),
        raw_best: run.best.as_ref().map(RawResult::figures),
        ratio_to_best: run.ratio_to_best().map(|r| round(r, 3)),
        raw_ablation: (!ablation.is_empty()).then_some(ablation),
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn median(mut values: Vec<f64>) -> f64 {
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

pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC.
pub fn iso_date(at: SystemTime) -> String {
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
    use std::time::Duration;

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

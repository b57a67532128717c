//! The urgency options of `celeriac-worker`: `--urgent-weight` and
//! `--wait-threshold` (SPEC.md section 19).

use std::str::FromStr;
use std::time::Duration;

use crate::WorkerBuilder;

/// One `--wait-threshold`: `QUEUE=DURATION` for one queue, or `DURATION`
/// for every queue without one of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitThreshold {
    /// The queue, `None` for the default.
    pub queue: Option<String>,
    /// The threshold.
    pub threshold: Duration,
}

impl FromStr for WaitThreshold {
    type Err = String;

    /// Parses `emails=30s` or `2m`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use celeriac_consumer::cli::WaitThreshold;
    ///
    /// let one: WaitThreshold = "emails=30s".parse().unwrap();
    /// assert_eq!(one.queue.as_deref(), Some("emails"));
    /// assert_eq!(one.threshold, Duration::from_secs(30));
    /// assert_eq!("2m".parse::<WaitThreshold>().unwrap().queue, None);
    /// assert!("emails=0s".parse::<WaitThreshold>().is_err());
    /// assert!("=5s".parse::<WaitThreshold>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (queue, duration) = match s.split_once('=') {
            Some((queue, duration)) => {
                celeriac_schema::topology::validate_name("queue", queue)
                    .map_err(|e| e.to_string())?;
                (Some(queue.to_owned()), duration)
            }
            None => (None, s),
        };
        let threshold = humantime::parse_duration(duration.trim())
            .map_err(|e| format!("{duration:?} is not a duration (like 30s or 5m): {e}"))?;
        if threshold.is_zero() {
            return Err("a wait threshold must be longer than zero".into());
        }
        Ok(WaitThreshold { queue, threshold })
    }
}

/// Urgent-first weighting and wait thresholds.
#[derive(Debug, Clone, clap::Args)]
pub struct UrgencyArgs {
    /// Under contention, one concurrency slot in every N goes to a
    /// deferrable task (sent with a delay tolerance), the others to urgent
    /// ones. At least 2.
    #[arg(long, env = "CELERIAC_URGENT_WEIGHT", default_value_t = crate::DEFAULT_URGENT_WEIGHT)]
    pub urgent_weight: u32,

    /// Bounded waiting: a task starting longer than this after it became
    /// due is counted in celeriac_tasks_wait_exceeded_total and flagged in
    /// its `started` event. `QUEUE=DURATION` for one queue (repeat the
    /// flag), `DURATION` for every other queue.
    #[arg(
        long,
        env = "CELERIAC_WAIT_THRESHOLD",
        value_delimiter = ',',
        value_name = "[QUEUE=]DURATION"
    )]
    pub wait_threshold: Vec<WaitThreshold>,
}

impl UrgencyArgs {
    /// Sets these options on `builder`.
    pub fn apply(&self, mut builder: WorkerBuilder) -> WorkerBuilder {
        builder = builder.urgent_weight(self.urgent_weight);
        for wait in &self.wait_threshold {
            builder = match &wait.queue {
                Some(queue) => builder.wait_threshold(queue.clone(), wait.threshold),
                None => builder.default_wait_threshold(wait.threshold),
            };
        }
        builder
    }
}

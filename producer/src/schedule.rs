//! When periodic work fires: [`Schedule`] (an interval or a cron
//! expression) and the [`Overlap`] policy for a run that is still going.
//!
//! Every replica of `beat` must compute the same tick times, so no tick
//! depends on when a process started:
//! - an interval of `p` seconds fires at every multiple of `p` since the Unix
//!   epoch (an interval of 60 s fires on the minute, 3600 s on the hour);
//! - a cron expression is evaluated in UTC.
//!
//! The shortest interval is [`MIN_INTERVAL`] (one second): tick keys carry
//! the tick time in whole Unix seconds, so two ticks must never share a
//! second.
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use celeriac_producer::schedule::{Overlap, Schedule};
//!
//! let every_minute = Schedule::interval_secs(60.0)?;
//! let t = UNIX_EPOCH + Duration::from_secs(90);
//! assert_eq!(every_minute.next_after(t), Some(UNIX_EPOCH + Duration::from_secs(120)));
//!
//! let nightly = Schedule::cron("30 2 * * *")?;
//! assert!(nightly.less_often_than(&every_minute));
//! assert_eq!("queue".parse::<Overlap>()?, Overlap::Queue);
//! # Ok::<(), celeriac_producer::schedule::ScheduleError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};

/// The shortest interval a [`Schedule`] accepts.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// How many fires of a cron expression [`Schedule::period`] averages over.
const PERIOD_SAMPLE: usize = 1000;

/// A fixed instant (2000-01-01T00:00:00Z) from which a cron expression's
/// period is measured, so the period never depends on the current time.
const PERIOD_REFERENCE_SECS: i64 = 946_684_800;

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The interval is not a positive finite number of seconds.
    #[error("interval must be a positive finite number of seconds, got {0}")]
    IntervalNotPositive(f64),
    /// The interval is shorter than [`MIN_INTERVAL`].
    #[error("interval of {secs} s is shorter than the minimum of {} s", MIN_INTERVAL.as_secs())]
    IntervalTooShort {
        /// The interval asked for, in seconds.
        secs: f64,
    },
    /// The cron expression does not parse.
    #[error("invalid cron expression {expr:?}: {reason} (expected 5 fields `minute hour day-of-month month day-of-week`, or 6 with seconds first)")]
    Cron {
        /// The expression as given.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cron expression parses but never matches a real time (such as
    /// February 30).
    #[error("cron expression {expr:?} never fires")]
    NeverFires {
        /// The expression as given.
        expr: String,
    },
    /// An overlap policy other than `skip`, `queue` or `allow`.
    #[error("unknown overlap policy {0:?}: expected skip, queue or allow")]
    Overlap(String),
}

/// A parsed cron expression, evaluated in UTC.
///
/// Built by [`Schedule::cron`]; shows as the expression it was parsed from.
#[derive(Clone)]
pub struct CronExpr(std::sync::Arc<CronInner>);

struct CronInner {
    expr: String,
    cron: croner::Cron,
    period: Duration,
}

impl CronExpr {
    /// The expression as given.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::schedule::Schedule;
    ///
    /// let Schedule::Cron(c) = Schedule::cron("*/5 * * * *")? else { unreachable!() };
    /// assert_eq!(c.as_str(), "*/5 * * * *");
    /// # Ok::<(), celeriac_producer::schedule::ScheduleError>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0.expr
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronExpr").field(&self.0.expr).finish()
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.expr)
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.0.expr == other.0.expr
    }
}

/// When a periodic task or workflow fires.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_producer::schedule::Schedule;
///
/// // A number is an interval in seconds, anything else a cron expression.
/// let s: Schedule = "90".parse()?;
/// assert_eq!(s, Schedule::Interval(Duration::from_secs(90)));
/// let c: Schedule = "0 * * * *".parse()?;
/// assert_eq!(c.period(), Duration::from_secs(3600));
/// # Ok::<(), celeriac_producer::schedule::ScheduleError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Fires at every multiple of the interval since the Unix epoch.
    Interval(Duration),
    /// Fires when the cron expression matches, in UTC.
    Cron(CronExpr),
}

impl Schedule {
    /// An interval of `secs` seconds (fractions allowed), at least
    /// [`MIN_INTERVAL`].
    ///
    /// # Errors
    ///
    /// [`ScheduleError::IntervalNotPositive`] for zero, negative, NaN or
    /// infinite values; [`ScheduleError::IntervalTooShort`] under one second.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::schedule::Schedule;
    ///
    /// assert!(Schedule::interval_secs(1.5).is_ok());
    /// assert!(Schedule::interval_secs(0.5).is_err());
    /// assert!(Schedule::interval_secs(f64::NAN).is_err());
    /// ```
    pub fn interval_secs(secs: f64) -> Result<Schedule, ScheduleError> {
        if !secs.is_finite() || secs <= 0.0 {
            return Err(ScheduleError::IntervalNotPositive(secs));
        }
        if secs < MIN_INTERVAL.as_secs_f64() {
            return Err(ScheduleError::IntervalTooShort { secs });
        }
        // Finite and at least one second: `try_from` only fails past ~584
        // billion years, which is still an error worth naming.
        Duration::try_from_secs_f64(secs)
            .map(Schedule::Interval)
            .map_err(|_| ScheduleError::IntervalNotPositive(secs))
    }

    /// A cron expression: 5 fields (`minute hour day-of-month month
    /// day-of-week`) or 6 with seconds first, evaluated in UTC. Names
    /// (`MON`, `JAN`), ranges, steps, lists and `@hourly`-style nicknames
    /// are understood.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Cron`] says what does not parse;
    /// [`ScheduleError::NeverFires`] for an expression that matches no real
    /// time.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::schedule::Schedule;
    ///
    /// assert!(Schedule::cron("0 9 * * MON-FRI").is_ok());
    /// assert!(Schedule::cron("*/10 * * * * *").is_ok()); // every 10 seconds
    /// let err = Schedule::cron("61 * * * *").unwrap_err();
    /// assert!(err.to_string().contains("61 * * * *"));
    /// ```
    pub fn cron(expr: &str) -> Result<Schedule, ScheduleError> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(expr).map_err(|e| ScheduleError::Cron {
            expr: expr.to_owned(),
            reason: e.to_string(),
        })?;
        let never = || ScheduleError::NeverFires {
            expr: expr.to_owned(),
        };
        let reference =
            DateTime::<Utc>::from_timestamp(PERIOD_REFERENCE_SECS, 0).ok_or_else(never)?;
        let mut fires = cron.iter_after(reference).take(PERIOD_SAMPLE);
        let first = fires.next().ok_or_else(never)?;
        let (count, last) = fires.fold((0u32, first), |(n, _), t| (n + 1, t));
        let period = if count == 0 {
            // One fire only in the searchable future: as rare as it gets.
            Duration::MAX
        } else {
            (last - first)
                .to_std()
                .map_err(|_| never())?
                .checked_div(count)
                .unwrap_or(Duration::MAX)
        };
        Ok(Schedule::Cron(CronExpr(std::sync::Arc::new(CronInner {
            expr: expr.to_owned(),
            cron,
            period,
        }))))
    }

    /// The first tick strictly after `t`, or `None` when there is none (a
    /// cron expression whose fires end, or a time out of range).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use celeriac_producer::schedule::Schedule;
    ///
    /// let s = Schedule::interval_secs(10.0)?;
    /// let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
    /// assert_eq!(s.next_after(at(20)), Some(at(30)));
    /// assert_eq!(s.next_after(at(21)), Some(at(30)));
    /// let c = Schedule::cron("0 * * * *")?;
    /// assert_eq!(c.next_after(at(10)), Some(at(3600)));
    /// # Ok::<(), celeriac_producer::schedule::ScheduleError>(())
    /// ```
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        match self {
            Schedule::Interval(p) => {
                let p = p.as_nanos() as i128;
                let now = nanos_since_epoch(t);
                let k = now.div_euclid(p) + 1;
                from_nanos(k.checked_mul(p)?)
            }
            Schedule::Cron(c) => {
                let t = DateTime::<Utc>::from(t);
                c.0.cron
                    .find_next_occurrence(&t, false)
                    .ok()
                    .map(SystemTime::from)
            }
        }
    }

    /// The latest tick at or before `t`, or `None` when there is none.
    ///
    /// `beat` uses it to find the one missed tick it may still enqueue.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use celeriac_producer::schedule::Schedule;
    ///
    /// let s = Schedule::interval_secs(10.0)?;
    /// let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
    /// assert_eq!(s.latest_at_or_before(at(30)), Some(at(30)));
    /// assert_eq!(s.latest_at_or_before(at(39)), Some(at(30)));
    /// # Ok::<(), celeriac_producer::schedule::ScheduleError>(())
    /// ```
    pub fn latest_at_or_before(&self, t: SystemTime) -> Option<SystemTime> {
        match self {
            Schedule::Interval(p) => {
                let p = p.as_nanos() as i128;
                let now = nanos_since_epoch(t);
                from_nanos(now.div_euclid(p).checked_mul(p)?)
            }
            Schedule::Cron(c) => {
                let t = DateTime::<Utc>::from(t);
                c.0.cron
                    .find_previous_occurrence(&t, true)
                    .ok()
                    .map(SystemTime::from)
            }
        }
    }

    /// The typical time between two ticks: the interval itself, or for a
    /// cron expression the mean gap between its first 1,000 fires after
    /// 2000-01-01T00:00:00Z (a fixed instant, so every process agrees).
    ///
    /// The mean, not the longest gap: `0 9 * * MON-FRI` is "daily-ish"
    /// (about 1.4 days), not "every three days" because of the weekend.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use celeriac_producer::schedule::Schedule;
    ///
    /// assert_eq!(Schedule::cron("*/15 * * * *")?.period(), Duration::from_secs(900));
    /// assert_eq!(Schedule::interval_secs(2.5)?.period(), Duration::from_millis(2500));
    /// # Ok::<(), celeriac_producer::schedule::ScheduleError>(())
    /// ```
    pub fn period(&self) -> Duration {
        match self {
            Schedule::Interval(p) => *p,
            Schedule::Cron(c) => c.0.period,
        }
    }

    /// Whether this schedule fires less often than `other` (its
    /// [`period`](Schedule::period) is longer). A child scheduled less often
    /// than its parent is an error in a flow.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::schedule::Schedule;
    ///
    /// let parent = Schedule::interval_secs(60.0)?;
    /// let hourly = Schedule::cron("@hourly")?;
    /// assert!(hourly.less_often_than(&parent));
    /// assert!(!parent.less_often_than(&hourly));
    /// assert!(!parent.less_often_than(&Schedule::cron("* * * * *")?));
    /// # Ok::<(), celeriac_producer::schedule::ScheduleError>(())
    /// ```
    pub fn less_often_than(&self, other: &Schedule) -> bool {
        self.period() > other.period()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Interval(p) => write!(f, "every {}s", p.as_secs_f64()),
            Schedule::Cron(c) => write!(f, "cron {:?}", c.0.expr),
        }
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// A number is an interval in seconds; anything else is a cron
    /// expression.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<f64>() {
            Ok(secs) => Schedule::interval_secs(secs),
            Err(_) => Schedule::cron(s),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    /// An integer or float is an interval in seconds; a string is parsed as
    /// with [`FromStr`].
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        let schedule = match Raw::deserialize(d)? {
            Raw::Secs(secs) => Schedule::interval_secs(secs),
            Raw::Text(s) => s.parse(),
        };
        schedule.map_err(serde::de::Error::custom)
    }
}

/// What `beat` does at a tick while the previous run of the same entry is
/// still going.
///
/// # Examples
///
/// ```
/// use celeriac_producer::schedule::Overlap;
///
/// assert_eq!(Overlap::default(), Overlap::Skip);
/// assert_eq!("allow".parse::<Overlap>()?, Overlap::Allow);
/// assert!("sometimes".parse::<Overlap>().is_err());
/// assert_eq!(Overlap::Queue.to_string(), "queue");
/// # Ok::<(), celeriac_producer::schedule::ScheduleError>(())
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Do not enqueue this tick; it is logged and counted as skipped.
    #[default]
    Skip,
    /// Enqueue this tick once the previous run finishes; at most one run
    /// waits, later ticks meanwhile are skipped.
    Queue,
    /// Enqueue anyway: runs may overlap.
    Allow,
}

impl Overlap {
    /// The policy's name as written in YAML.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(celeriac_producer::schedule::Overlap::Skip.as_str(), "skip");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Overlap {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "skip" => Ok(Overlap::Skip),
            "queue" => Ok(Overlap::Queue),
            "allow" => Ok(Overlap::Allow),
            _ => Err(ScheduleError::Overlap(s.to_owned())),
        }
    }
}

/// Seconds since the Unix epoch of a tick, as used in tick keys.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::from_millis(61_500);
/// assert_eq!(celeriac_producer::schedule::unix_secs(t), 61);
/// ```
pub fn unix_secs(t: SystemTime) -> i64 {
    nanos_since_epoch(t).div_euclid(1_000_000_000) as i64
}

fn nanos_since_epoch(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn from_nanos(n: i128) -> Option<SystemTime> {
    let secs = u64::try_from(n.div_euclid(1_000_000_000)).ok();
    let sub = n.rem_euclid(1_000_000_000) as u32;
    match secs {
        Some(s) => UNIX_EPOCH.checked_add(Duration::new(s, sub)),
        None => {
            let back = u64::try_from((-n).div_euclid(1_000_000_000)).ok()?;
            let back_sub = (-n).rem_euclid(1_000_000_000) as u32;
            UNIX_EPOCH.checked_sub(Duration::new(back, back_sub))
        }
    }
}

#[cfg(test)]
mod tests;

//! Retry policy and exponential backoff with jitter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often a failing task is retried, and how long it waits in between.
///
/// # Examples
///
/// ```
/// use celeriac_schema::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy { max_retries: 5, backoff: Backoff::default() };
/// assert!(policy.allows_retry_after(4));
/// assert!(!policy.allows_retry_after(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first run; 0 means the task runs once.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Waiting time between attempts.
    #[serde(default)]
    pub backoff: Backoff,
}

fn default_max_retries() -> u32 {
    RetryPolicy::DEFAULT_MAX_RETRIES
}

impl RetryPolicy {
    /// Retries a task gets unless the sender says otherwise.
    pub const DEFAULT_MAX_RETRIES: u32 = 3;

    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_retries: 0,
            backoff: Backoff::default(),
        }
    }

    /// Whether a run with this (0-based) attempt number that failed may be
    /// retried.
    pub fn allows_retry_after(&self, attempt: u32) -> bool {
        attempt < self.max_retries
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: Self::DEFAULT_MAX_RETRIES,
            backoff: Backoff::default(),
        }
    }
}

/// Exponential backoff: attempt `n` (0-based) that failed waits
/// `min(max_ms, initial_ms * multiplier^n)` (rounded down to whole
/// milliseconds), less a random share of up to
/// `jitter` of it, before attempt `n + 1`.
///
/// So the wait after attempt `n` lies in the window
/// `[base * (1 - jitter), base]`, where `base` is the capped exponential
/// value; [`Backoff::window`] gives that window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Wait after the first failure, in milliseconds.
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Growth factor per attempt (1.0 for a constant wait).
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Longest wait, in milliseconds.
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    /// Share of the wait that is randomised away, between 0.0 and 1.0.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

fn default_initial_ms() -> u64 {
    Backoff::default().initial_ms
}
fn default_multiplier() -> f64 {
    Backoff::default().multiplier
}
fn default_max_ms() -> u64 {
    Backoff::default().max_ms
}
fn default_jitter() -> f64 {
    Backoff::default().jitter
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 1_000,
            multiplier: 2.0,
            max_ms: 3_600_000,
            jitter: 0.25,
        }
    }
}

impl Backoff {
    /// A fixed wait with no growth and no jitter.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use celeriac_schema::Backoff;
    ///
    /// let b = Backoff::fixed(Duration::from_secs(2));
    /// assert_eq!(b.delay(7, 0.5), Duration::from_secs(2));
    /// ```
    pub fn fixed(wait: Duration) -> Self {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        Backoff {
            initial_ms: ms,
            multiplier: 1.0,
            max_ms: ms,
            jitter: 0.0,
        }
    }

    /// The shortest and longest wait after the failed attempt `attempt`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use celeriac_schema::Backoff;
    ///
    /// let b = Backoff { initial_ms: 1000, multiplier: 2.0, max_ms: 60_000, jitter: 0.5 };
    /// assert_eq!(b.window(2), (Duration::from_millis(2000), Duration::from_millis(4000)));
    /// assert_eq!(b.window(30).1, Duration::from_secs(60));
    /// ```
    pub fn window(&self, attempt: u32) -> (Duration, Duration) {
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let raw = self.initial_ms as f64 * multiplier.powi(exp);
        // 0 * inf is NaN: a zero initial wait stays zero at any attempt.
        let base = if self.initial_ms == 0 {
            0.0
        } else if raw.is_finite() {
            // Whole milliseconds, so that the window's ends never cross.
            raw.min(self.max_ms as f64).floor()
        } else {
            self.max_ms as f64
        };
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let low = base * (1.0 - jitter);
        (
            Duration::from_millis(low.ceil() as u64),
            Duration::from_millis(base as u64),
        )
    }

    /// The wait after the failed attempt `attempt`, with `random` (in
    /// `[0, 1)`) choosing the point inside [`Backoff::window`].
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let (low, high) = self.window(attempt);
        let span = high.saturating_sub(low).as_millis() as f64;
        let r = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Spans past 2^53 ms round up as floats: stay inside the window.
        (low + Duration::from_millis((span * r) as u64)).min(high)
    }

    /// [`Backoff::delay`] with a random point from the thread's generator.
    pub fn delay_with_jitter(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

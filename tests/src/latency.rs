//! A fixed log-linear latency histogram for the benchmark programs: about
//! 30 KiB, 1.6% resolution, safe to record into from many threads, and
//! never growing, so that measuring does not inflate the memory being
//! measured.
//!
//! ```
//! use celeriac_tests::latency::Histogram;
//!
//! let h = Histogram::new();
//! for v in [10, 20, 30, 1_000] {
//!     h.record(v);
//! }
//! assert_eq!(h.count(), 4);
//! assert_eq!(h.percentile(0.5), 20);
//! assert_eq!(h.max(), 1_000);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// Values below this are their own bucket.
const EXACT: u64 = 128;
/// Buckets per power of two above [`EXACT`].
const SUB_BUCKETS: u64 = 64;
/// Number of buckets: every `u64` has one.
pub const BUCKETS: usize = (EXACT + (64 - 7) * SUB_BUCKETS) as usize;

/// Counts of values (microseconds, usually) in log-linear buckets, and the
/// largest value seen.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Self {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            max: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn record(&self, value: u64) {
        self.max.fetch_max(value, Ordering::Relaxed);
        self.counts[bucket(value)].fetch_add(1, Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The value at quantile `p` (0..=1), to the bucket's resolution and
    /// never above [`Histogram::max`]; 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        percentile(&counts, total, p).min(self.max())
    }
}

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

    #[test]
    fn percentiles_never_exceed_the_max() {
        let h = Histogram::new();
        h.record(70_887);
        assert_eq!(h.percentile(0.999), 70_887);
    }

    #[test]
    fn an_empty_histogram_reports_zero() {
        let h = Histogram::new();
        assert_eq!((h.count(), h.max(), h.percentile(0.99)), (0, 0, 0));
    }
}

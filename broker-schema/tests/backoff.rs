#![allow(clippy::unwrap_used)]
//! Backoff windows and delays: inside the window, growing, capped, and sane
//! whatever the policy says.

use std::time::Duration;

use celeriac_schema::{Backoff, RetryPolicy};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A deterministic generator of floats in `[0, 1)` and integers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Policies worth checking: sensible ones, random ones and odd ones.
fn policies() -> Vec<Backoff> {
    let mut out = vec![
        Backoff::default(),
        Backoff::fixed(Duration::from_secs(2)),
        Backoff::fixed(Duration::ZERO),
        Backoff {
            initial_ms: 1000,
            multiplier: 1.5,
            max_ms: u64::MAX,
            jitter: 0.0,
        },
        Backoff {
            initial_ms: 3,
            multiplier: 1.1,
            max_ms: 50,
            jitter: 0.9,
        },
        Backoff {
            initial_ms: 0,
            multiplier: 2.0,
            max_ms: 3_600_000,
            jitter: 0.5,
        },
        Backoff {
            initial_ms: 10_000,
            multiplier: 2.0,
            max_ms: 100,
            jitter: 0.25,
        },
        Backoff {
            initial_ms: u64::MAX,
            multiplier: 10.0,
            max_ms: u64::MAX,
            jitter: 0.5,
        },
    ];
    let odd_multipliers = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -3.0,
        0.0,
        0.5,
        1e308,
    ];
    let odd_jitters = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.5,
        1.0,
        1.5,
        7.0,
    ];
    for (m, j) in odd_multipliers.into_iter().zip(odd_jitters) {
        out.push(Backoff {
            initial_ms: 1000,
            multiplier: m,
            max_ms: 60_000,
            jitter: j,
        });
    }
    let mut rng = Rng(0x0dd_ba11);
    for _ in 0..200 {
        out.push(Backoff {
            initial_ms: rng.next() % 100_000,
            multiplier: 1.0 + rng.unit() * 4.0,
            max_ms: rng.next() % 10_000_000,
            jitter: rng.unit(),
        });
    }
    out
}

const ATTEMPTS: [u32; 12] = [0, 1, 2, 3, 5, 10, 31, 64, 100, 1_100, 1 << 20, u32::MAX];

#[test]
fn the_default_schedule() {
    let b = Backoff::default();
    assert_eq!(
        b,
        Backoff {
            initial_ms: 1_000,
            multiplier: 2.0,
            max_ms: 3_600_000,
            jitter: 0.25
        }
    );
    assert_eq!(b.window(0), (ms(750), ms(1_000)));
    assert_eq!(b.window(1), (ms(1_500), ms(2_000)));
    assert_eq!(b.window(2), (ms(3_000), ms(4_000)));
    assert_eq!(b.window(3), (ms(6_000), ms(8_000)));
    // 2^12 s is past the hour: capped.
    assert_eq!(b.window(12), (ms(2_700_000), ms(3_600_000)));
    assert_eq!(b.delay(0, 0.0), ms(750));
    assert_eq!(b.delay(0, 0.5), ms(875));
    assert_eq!(b.delay(0, 0.999_999), ms(999));
}

#[test]
fn the_window_never_inverts_and_the_delay_stays_inside() {
    let mut rng = Rng(0xfeed);
    for b in policies() {
        for attempt in ATTEMPTS {
            let (low, high) = b.window(attempt);
            assert!(low <= high, "{b:?} attempt {attempt}: {low:?} > {high:?}");
            for r in [0.0, 0.25, 0.5, 0.999_999, 1.0, rng.unit(), rng.unit()] {
                let d = b.delay(attempt, r);
                assert!(low <= d && d <= high, "{b:?} {attempt} {r}: {d:?}");
            }
            for _ in 0..5 {
                let d = b.delay_with_jitter(attempt);
                assert!(low <= d && d <= high, "{b:?} {attempt}: {d:?}");
            }
        }
    }
}

#[test]
fn the_base_never_shrinks_as_attempts_grow() {
    for b in policies() {
        let mut previous = Duration::ZERO;
        let later = ATTEMPTS.into_iter().filter(|&a| a >= 200);
        for attempt in (0..200).chain(later) {
            let high = b.window(attempt).1;
            assert!(high >= previous, "{b:?} attempt {attempt}");
            previous = high;
        }
    }
}

#[test]
fn the_wait_is_capped_at_max_ms() {
    for b in policies() {
        for attempt in ATTEMPTS {
            assert!(b.window(attempt).1 <= ms(b.max_ms), "{b:?} {attempt}");
        }
        if b.initial_ms > 0 && b.multiplier.is_finite() && b.multiplier >= 1.5 {
            assert_eq!(b.window(u32::MAX).1, ms(b.max_ms), "{b:?}");
        }
    }
}

#[test]
fn the_base_is_whole_milliseconds_of_the_exponential() {
    let b = Backoff {
        initial_ms: 1000,
        multiplier: 1.5,
        max_ms: u64::MAX,
        jitter: 0.0,
    };
    // 1000 * 1.5^5 = 7593.75, rounded down.
    assert_eq!(b.window(5), (ms(7_593), ms(7_593)));
    let b = Backoff {
        initial_ms: 3,
        multiplier: 1.5,
        max_ms: 100,
        jitter: 0.25,
    };
    // base 4.5 -> 4; low ceil(4 * 0.75) = 3.
    assert_eq!(b.window(1), (ms(3), ms(4)));
}

#[test]
fn zero_jitter_gives_a_fixed_delay() {
    for b in policies() {
        let b = Backoff { jitter: 0.0, ..b };
        for attempt in ATTEMPTS {
            let (low, high) = b.window(attempt);
            assert_eq!(low, high, "{b:?} {attempt}");
            for r in [0.0, 0.3, 0.999, 1.0, -1.0, 2.0, f64::NAN] {
                assert_eq!(b.delay(attempt, r), high);
            }
        }
    }
}

#[test]
fn fixed_backoff_waits_the_same_every_time() {
    let b = Backoff::fixed(Duration::from_millis(1_234));
    for attempt in ATTEMPTS {
        assert_eq!(b.window(attempt), (ms(1_234), ms(1_234)));
        assert_eq!(b.delay_with_jitter(attempt), ms(1_234));
    }
}

#[test]
fn a_zero_initial_wait_stays_zero() {
    let b = Backoff {
        initial_ms: 0,
        multiplier: 2.0,
        max_ms: 3_600_000,
        jitter: 0.5,
    };
    for attempt in ATTEMPTS {
        assert_eq!(b.window(attempt), (ms(0), ms(0)), "attempt {attempt}");
    }
}

#[test]
fn an_initial_wait_over_the_cap_is_capped() {
    let b = Backoff {
        initial_ms: 10_000,
        multiplier: 2.0,
        max_ms: 100,
        jitter: 0.0,
    };
    assert_eq!(b.window(0), (ms(100), ms(100)));
}

#[test]
fn odd_multipliers_mean_a_constant_wait() {
    for m in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -2.0, 0.0, 0.999] {
        let b = Backoff {
            initial_ms: 1000,
            multiplier: m,
            max_ms: 60_000,
            jitter: 0.0,
        };
        for attempt in ATTEMPTS {
            assert_eq!(b.window(attempt), (ms(1000), ms(1000)), "{m} {attempt}");
        }
    }
    // A huge but finite multiplier overflows to the cap.
    let b = Backoff {
        initial_ms: 1000,
        multiplier: 1e308,
        max_ms: 60_000,
        jitter: 0.0,
    };
    assert_eq!(b.window(0), (ms(1000), ms(1000)));
    assert_eq!(b.window(2), (ms(60_000), ms(60_000)));
}

#[test]
fn odd_jitters_are_clamped() {
    let with = |jitter| Backoff {
        initial_ms: 1000,
        multiplier: 2.0,
        max_ms: 60_000,
        jitter,
    };
    // Above 1: the whole wait may be randomised away.
    assert_eq!(with(1.5).window(1), (ms(0), ms(2000)));
    assert_eq!(with(1.0).window(1), (ms(0), ms(2000)));
    // Below 0 or not a number: no jitter.
    for j in [-0.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(with(j).window(1), (ms(2000), ms(2000)), "{j}");
    }
}

#[test]
fn odd_random_points_are_clamped() {
    let b = Backoff {
        initial_ms: 1000,
        multiplier: 2.0,
        max_ms: 60_000,
        jitter: 0.5,
    };
    assert_eq!(b.delay(0, -1.0), ms(500));
    assert_eq!(b.delay(0, f64::NAN), ms(500));
    assert_eq!(b.delay(0, f64::NEG_INFINITY), ms(500));
    assert_eq!(b.delay(0, 7.0), ms(1000));
    assert_eq!(b.delay(0, f64::INFINITY), ms(500));
}

#[test]
fn retry_policy_counts_retries_after_the_first_run() {
    let p = RetryPolicy::default();
    assert_eq!(p.max_retries, 3);
    assert_eq!(p.backoff, Backoff::default());
    // Attempts 0, 1 and 2 may be retried; attempt 3 is the last run.
    assert!(p.allows_retry_after(0));
    assert!(p.allows_retry_after(2));
    assert!(!p.allows_retry_after(3));
    assert!(!p.allows_retry_after(u32::MAX));
    let never = RetryPolicy::never();
    assert_eq!(never.max_retries, 0);
    assert!(!never.allows_retry_after(0));
}

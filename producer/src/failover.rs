//! Publishing again after the broker connection failed mid-send.
//!
//! When a node dies, the publishes in flight on its connections get no
//! confirm. A send then takes a new connection (to another node, see
//! [`crate::addresses`]) and publishes the tasks whose confirm it has not
//! seen, for as long as its failover budget lasts. A task whose confirm
//! was lost with the connection may so reach the broker twice; keyed tasks
//! run once all the same (the store deduplicates them).
//!
//! The state store can fail over too (a Redis primary replaced through
//! Sentinel): a send whose enqueue-key claim got no answer claims again
//! for as long as its store budget lasts.

use std::time::{Duration, Instant};

use tracing::warn;

use crate::error::Error;

/// The failover budget of a producer with several addresses.
pub(crate) const DEFAULT_BUDGET: Duration = Duration::from_secs(30);
/// How long a send retries enqueue-key claims that the state store did
/// not answer, by default.
pub(crate) const DEFAULT_STORE_BUDGET: Duration = Duration::from_secs(15);
/// The longest pause between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// [`DEFAULT_BUDGET`] for a list of addresses, none for one address (a
/// failed send is then the caller's to retry, as it always was).
pub(crate) fn default_budget(url: &str) -> Duration {
    if crate::addresses::split(url).len() > 1 {
        DEFAULT_BUDGET
    } else {
        Duration::ZERO
    }
}

/// Whether a failed publish may go through on another connection: the
/// connection or channel failed, or the broker nacked or did not confirm.
/// An unroutable task, a task too large or a bad name would fail again.
pub(crate) fn worth_retrying(error: &Error) -> bool {
    matches!(
        error,
        Error::Unreachable { .. }
            | Error::Amqp { .. }
            | Error::ConfirmTimeout { .. }
            | Error::Nacked { .. }
    )
}

/// The retries of one send.
pub(crate) struct Retry {
    deadline: Instant,
    attempts: u32,
}

impl Retry {
    /// Retries until `budget` has passed.
    pub(crate) fn new(budget: Duration) -> Retry {
        Retry {
            deadline: Instant::now() + budget,
            attempts: 0,
        }
    }

    /// After `error` with `left` tasks unconfirmed: waits and returns true
    /// when another attempt is worth it and within the budget.
    pub(crate) async fn after(&mut self, error: &Error, left: usize) -> bool {
        if !worth_retrying(error) {
            return false;
        }
        let Some(delay) = self.next_delay() else {
            return false;
        };
        warn!(%error, left, attempt = self.attempts, "publish failed; publishing the unconfirmed tasks again on a new connection");
        tokio::time::sleep(delay).await;
        true
    }

    /// The pause before the next attempt, counted, or `None` when it would
    /// end past the budget.
    fn next_delay(&mut self) -> Option<Duration> {
        let delay = delay(self.attempts);
        if Instant::now() + delay >= self.deadline {
            return None;
        }
        self.attempts += 1;
        Some(delay)
    }

    /// After the state store failed to answer `claims` enqueue-key claims:
    /// waits and returns true when the store may answer again (it was
    /// unreachable, for example during a primary failover) within the
    /// budget. Claiming again is safe: a key already bound to the same task
    /// id is claimed by it again.
    pub(crate) async fn after_store(&mut self, error: &Error, claims: usize) -> bool {
        if !matches!(
            error,
            Error::Schema(celeriac_schema::Error::StoreUnavailable { .. })
        ) {
            return false;
        }
        let Some(delay) = self.next_delay() else {
            return false;
        };
        warn!(%error, claims, attempt = self.attempts, "state store did not answer; claiming the enqueue keys again");
        tokio::time::sleep(delay).await;
        true
    }
}

/// 50 ms doubling up to [`MAX_DELAY`].
fn delay(attempts: u32) -> Duration {
    Duration::from_millis(50)
        .saturating_mul(1u32 << attempts.min(6))
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lists_fail_over_by_default() {
        assert_eq!(default_budget("amqp://a/%2f"), Duration::ZERO);
        assert_eq!(default_budget("amqp://a/%2f,amqp://b/%2f"), DEFAULT_BUDGET);
    }

    #[test]
    fn the_delay_grows_and_is_capped() {
        assert_eq!(delay(0), Duration::from_millis(50));
        assert_eq!(delay(1), Duration::from_millis(100));
        assert_eq!(delay(30), MAX_DELAY);
    }

    #[tokio::test]
    async fn errors_that_would_repeat_are_not_retried() {
        let mut retry = Retry::new(Duration::from_secs(60));
        let unroutable = Error::InvalidOptions("bad".into());
        assert!(!retry.after(&unroutable, 1).await);
        let nacked = Error::Nacked {
            task_id: "t".into(),
        };
        assert!(retry.after(&nacked, 1).await);
        assert_eq!(retry.attempts, 1);
    }

    #[tokio::test]
    async fn only_an_unreachable_store_is_claimed_again() {
        let mut retry = Retry::new(Duration::from_secs(60));
        let down = Error::Schema(celeriac_schema::Error::StoreUnavailable {
            op: "claim",
            message: "broken pipe".into(),
        });
        assert!(retry.after_store(&down, 2).await);
        let corrupt = Error::Schema(celeriac_schema::Error::StoreData {
            what: "record",
            message: "bad".into(),
        });
        assert!(!retry.after_store(&corrupt, 2).await);
        assert!(!Retry::new(Duration::ZERO).after_store(&down, 2).await);
    }

    #[tokio::test]
    async fn no_retry_once_the_budget_is_spent() {
        let mut retry = Retry::new(Duration::ZERO);
        let lost = Error::ConfirmTimeout {
            after: Duration::from_secs(1),
        };
        assert!(!retry.after(&lost, 3).await);
    }
}

//! Delay tolerance: deferrable tasks wait in the broker and are promoted to
//! the urgent work queue before their tolerance runs out (SPEC.md
//! section 19).
//!
//! Every logical queue has, besides its work queue (the *urgent* queue),
//! one *class queue* per rung of the [`TOLERANCE_CLASSES_MS`] ladder:
//! `{ns}.q.{queue}.tol.{k}`. A class queue holds its messages for the
//! class's TTL (one queue-level `x-message-ttl`, so they expire in arrival
//! order), then the broker dead-letters them through the work exchange
//! into the urgent work queue: no process has to move them. Workers consume
//! class queues too, but urgent work first, so a deferrable task runs early
//! when there is room and is promoted when there is not.
//!
//! A task whose deadline is `remaining` away goes into the largest class
//! whose TTL leaves at least the [`margin_ms`] before the deadline; with
//! less time left than the smallest class plus its margin it goes straight
//! to the urgent queue.

use std::time::Duration;

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::topology::{
    validate_name, ArgValue, Argument, Declaration, Topology, DELAY_LEVELS, MAX_DELAY,
};

/// The TTLs of the tolerance classes, in milliseconds, shortest first:
/// 1 s, 5 s, 30 s, 2 min, 10 min and 1 h. Class `k` is
/// `TOLERANCE_CLASSES_MS[k]`.
pub const TOLERANCE_CLASSES_MS: [u64; 6] = [1_000, 5_000, 30_000, 120_000, 600_000, 3_600_000];

/// The number of tolerance classes per logical queue.
pub const TOLERANCE_CLASSES: u32 = TOLERANCE_CLASSES_MS.len() as u32;

/// The smallest safety margin between a promotion and the deadline.
pub const MIN_MARGIN_MS: u64 = 1_000;

/// The longest tolerance a task may have: the longest delay.
pub const MAX_TOLERANCE: Duration = MAX_DELAY;

/// The safety margin kept between a class's promotion and a deadline
/// `remaining_ms` away: a tenth of it, at least [`MIN_MARGIN_MS`].
pub fn margin_ms(remaining_ms: u64) -> u64 {
    (remaining_ms / 10).max(MIN_MARGIN_MS)
}

/// The class a task whose deadline is `remaining_ms` away waits in, or
/// `None` when it must go to the urgent queue.
///
/// # Examples
///
/// ```
/// use celeriac_schema::tolerance::class_for;
///
/// assert_eq!(class_for(1_500), None); // 1.5 s: no time to wait
/// assert_eq!(class_for(2_000), Some(0)); // waits up to 1 s
/// assert_eq!(class_for(60_000), Some(2)); // waits up to 30 s
/// assert_eq!(class_for(86_400_000), Some(5)); // waits up to 1 h
/// ```
pub fn class_for(remaining_ms: u64) -> Option<u32> {
    let budget = remaining_ms.checked_sub(margin_ms(remaining_ms))?;
    TOLERANCE_CLASSES_MS
        .iter()
        .rposition(|&ttl| ttl <= budget)
        .map(|k| k as u32)
}

/// Checks a tolerance and returns it in milliseconds.
///
/// # Errors
///
/// [`Error::InvalidTolerance`] for zero (leave the tolerance unset for an
/// urgent task) and for more than [`MAX_TOLERANCE`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_schema::tolerance::validate_tolerance;
///
/// assert_eq!(validate_tolerance(Duration::from_secs(30)).unwrap(), 30_000);
/// assert!(validate_tolerance(Duration::ZERO).is_err());
/// assert!(validate_tolerance(Duration::from_secs(100 * 86_400)).is_err());
/// ```
pub fn validate_tolerance(tolerance: Duration) -> Result<u64> {
    let ms = u64::try_from(tolerance.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(Error::InvalidTolerance {
            requested_ms: ms,
            reason: "must be at least 1 ms; leave it unset for a task that cannot wait".into(),
        });
    }
    if tolerance > MAX_TOLERANCE {
        return Err(Error::InvalidTolerance {
            requested_ms: ms,
            reason: format!(
                "exceeds the longest supported tolerance of {} ms",
                MAX_TOLERANCE.as_millis()
            ),
        });
    }
    Ok(ms)
}

impl Topology {
    /// The routing key, and logical name, of class `class` of `queue`:
    /// `{queue}.tol.{class}`.
    pub fn tolerance_key(&self, queue: &str, class: u32) -> String {
        format!("{queue}.tol.{class}")
    }

    /// The broker queue of class `class` of `queue`:
    /// `{ns}.q.{queue}.tol.{class}`.
    ///
    /// # Examples
    ///
    /// ```
    /// let topo = celeriac_schema::Topology::new("shop").unwrap();
    /// assert_eq!(topo.tolerance_queue("emails", 2), "shop.q.emails.tol.2");
    /// ```
    pub fn tolerance_queue(&self, queue: &str, class: u32) -> String {
        self.work_queue(&self.tolerance_key(queue, class))
    }

    /// Arguments of a class queue: quorum, the class TTL, and at-least-once
    /// dead-lettering through the work exchange into `queue`'s urgent work
    /// queue (the promotion). Class numbers past the ladder take its last
    /// rung.
    pub fn tolerance_queue_arguments(&self, queue: &str, class: u32) -> Vec<Argument> {
        let last = TOLERANCE_CLASSES_MS.len() - 1;
        let ttl = TOLERANCE_CLASSES_MS[(class as usize).min(last)];
        vec![
            ("x-queue-type", ArgValue::Str("quorum".into())),
            ("x-message-ttl", ArgValue::Int(ttl as i64)),
            (
                "x-delivery-limit",
                ArgValue::Int(i64::from(self.delivery_limit())),
            ),
            (
                "x-dead-letter-exchange",
                ArgValue::Str(self.work_exchange()),
            ),
            ("x-dead-letter-routing-key", ArgValue::Str(queue.to_owned())),
            (
                "x-dead-letter-strategy",
                ArgValue::Str("at-least-once".into()),
            ),
            ("x-overflow", ArgValue::Str("reject-publish".into())),
        ]
    }

    /// The class queues of `queue` and their bindings: to the work exchange
    /// by their routing key, and to the delay delivery exchange for
    /// deferrable tasks leaving the delay cascade.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an invalid queue name.
    pub fn tolerance_declarations(&self, queue: &str) -> Result<Vec<Declaration>> {
        validate_name("queue", queue)?;
        let mut out = Vec::with_capacity(3 * TOLERANCE_CLASSES_MS.len());
        for class in 0..TOLERANCE_CLASSES {
            let key = self.tolerance_key(queue, class);
            out.push(Declaration::Queue {
                name: self.tolerance_queue(queue, class),
                arguments: self.tolerance_queue_arguments(queue, class),
            });
            out.push(Declaration::QueueBinding {
                queue: self.tolerance_queue(queue, class),
                exchange: self.work_exchange(),
                key: key.clone(),
            });
            out.push(Declaration::QueueBinding {
                queue: self.tolerance_queue(queue, class),
                exchange: self.delay_delivery_exchange(),
                key: format!("{}{key}", "*.".repeat(DELAY_LEVELS as usize)),
            });
        }
        Ok(out)
    }

    /// The routing key (logical queue or class key) `envelope` is routed
    /// by when it is published to `queue` at `now_ms`: its class key when
    /// its deadline leaves room for a class after it becomes due, else
    /// `queue` itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_schema::{Envelope, Topology};
    ///
    /// let topo = Topology::new("shop").unwrap();
    /// let mut env = Envelope::new("ping", rmpv::Value::Nil);
    /// assert_eq!(topo.urgency_key("emails", &env, env.created_at), "emails");
    /// env.tolerance_ms = Some(60_000);
    /// assert_eq!(topo.urgency_key("emails", &env, env.created_at), "emails.tol.2");
    /// // Sent long after it was created: little time left, so urgent.
    /// assert_eq!(topo.urgency_key("emails", &env, env.created_at + 59_000), "emails");
    /// ```
    pub fn urgency_key(&self, queue: &str, envelope: &Envelope, now_ms: u64) -> String {
        let Some(deadline) = envelope.deadline_ms() else {
            return queue.to_owned();
        };
        let from = envelope.due_ms().max(now_ms);
        match class_for(deadline.saturating_sub(from)) {
            Some(class) => self.tolerance_key(queue, class),
            None => queue.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_ladder_is_sorted_and_each_class_keeps_its_margin() {
        assert!(TOLERANCE_CLASSES_MS.windows(2).all(|w| w[0] < w[1]));
        for (k, ttl) in TOLERANCE_CLASSES_MS.iter().enumerate() {
            let smallest = ttl + MIN_MARGIN_MS.max(ttl / 9);
            let chosen = class_for(smallest + 10);
            assert_eq!(chosen, Some(k as u32), "ttl {ttl}");
            assert!(class_for(ttl + 1).is_none_or(|c| (c as usize) < k));
        }
    }

    #[test]
    fn the_class_never_outlasts_the_deadline() {
        for remaining in (0..7_200_000).step_by(997) {
            if let Some(class) = class_for(remaining) {
                let ttl = TOLERANCE_CLASSES_MS[class as usize];
                assert!(ttl + margin_ms(remaining) <= remaining, "{remaining}");
            }
        }
    }

    #[test]
    fn class_arguments_promote_into_the_work_queue() {
        let topo = Topology::new("ns").unwrap();
        let args = topo.tolerance_queue_arguments("emails", 1);
        assert!(args.contains(&("x-message-ttl", ArgValue::Int(5_000))));
        assert!(args.contains(&("x-dead-letter-exchange", ArgValue::Str("ns.work".into()))));
        assert!(args.contains(&("x-dead-letter-routing-key", ArgValue::Str("emails".into()))));
        let over = topo.tolerance_queue_arguments("emails", 99);
        assert!(over.contains(&("x-message-ttl", ArgValue::Int(3_600_000))));
    }

    #[test]
    fn declarations_bind_every_class_to_both_exchanges() {
        let topo = Topology::new("ns").unwrap();
        let decls = topo.tolerance_declarations("emails").unwrap();
        assert_eq!(decls.len(), 3 * TOLERANCE_CLASSES_MS.len());
        let delivery_key = format!("{}emails.tol.0", "*.".repeat(DELAY_LEVELS as usize));
        assert!(decls.contains(&Declaration::QueueBinding {
            queue: "ns.q.emails.tol.0".into(),
            exchange: "ns.delay.deliver".into(),
            key: delivery_key,
        }));
        assert!(topo.tolerance_declarations("bad#name").is_err());
    }

    #[test]
    fn tolerance_bounds_are_checked() {
        assert_eq!(validate_tolerance(Duration::from_millis(1)).unwrap(), 1);
        assert_eq!(
            validate_tolerance(MAX_TOLERANCE).unwrap(),
            MAX_TOLERANCE.as_millis() as u64
        );
        let zero = validate_tolerance(Duration::ZERO).unwrap_err();
        assert_eq!(zero.kind(), "InvalidTolerance");
        let over = validate_tolerance(MAX_TOLERANCE + Duration::from_millis(1)).unwrap_err();
        assert!(over.to_string().contains("longest supported"), "{over}");
    }

    #[test]
    fn a_delayed_task_is_classed_from_its_eta() {
        let topo = Topology::new("ns").unwrap();
        let mut env = Envelope::new("t", rmpv::Value::Nil);
        env.created_at = 1_000;
        env.eta = Some(100_000);
        env.tolerance_ms = Some(6_000);
        assert_eq!(topo.urgency_key("q", &env, 1_000), "q.tol.1");
        env.tolerance_ms = Some(1_500);
        assert_eq!(topo.urgency_key("q", &env, 1_000), "q");
        env.tolerance_ms = Some(0);
        assert_eq!(topo.urgency_key("q", &env, 1_000), "q");
    }
}

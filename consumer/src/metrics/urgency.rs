//! The metrics of deadlines and bounded waiting (SPEC.md section 19).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `celeriac_tasks_deadline_missed_total` | counter | queue, task |
//! | `celeriac_tasks_wait_exceeded_total` | counter | queue |

use prometheus::{IntCounterVec, Registry};

use super::{counter, UNKNOWN_TASK};

/// Deadline misses and waits over a queue's threshold.
#[derive(Debug)]
pub(crate) struct UrgencyMetrics {
    deadline_missed: IntCounterVec,
    wait_exceeded: IntCounterVec,
    tasks: Vec<Box<str>>,
}

impl UrgencyMetrics {
    /// Registers both families, with a series at zero for every queue (and
    /// queue × task) so alert rules see them from the start.
    pub(super) fn new(registry: &Registry, queues: &[String], tasks: &[Box<str>]) -> Self {
        let deadline_missed = counter(
            registry,
            "celeriac_tasks_deadline_missed_total",
            "Tasks that started after their deadline (due time plus delay tolerance).",
            &["queue", "task"],
        );
        let wait_exceeded = counter(
            registry,
            "celeriac_tasks_wait_exceeded_total",
            "Tasks that started more than their queue's wait threshold after they became due.",
            &["queue"],
        );
        for queue in queues {
            wait_exceeded.with_label_values(&[queue.as_str()]);
            for task in tasks.iter().map(|t| &**t).chain([UNKNOWN_TASK]) {
                deadline_missed.with_label_values(&[queue.as_str(), task]);
            }
        }
        UrgencyMetrics {
            deadline_missed,
            wait_exceeded,
            tasks: tasks.to_vec(),
        }
    }

    /// Counts a start of `task` on `queue` after its deadline.
    pub(crate) fn deadline_missed(&self, queue: &str, task: &str) {
        let task = match self.tasks.iter().any(|t| &**t == task) {
            true => task,
            false => UNKNOWN_TASK,
        };
        self.deadline_missed.with_label_values(&[queue, task]).inc();
    }

    /// Counts a start on `queue` over its wait threshold.
    pub(crate) fn wait_exceeded(&self, queue: &str) {
        self.wait_exceeded.with_label_values(&[queue]).inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn series_exist_at_zero_and_count() {
        let registry = Registry::new();
        let m = UrgencyMetrics::new(&registry, &["q".into()], &["ping".into()]);
        m.deadline_missed("q", "ping");
        m.deadline_missed("q", "stray");
        m.wait_exceeded("q");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        for line in [
            "celeriac_tasks_deadline_missed_total{queue=\"q\",task=\"ping\"} 1",
            "celeriac_tasks_deadline_missed_total{queue=\"q\",task=\"unknown\"} 1",
            "celeriac_tasks_wait_exceeded_total{queue=\"q\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}

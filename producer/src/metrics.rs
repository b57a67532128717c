//! Prometheus metrics of producers, registered in the application's own
//! registry.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `celeriac_tasks_sent_total` | counter | queue, task |
//! | `celeriac_tasks_send_failed_total` | counter | queue |
//! | `celeriac_publish_confirm_seconds` | histogram | |
//!
//! `sent` counts tasks the broker confirmed; `send_failed` counts tasks of
//! a send that returned an error (the broker may hold some of them: a
//! failed send is safe to repeat with an idempotency key). The histogram
//! is the time from a task's publish to its confirm, the latency a
//! `send` adds.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// Buckets of the confirm latency, in seconds: 100 µs to 10 s.
const CONFIRM_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The metrics of one or more producers; see the module documentation.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> celeriac_producer::Result<()> {
/// use celeriac_producer::{metrics::ProducerMetrics, Producer};
///
/// let registry = prometheus::Registry::new();
/// let metrics = ProducerMetrics::register(&registry).expect("fresh registry");
/// let producer = Producer::builder("amqp://127.0.0.1:5672/%2f")
///     .metrics(metrics)
///     .connect()
///     .await?;
/// // Serve `registry` on your /metrics endpoint.
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ProducerMetrics {
    sent: IntCounterVec,
    failed: IntCounterVec,
    confirm_seconds: Histogram,
}

impl ProducerMetrics {
    /// Creates the metrics and registers them in `registry`; share the
    /// result between producers that report to the same registry.
    ///
    /// # Errors
    ///
    /// When `registry` already holds metrics of these names (register once
    /// per registry).
    pub fn register(registry: &Registry) -> prometheus::Result<Arc<ProducerMetrics>> {
        let sent = IntCounterVec::new(
            Opts::new(
                "celeriac_tasks_sent_total",
                "Tasks the broker confirmed, by queue and task.",
            ),
            &["queue", "task"],
        )?;
        let failed = IntCounterVec::new(
            Opts::new(
                "celeriac_tasks_send_failed_total",
                "Tasks of sends that returned an error, by queue.",
            ),
            &["queue"],
        )?;
        let confirm_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "celeriac_publish_confirm_seconds",
                "Time from a task's publish to the broker's confirm.",
            )
            .buckets(CONFIRM_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(failed.clone()))?;
        registry.register(Box::new(confirm_seconds.clone()))?;
        Ok(Arc::new(ProducerMetrics {
            sent,
            failed,
            confirm_seconds,
        }))
    }

    pub(crate) fn sent(&self, queue: &str, task: &str) {
        self.sent.with_label_values(&[queue, task]).inc();
    }

    pub(crate) fn failed(&self, queue: &str) {
        self.failed.with_label_values(&[queue]).inc();
    }

    pub(crate) fn confirmed_after(&self, latency: Duration) {
        self.confirm_seconds.observe(latency.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_under_their_labels_and_register_once() {
        let registry = Registry::new();
        let metrics = ProducerMetrics::register(&registry).expect("registers");
        metrics.sent("emails", "emails.send");
        metrics.sent("emails", "emails.send");
        metrics.failed("emails");
        metrics.confirmed_after(Duration::from_millis(3));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("renders");
        assert!(text.contains(r#"celeriac_tasks_sent_total{queue="emails",task="emails.send"} 2"#));
        assert!(text.contains(r#"celeriac_tasks_send_failed_total{queue="emails"} 1"#));
        assert!(text.contains("celeriac_publish_confirm_seconds_count 1"));
        assert!(
            ProducerMetrics::register(&registry).is_err(),
            "a second registration is refused"
        );
    }
}

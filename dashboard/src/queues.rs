//! The Queues page: every work queue of the namespace with its depth,
//! consumers, rates and dead letters.
//!
//! The RabbitMQ management API lists the queues (`{ns}.q.{queue}` and
//! `{ns}.dlq.{queue}`) and gives their unacknowledged counts and message
//! counters; depth and consumers come from passive declares, exact at once
//! where the API's statistics lag by seconds. Without the API, the
//! dashboard asks the broker about the queues it knows (`default`,
//! `--queue` flags, and the queues of recent tasks). Rates come from
//! successive samples: the management API's cumulative publish and ack
//! counters when it has them, and the change of depth always.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use celeriac_schema::topology::{validate_name, DEFAULT_QUEUE};
use celeriac_store::TaskQuery;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::Serialize;

use crate::error::Result;
use crate::{broker, management, App};

/// One logical queue.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QueueRow {
    /// The logical queue name.
    pub queue: String,
    /// The broker queue (`{ns}.q.{queue}`).
    pub broker_queue: String,
    /// Whether the work queue exists (a dead-letter queue may outlive it).
    pub exists: bool,
    /// Messages in the queue, ready and unacknowledged.
    pub messages: u64,
    /// Messages ready for delivery.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged (`None` without the
    /// management API).
    pub unacked: Option<u64>,
    /// Consumers.
    pub consumers: u64,
    /// Messages in its dead-letter queue (`None` when it has none).
    pub dead_letters: Option<u64>,
    /// Messages published per second since the previous sample.
    pub publish_rate: Option<f64>,
    /// Messages acknowledged per second since the previous sample.
    pub ack_rate: Option<f64>,
    /// Change of depth per second since the previous sample.
    pub depth_rate: Option<f64>,
}

/// The answer of `GET /api/queues`.
#[derive(Debug, Clone, Serialize)]
pub struct QueuesView {
    /// `management` or `amqp` (passive declares).
    pub source: &'static str,
    /// Why the management API was not used, when it was not.
    pub note: Option<String>,
    /// The queues, by name.
    pub queues: Vec<QueueRow>,
    /// When sampled, Unix ms.
    pub at: u64,
}

/// The previous sample of each broker queue, for rates.
#[derive(Debug, Default)]
pub(crate) struct Samples(Mutex<HashMap<String, Sample>>);

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    messages: u64,
    publish: Option<u64>,
    ack: Option<u64>,
    rates: (Option<f64>, Option<f64>, Option<f64>),
}

/// Samples closer than this keep the rates of the previous one.
const MIN_INTERVAL_SECS: f64 = 1.0;

impl Samples {
    /// Records a sample of `name` and returns its publish, ack and depth
    /// rates.
    fn rates(
        &self,
        name: &str,
        messages: u64,
        publish: Option<u64>,
        ack: Option<u64>,
    ) -> (Option<f64>, Option<f64>, Option<f64>) {
        let now = Instant::now();
        let Ok(mut samples) = self.0.lock() else {
            return (None, None, None);
        };
        let rate = |cur: Option<u64>, prev: Option<u64>, secs: f64| match (cur, prev) {
            (Some(c), Some(p)) if c >= p => Some((c - p) as f64 / secs),
            _ => None,
        };
        let rates = match samples.get(name) {
            Some(prev) => {
                let secs = now.duration_since(prev.at).as_secs_f64();
                if secs < MIN_INTERVAL_SECS {
                    return prev.rates;
                }
                (
                    rate(publish, prev.publish, secs),
                    rate(ack, prev.ack, secs),
                    Some((messages as f64 - prev.messages as f64) / secs),
                )
            }
            None => (None, None, None),
        };
        samples.insert(
            name.to_owned(),
            Sample {
                at: now,
                messages,
                publish,
                ack,
                rates,
            },
        );
        rates
    }
}

/// The queues of the namespace, from the management API or, without it,
/// passive declares.
///
/// # Errors
///
/// [`crate::Error::Broker`] when neither source answers.
pub(crate) async fn list(app: &App) -> Result<QueuesView> {
    let note = match &app.management {
        Some(m) => match management::queues(m).await {
            Ok(infos) => return from_management(app, infos).await,
            Err(e) => Some(format!("management API at {}: {e}", m.base)),
        },
        None => None,
    };
    from_amqp(app, note).await
}

async fn from_management(app: &App, infos: Vec<management::QueueInfo>) -> Result<QueuesView> {
    let ns = app.topology.namespace();
    let (work, dlq) = (format!("{ns}.q."), format!("{ns}.dlq."));
    let mut rows: BTreeMap<String, QueueRow> = BTreeMap::new();
    let mut stats: HashMap<String, management::QueueInfo> = HashMap::new();
    for info in infos {
        let queue = info
            .name
            .strip_prefix(&work)
            .or_else(|| info.name.strip_prefix(&dlq));
        if let Some(queue) = queue.filter(|q| validate_name("queue", q).is_ok()) {
            rows.entry(queue.to_owned()).or_default();
            stats.insert(info.name.clone(), info);
        }
    }
    // The management API's figures lag (its statistics are collected
    // every few seconds): depth and consumers come from passive declares,
    // exact now; unacknowledged counts and the counters behind the rates
    // from the API.
    let names: Vec<String> = rows
        .keys()
        .flat_map(|q| {
            [
                app.topology.work_queue(q),
                app.topology.dead_letter_queue(q),
            ]
        })
        .collect();
    let declared = declare_passive_many(app, &names).await?;
    let exact: HashMap<&str, Option<(u64, u64)>> =
        names.iter().map(String::as_str).zip(declared).collect();
    for (queue, row) in rows.iter_mut() {
        let name = app.topology.work_queue(queue);
        if let Some(Some((ready, consumers))) = exact.get(name.as_str()) {
            let info = stats.get(&name).cloned().unwrap_or_default();
            let unacked = info.messages_unacknowledged;
            let messages = ready + unacked.unwrap_or(0);
            let counters = info.message_stats.unwrap_or_default();
            let (publish_rate, ack_rate, depth_rate) =
                app.samples
                    .rates(&name, messages, counters.publish, counters.ack);
            row.exists = true;
            row.messages = messages;
            row.ready = *ready;
            row.unacked = unacked;
            row.consumers = *consumers;
            row.publish_rate = publish_rate;
            row.ack_rate = ack_rate;
            row.depth_rate = depth_rate;
        }
        let dead = app.topology.dead_letter_queue(queue);
        row.dead_letters = exact.get(dead.as_str()).copied().flatten().map(|(n, _)| n);
    }
    rows.retain(|_, row| row.exists || row.dead_letters.is_some());
    Ok(QueuesView {
        source: "management",
        note: None,
        queues: finish(app, rows),
        at: celeriac_schema::now_ms(),
    })
}

fn finish(app: &App, rows: BTreeMap<String, QueueRow>) -> Vec<QueueRow> {
    rows.into_iter()
        .map(|(queue, mut row)| {
            row.broker_queue = app.topology.work_queue(&queue);
            row.queue = queue;
            row
        })
        .collect()
}

/// The logical queues known without the management API.
pub(crate) async fn known_queues(app: &App) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = app.config.queues.iter().cloned().collect();
    known.insert(DEFAULT_QUEUE.to_owned());
    let recent = TaskQuery {
        limit: 500,
        ..TaskQuery::default()
    };
    if let Ok(page) = app.store.recent_tasks(&recent).await {
        known.extend(page.tasks.into_iter().map(|t| t.record.queue));
    }
    known.retain(|q| validate_name("queue", q).is_ok());
    known
}

/// Ready messages and consumers of each broker queue (`None` for one that
/// does not exist), on one channel while the queues exist.
pub(crate) async fn declare_passive_many(
    app: &App,
    names: &[String],
) -> Result<Vec<Option<(u64, u64)>>> {
    let mut out = Vec::with_capacity(names.len());
    let mut channel = None;
    for name in names {
        let ch = match channel.take() {
            Some(ch) => ch,
            None => app.broker.channel().await?,
        };
        let declared = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(q) => {
                out.push(Some((
                    u64::from(q.message_count()),
                    u64::from(q.consumer_count()),
                )));
                channel = Some(ch);
            }
            // NOT_FOUND closed the channel: the next name gets a new one.
            Err(_) => out.push(None),
        }
    }
    if let Some(ch) = channel {
        broker::close(ch).await;
    }
    Ok(out)
}

async fn from_amqp(app: &App, note: Option<String>) -> Result<QueuesView> {
    let known: Vec<String> = known_queues(app).await.into_iter().collect();
    let names: Vec<String> = known
        .iter()
        .flat_map(|q| {
            [
                app.topology.work_queue(q),
                app.topology.dead_letter_queue(q),
            ]
        })
        .collect();
    let declared = declare_passive_many(app, &names).await?;
    let mut rows = BTreeMap::new();
    for (queue, pair) in known.into_iter().zip(declared.chunks(2)) {
        let (found, dead) = (pair[0], pair.get(1).copied().flatten());
        if found.is_none() && dead.is_none() {
            continue;
        }
        let mut row = QueueRow::default();
        if let Some((ready, consumers)) = found {
            let work = app.topology.work_queue(&queue);
            row.exists = true;
            row.messages = ready;
            row.ready = ready;
            row.consumers = consumers;
            row.depth_rate = app.samples.rates(&work, ready, None, None).2;
        }
        row.dead_letters = dead.map(|(n, _)| n);
        rows.insert(queue, row);
    }
    Ok(QueuesView {
        source: "amqp",
        note,
        queues: finish(app, rows),
        at: celeriac_schema::now_ms(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_successive_samples() {
        let samples = Samples::default();
        assert_eq!(
            samples.rates("q", 10, Some(100), Some(50)),
            (None, None, None)
        );
        // Too soon: the previous rates again.
        assert_eq!(
            samples.rates("q", 20, Some(200), Some(60)),
            (None, None, None)
        );
        if let Ok(mut map) = samples.0.lock() {
            if let Some(s) = map.get_mut("q") {
                s.at -= std::time::Duration::from_secs(2);
            }
        }
        let (publish, ack, depth) = samples.rates("q", 20, Some(200), Some(60));
        let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 0.2);
        assert!(near(publish, 50.0), "{publish:?}");
        assert!(near(ack, 5.0), "{ack:?}");
        assert!(near(depth, 5.0), "{depth:?}");
    }
}

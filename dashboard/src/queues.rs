//! The Queues page: every logical queue of the namespace with its depth,
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
//!
//! A logical queue may stand on more broker queues than its own: the
//! tolerance classes of deferrable tasks (`{ns}.q.{queue}.tol.{k}`) and
//! the shards of a fair queue (`{ns}.q.{queue}.f.{i}`). These lanes have no
//! dead-letter queue of their own (they dead-letter into the logical
//! queue's), which tells them from a queue that merely has such a name.
//! They are listed under their logical queue, whose figures are the sums
//! over its own broker queue and its lanes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use celeriac_schema::fair::MAX_SHARDS;
use celeriac_schema::tolerance::TOLERANCE_CLASSES;
use celeriac_schema::topology::{validate_name, DEFAULT_QUEUE};
use celeriac_store::TaskQuery;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::Serialize;

use crate::error::Result;
use crate::{broker, management, App};

/// One logical queue: its own broker queue and its lanes, summed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QueueRow {
    /// The logical queue name.
    pub queue: String,
    /// The broker queue (`{ns}.q.{queue}`).
    pub broker_queue: String,
    /// Whether the work queue exists (a dead-letter queue may outlive it).
    pub exists: bool,
    /// Messages in the queue and its lanes, ready and unacknowledged.
    pub messages: u64,
    /// Messages ready for delivery, in the queue and its lanes.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged (`None` without the
    /// management API, or before it reported any of these queues).
    pub unacked: Option<u64>,
    /// Consumers of the queue: the most on the queue or any one of its
    /// lanes (a worker consumes each, so this counts workers, not
    /// broker consumers).
    pub consumers: u64,
    /// Messages in its dead-letter queue (`None` when it has none).
    pub dead_letters: Option<u64>,
    /// Messages published per second since the previous sample.
    pub publish_rate: Option<f64>,
    /// Messages acknowledged per second since the previous sample.
    pub ack_rate: Option<f64>,
    /// Change of depth per second since the previous sample.
    pub depth_rate: Option<f64>,
    /// The lanes, each with its own figures: tolerance classes first,
    /// then fair shards, by number.
    pub lanes: Vec<LaneRow>,
}

/// What a lane of a logical queue is for.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LaneKind {
    /// A tolerance class of deferrable tasks: `{queue}.tol.{k}`.
    Tolerance,
    /// A shard of a fair queue: `{queue}.f.{i}`.
    Fair,
}

/// One lane of a logical queue.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LaneRow {
    /// Its routing name: `{queue}.tol.{k}` or `{queue}.f.{i}`.
    pub lane: String,
    /// The broker queue (`{ns}.q.{lane}`).
    pub broker_queue: String,
    /// A tolerance class or a fair shard.
    pub kind: LaneKind,
    /// The class or shard number.
    pub index: u16,
    /// Messages, ready and unacknowledged.
    pub messages: u64,
    /// Messages ready for delivery.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged.
    pub unacked: Option<u64>,
    /// Consumers.
    pub consumers: u64,
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
    /// The logical queues, by name.
    pub queues: Vec<QueueRow>,
    /// When sampled, Unix ms.
    pub at: u64,
}

/// The logical queue, kind and number of a lane's name (a broker queue
/// name without its `{ns}.q.` prefix); `None` for a name that is not one.
///
/// # Examples
///
/// ```
/// use celeriac_dashboard::queues::{split_lane, LaneKind};
///
/// assert_eq!(split_lane("emails.tol.2"), Some(("emails", LaneKind::Tolerance, 2)));
/// assert_eq!(split_lane("orders.f.13"), Some(("orders", LaneKind::Fair, 13)));
/// assert_eq!(split_lane("emails.tol.9"), None);
/// assert_eq!(split_lane("emails"), None);
/// ```
pub fn split_lane(name: &str) -> Option<(&str, LaneKind, u16)> {
    let (rest, number) = name.rsplit_once('.')?;
    let canonical = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && (number == "0" || !number.starts_with('0'));
    if !canonical {
        return None;
    }
    let index: u16 = number.parse().ok()?;
    let (queue, tag) = rest.rsplit_once('.')?;
    let kind = match tag {
        "tol" if u32::from(index) < TOLERANCE_CLASSES => LaneKind::Tolerance,
        "f" if index < MAX_SHARDS => LaneKind::Fair,
        _ => return None,
    };
    validate_name("queue", queue).ok()?;
    Some((queue, kind, index))
}

/// A lane found for a logical queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Lane {
    kind: LaneKind,
    index: u16,
    name: String,
}

/// Groups the names after `{ns}.q.` (`work`) and `{ns}.dlq.` (`dead`)
/// into logical queues with their lanes. A lane-like name with a
/// dead-letter queue of its own is a logical queue.
fn group(work: &BTreeSet<String>, dead: &BTreeSet<String>) -> BTreeMap<String, Vec<Lane>> {
    let mut groups: BTreeMap<String, Vec<Lane>> = BTreeMap::new();
    for name in work {
        match split_lane(name).filter(|_| !dead.contains(name)) {
            Some((queue, kind, index)) => groups.entry(queue.to_owned()).or_default().push(Lane {
                kind,
                index,
                name: name.clone(),
            }),
            None => {
                groups.entry(name.clone()).or_default();
            }
        }
    }
    for name in dead {
        groups.entry(name.clone()).or_default();
    }
    for lanes in groups.values_mut() {
        lanes.sort();
    }
    groups
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

/// The figures of one broker queue.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    messages: u64,
    ready: u64,
    unacked: Option<u64>,
    consumers: u64,
    publish_rate: Option<f64>,
    ack_rate: Option<f64>,
    depth_rate: Option<f64>,
}

/// The sum of what is known: `None` only when neither side knows.
fn plus<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

impl QueueRow {
    fn add(&mut self, f: &Figures) {
        self.messages += f.messages;
        self.ready += f.ready;
        self.unacked = plus(self.unacked, f.unacked);
        self.consumers = self.consumers.max(f.consumers);
        self.publish_rate = plus(self.publish_rate, f.publish_rate);
        self.ack_rate = plus(self.ack_rate, f.ack_rate);
        self.depth_rate = plus(self.depth_rate, f.depth_rate);
    }
}

/// What the broker said about each broker queue: ready and consumers from
/// passive declares (`None`: it does not exist), and the management API's
/// entry when there is one.
struct Observed<'a> {
    declared: HashMap<String, Option<(u64, u64)>>,
    stats: &'a HashMap<String, management::QueueInfo>,
}

impl Observed<'_> {
    /// The figures of `name`, or `None` when it does not exist.
    fn figures(&self, app: &App, name: &str) -> Option<Figures> {
        let (ready, consumers) = self.declared.get(name).copied().flatten()?;
        let info = self.stats.get(name);
        let unacked = info.and_then(|i| i.messages_unacknowledged);
        let messages = ready + unacked.unwrap_or(0);
        let counters = info
            .and_then(|i| i.message_stats.clone())
            .unwrap_or_default();
        let (publish_rate, ack_rate, depth_rate) =
            app.samples
                .rates(name, messages, counters.publish, counters.ack);
        Some(Figures {
            messages,
            ready,
            unacked,
            consumers,
            publish_rate,
            ack_rate,
            depth_rate,
        })
    }
}

/// Measures every logical queue of `groups` and its lanes; drops those
/// with neither a work queue, a lane nor a dead-letter queue.
async fn measure(
    app: &App,
    groups: BTreeMap<String, Vec<Lane>>,
    stats: &HashMap<String, management::QueueInfo>,
) -> Result<Vec<QueueRow>> {
    let mut names = Vec::new();
    for (queue, lanes) in &groups {
        names.push(app.topology.work_queue(queue));
        names.push(app.topology.dead_letter_queue(queue));
        names.extend(lanes.iter().map(|l| app.topology.work_queue(&l.name)));
    }
    let declared = declare_passive_many(app, &names).await?;
    let observed = Observed {
        declared: names.into_iter().zip(declared).collect(),
        stats,
    };
    let mut rows = Vec::with_capacity(groups.len());
    for (queue, lanes) in groups {
        let mut row = QueueRow {
            broker_queue: app.topology.work_queue(&queue),
            ..QueueRow::default()
        };
        if let Some(own) = observed.figures(app, &row.broker_queue) {
            row.exists = true;
            row.add(&own);
        }
        for lane in lanes {
            let broker_queue = app.topology.work_queue(&lane.name);
            let Some(f) = observed.figures(app, &broker_queue) else {
                continue;
            };
            row.add(&f);
            row.lanes.push(LaneRow {
                lane: lane.name,
                broker_queue,
                kind: lane.kind,
                index: lane.index,
                messages: f.messages,
                ready: f.ready,
                unacked: f.unacked,
                consumers: f.consumers,
                publish_rate: f.publish_rate,
                ack_rate: f.ack_rate,
                depth_rate: f.depth_rate,
            });
        }
        let dead = app.topology.dead_letter_queue(&queue);
        row.dead_letters = observed
            .declared
            .get(&dead)
            .copied()
            .flatten()
            .map(|(n, _)| n);
        row.queue = queue;
        if row.exists || row.dead_letters.is_some() || !row.lanes.is_empty() {
            rows.push(row);
        }
    }
    Ok(rows)
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
    let (work_prefix, dead_prefix) = (format!("{ns}.q."), format!("{ns}.dlq."));
    let valid = |q: &&str| validate_name("queue", q).is_ok();
    let (mut work, mut dead) = (BTreeSet::new(), BTreeSet::new());
    let mut stats: HashMap<String, management::QueueInfo> = HashMap::new();
    for info in infos {
        if let Some(q) = info.name.strip_prefix(&work_prefix).filter(valid) {
            work.insert(q.to_owned());
        } else if let Some(q) = info.name.strip_prefix(&dead_prefix).filter(valid) {
            dead.insert(q.to_owned());
        } else {
            continue;
        }
        stats.insert(info.name.clone(), info);
    }
    // The management API's figures lag (its statistics are collected
    // every few seconds, and a new queue has none for its first ten or
    // so): depth and consumers come from passive declares, exact now;
    // unacknowledged counts and the counters behind the rates from the
    // API.
    let queues = measure(app, group(&work, &dead), &stats).await?;
    Ok(QueuesView {
        source: "management",
        note: None,
        queues,
        at: celeriac_schema::now_ms(),
    })
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

/// Without the management API: the known queues, each with the tolerance
/// classes workers declare with it (a fair queue's shard count is not
/// known here, so its shards are left out).
async fn from_amqp(app: &App, note: Option<String>) -> Result<QueuesView> {
    let groups = known_queues(app)
        .await
        .into_iter()
        .map(|queue| {
            let lanes = (0..TOLERANCE_CLASSES)
                .map(|class| Lane {
                    kind: LaneKind::Tolerance,
                    index: class as u16,
                    name: app.topology.tolerance_key(&queue, class),
                })
                .collect();
            (queue, lanes)
        })
        .collect();
    let queues = measure(app, groups, &HashMap::new()).await?;
    Ok(QueuesView {
        source: "amqp",
        note,
        queues,
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

    #[test]
    fn lanes_are_grouped_under_their_logical_queue() {
        let set = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect();
        let work = set(&[
            "default",
            "default.tol.0",
            "default.tol.5",
            "orders.f.0",
            "orders.f.1",
            "orders",
            // A queue of its own that only looks like a lane: it has a
            // dead-letter queue.
            "odd.f.1",
            // Not a lane: past the tolerance ladder, or not a number.
            "default.tol.6",
            "default.f.x",
        ]);
        let dead = set(&["default", "orders", "odd.f.1", "gone"]);
        let groups = group(&work, &dead);
        let names: Vec<&str> = groups.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "default",
                "default.f.x",
                "default.tol.6",
                "gone",
                "odd.f.1",
                "orders"
            ]
        );
        let lanes = |q: &str| -> Vec<String> { groups[q].iter().map(|l| l.name.clone()).collect() };
        assert_eq!(lanes("default"), ["default.tol.0", "default.tol.5"]);
        assert_eq!(lanes("orders"), ["orders.f.0", "orders.f.1"]);
        assert!(lanes("odd.f.1").is_empty());
        assert_eq!(split_lane("a.tol.01"), None);
        assert_eq!(split_lane(".tol.1"), None);
    }

    #[test]
    fn a_logical_row_sums_what_is_known_and_counts_workers_once() {
        let mut row = QueueRow::default();
        row.add(&Figures {
            messages: 3,
            ready: 2,
            unacked: Some(1),
            consumers: 1,
            publish_rate: Some(1.5),
            ..Figures::default()
        });
        row.add(&Figures {
            messages: 4,
            ready: 4,
            unacked: None,
            consumers: 2,
            publish_rate: None,
            depth_rate: Some(-1.0),
            ..Figures::default()
        });
        assert_eq!((row.messages, row.ready, row.consumers), (7, 6, 2));
        assert_eq!(row.unacked, Some(1));
        assert_eq!(row.publish_rate, Some(1.5));
        assert_eq!(row.ack_rate, None);
        assert_eq!(row.depth_rate, Some(-1.0));
    }
}

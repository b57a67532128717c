//! One broker connection: its publisher channel, one consuming channel per
//! queue, and the queue-depth sampler.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::topology::declare;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::control::listener::Listener;
use super::control::pool::LaneChange;
use super::fair::{LaneGroup, RoundRobin, Slots};
use super::lane::Lane;
use super::urgency::{open_class_lanes, Gate};
use super::{Config, SessionEnd, Shared};
use crate::error::{Error, Result};
use crate::metrics::QueueMetrics;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection: a publisher channel and one consuming channel per queue.
pub(super) struct Session {
    connection: Arc<Connection>,
    pub(super) publisher: Channel,
    lanes: Vec<Opened>,
}

/// A consuming channel of a logical queue (its plain queue, a shard or a
/// tolerance class) with its rank: 0 urgent, `1 + k` tolerance class `k`.
type Opened = (Arc<str>, usize, Channel, Consumer);

/// Opens the channels of a logical queue: one for its work queue; for a
/// fair queue, one per shard with a prefetch of at most the concurrency,
/// so a flood waits in the broker, not in the worker (SPEC.md section 21);
/// and one per tolerance class (SPEC.md section 19). Urgent lanes first.
async fn open_lanes(config: &Config, connection: &Connection, queue: &str) -> Result<Vec<Opened>> {
    // The class lanes first: once the work queue has its consumer, tasks
    // arrive, and the session must be ready to run them.
    let name: Arc<str> = Arc::from(queue);
    let classes = open_class_lanes(config, connection, queue).await?;
    let mut out = Vec::new();
    match config.topology.fair_shards(queue) {
        None => out.push(open_lane(config, connection, queue, queue, config.prefetch).await?),
        Some(shards) => {
            let prefetch = config
                .prefetch
                .min(u16::try_from(config.concurrency).unwrap_or(u16::MAX))
                .max(1);
            out.push(open_lane(config, connection, queue, queue, prefetch).await?);
            for shard in 0..shards {
                let name = celeriac_schema::fair::shard_name(queue, shard);
                out.push(open_lane(config, connection, queue, &name, prefetch).await?);
            }
        }
    }
    for (rank, channel, consumer) in classes {
        out.push((name.clone(), rank, channel, consumer));
    }
    Ok(out)
}

/// Opens a channel with `prefetch` and consumes the work queue of `route`
/// for logical queue `queue`.
async fn open_lane(
    config: &Config,
    connection: &Connection,
    queue: &str,
    route: &str,
    prefetch: u16,
) -> Result<Opened> {
    let channel = connection
        .create_channel()
        .await
        .map_err(Error::amqp("opening a channel"))?;
    // Per consumer, never global: quorum queues refuse global QoS.
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await
        .map_err(Error::amqp("setting the prefetch"))?;
    let consumer = channel
        .basic_consume(
            config.topology.work_queue(route).into(),
            format!("{}/{route}", config.worker_id).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(Error::amqp("starting a consumer"))?;
    Ok((Arc::from(queue), 0, channel, consumer))
}

/// The slots of a logical queue's lanes, given their ranks: a fair
/// queue's urgent lanes (its plain queue and shards) share one round-robin
/// group, every other lane asks the gate with its rank.
fn slots_for(
    config: &Config,
    queue: &str,
    ranks: &[usize],
    gate: &Arc<Gate>,
    stop: &CancellationToken,
) -> Vec<Slots> {
    let urgent = ranks.iter().filter(|&&rank| rank == 0).count();
    let mut group = match config.topology.fair_shards(queue) {
        Some(_) if urgent > 0 => LaneGroup::start(
            gate.clone(),
            urgent,
            Box::new(RoundRobin::default()),
            stop.clone(),
        ),
        _ => Vec::new(),
    }
    .into_iter();
    ranks
        .iter()
        .map(|&rank| match rank {
            0 => group
                .next()
                .unwrap_or_else(|| Slots::Direct(gate.clone(), 0)),
            rank => Slots::Direct(gate.clone(), rank),
        })
        .collect()
}

/// Connects, declares the topology of `queues` and consumes them.
pub(super) async fn connect(config: &Config, queues: &[String]) -> Result<Session> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("celeriac-worker {}", config.worker_id).into());
    let connecting = celeriac_producer::tls::connect(&config.url, props, &config.tls);
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| Error::Amqp {
            doing: "connecting",
            source: lapin::Error::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no connection to {} within {CONNECT_TIMEOUT:?}",
                    celeriac_producer::redact_url(&config.url)
                ),
            )),
        })?
        .map_err(|e| match e {
            celeriac_producer::Error::Amqp { source, .. } => Error::amqp("connecting")(source),
            other => Error::Connect(other),
        })?;
    let publisher = connection
        .create_channel()
        .await
        .map_err(Error::amqp("opening a channel"))?;
    declare_all(config, &publisher).await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(Error::amqp("enabling publisher confirms"))?;
    declare_queues(config, &publisher, queues).await?;
    let mut lanes = Vec::with_capacity(queues.len());
    for queue in queues {
        lanes.extend(open_lanes(config, &connection, queue).await?);
    }
    Ok(Session {
        connection: Arc::new(connection),
        publisher,
        lanes,
    })
}

/// A refused declaration (other arguments) will be refused again: a
/// configuration error, not a reason to reconnect.
fn declare_error(e: celeriac_producer::Error) -> Error {
    match e {
        celeriac_producer::Error::Amqp { source, .. }
            if matches!(source.kind(), lapin::ErrorKind::ProtocolError(_)) =>
        {
            Error::Config(format!(
                "the broker refused the topology (is a queue declared with other arguments, \
                 such as another delivery limit?): {source}"
            ))
        }
        other => Error::Producer(other),
    }
}

async fn declare_all(config: &Config, channel: &Channel) -> Result<()> {
    declare(channel, &config.topology.shared_declarations())
        .await
        .map_err(declare_error)
}

async fn declare_queues(config: &Config, channel: &Channel, queues: &[String]) -> Result<()> {
    for queue in queues {
        let mut declarations = config.topology.queue_declarations(queue)?;
        declarations.extend(config.topology.tolerance_declarations(queue)?);
        declare(channel, &declarations)
            .await
            .map_err(declare_error)?;
    }
    Ok(())
}

impl Session {
    pub(super) async fn run(
        self,
        shared: Arc<Shared>,
        semaphore: Arc<Semaphore>,
        shutdown: CancellationToken,
    ) -> SessionEnd {
        // Ends every lane when one of them loses its channel.
        let session_token = shutdown.child_token();
        if let Some(every) = shared.config.queue_sample {
            tokio::spawn(sample_queues(
                self.connection.clone(),
                shared.clone(),
                every,
                session_token.clone(),
            ));
        }
        match Listener::start(&self.connection, &shared).await {
            Ok(listener) => {
                tokio::spawn(listener.run(
                    shared.clone(),
                    self.connection.clone(),
                    session_token.clone(),
                ));
            }
            Err(e) => {
                warn!(error = %e, "cannot listen on the control queue; control requests wait for the next session")
            }
        }
        let mut changes = shared.control.queues.attach();
        let mut lanes = JoinSet::new();
        let mut stops: HashMap<Arc<str>, CancellationToken> = HashMap::new();
        let gate = Gate::new(semaphore.clone(), shared.config.urgency.weight);
        let start_lane = |lanes: &mut JoinSet<(Arc<str>, SessionEnd)>,
                          stops: &mut HashMap<Arc<str>, CancellationToken>,
                          (queue, _rank, channel, consumer): Opened,
                          slots: Slots| {
            // One stop for all lanes of a logical queue.
            let stop = stops.entry(queue.clone()).or_default().clone();
            let lane = Lane {
                shared: shared.clone(),
                metrics: shared.metrics.queue(&queue),
                queue: queue.clone(),
                channel,
                publisher: self.publisher.clone(),
                semaphore: semaphore.clone(),
                slots,
            };
            let run = lane.run(consumer, session_token.clone(), shutdown.clone(), stop);
            lanes.spawn(async move { (queue, run.await) });
        };
        let mut opened = self.lanes.into_iter().peekable();
        while let Some(first) = opened.next() {
            let mut group = vec![first];
            while let Some(next) = opened.next_if(|(q, _, _, _)| *q == group[0].0) {
                group.push(next);
            }
            let ranks: Vec<usize> = group.iter().map(|lane| lane.1).collect();
            let slots = slots_for(&shared.config, &group[0].0, &ranks, &gate, &session_token);
            for (lane, slots) in group.into_iter().zip(slots) {
                start_lane(&mut lanes, &mut stops, lane, slots);
            }
        }
        let mut end = SessionEnd::Shutdown;
        loop {
            tokio::select! {
                joined = lanes.join_next(), if !lanes.is_empty() => match joined {
                    // The token of lanes started again since stays.
                    Some(Ok((queue, SessionEnd::Shutdown)))
                        if stops.get(&queue).is_some_and(CancellationToken::is_cancelled) =>
                    {
                        stops.remove(&queue);
                    }
                    Some(Ok((_, SessionEnd::Shutdown))) => {}
                    Some(Ok((_, SessionEnd::Lost(reason)))) => {
                        session_token.cancel();
                        if matches!(end, SessionEnd::Shutdown) {
                            end = SessionEnd::Lost(reason);
                        }
                    }
                    Some(Err(join)) => {
                        session_token.cancel();
                        end = SessionEnd::Lost(format!("consumer task failed: {join}"));
                    }
                    None => {}
                },
                Some(change) = changes.recv(), if !session_token.is_cancelled() => match change {
                    LaneChange::Add(queue, done) => {
                        let opened = async {
                            // On a channel of its own: a refused declaration
                            // closes the channel it was made on.
                            let channel = self
                                .connection
                                .create_channel()
                                .await
                                .map_err(Error::amqp("opening a channel"))?;
                            declare_queues(&shared.config, &channel, std::slice::from_ref(&queue)).await?;
                            let _ = channel.close(200, "declared".into()).await;
                            open_lanes(&shared.config, &self.connection, &queue).await
                        };
                        match opened.await {
                            Ok(opened) => {
                                info!(%queue, "consuming a queue added at run time");
                                let ranks: Vec<usize> = opened.iter().map(|lane| lane.1).collect();
                                let slots = slots_for(&shared.config, &queue, &ranks, &gate, &session_token);
                                for (lane, slots) in opened.into_iter().zip(slots) {
                                    start_lane(&mut lanes, &mut stops, lane, slots);
                                }
                                let _ = done.send(Ok(()));
                            }
                            Err(e) => {
                                let _ = done.send(Err(format!("cannot consume {queue}: {e}")));
                            }
                        }
                    }
                    LaneChange::Cancel(queue, done) => {
                        match stops.get(queue.as_str()) {
                            Some(stop) => {
                                info!(%queue, "cancelling a queue's consumer; its in-flight tasks finish");
                                stop.cancel();
                            }
                            None => debug!(%queue, "no consumer to cancel"),
                        }
                        let _ = done.send(Ok(()));
                    }
                },
                _ = session_token.cancelled(), if lanes.is_empty() => break,
            }
        }
        if shutdown.is_cancelled() {
            end = SessionEnd::Shutdown;
        }
        let _ = self.connection.close(200, "worker stopping".into()).await;
        end
    }
}

/// Samples the depth of each consumed work queue and its dead-letter queue,
/// and the work queue's consumers, for the metrics; pings the state store
/// on the same beat so readiness notices a store that went away while the
/// worker is idle. Passive declares on a channel of its own: a refusal
/// (a queue deleted under the worker) closes only that channel, reopened on
/// the next beat.
async fn sample_queues(
    connection: Arc<Connection>,
    shared: Arc<Shared>,
    every: Duration,
    session: CancellationToken,
) {
    let topology = &shared.config.topology;
    // A fair queue's depth counts its shards too.
    let queues: Vec<(Arc<QueueMetrics>, Vec<String>, String)> = shared
        .config
        .queues
        .iter()
        .map(|queue| {
            let shards = (0..topology.fair_shards(queue).unwrap_or(0))
                .map(|shard| topology.work_queue(&celeriac_schema::fair::shard_name(queue, shard)));
            (
                shared.metrics.queue(queue),
                std::iter::once(topology.work_queue(queue))
                    .chain(shards)
                    .collect(),
                topology.dead_letter_queue(queue),
            )
        })
        .collect();
    let mut channel: Option<Channel> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = session.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some(store) = &shared.config.store {
            match tokio::time::timeout(every.max(Duration::from_secs(1)), store.ping()).await {
                Ok(Ok(())) => shared.stats.store_down.store(false, Ordering::Relaxed),
                Ok(Err(e)) => {
                    debug!(error = %e, "state store ping failed");
                    shared.stats.store_down.store(true, Ordering::Relaxed);
                }
                Err(_) => {
                    debug!("state store ping timed out");
                    shared.stats.store_down.store(true, Ordering::Relaxed);
                }
            }
        }
        let open = match channel.take() {
            Some(open) if open.status().connected() => open,
            _ => match connection.create_channel().await {
                Ok(open) => open,
                Err(e) => {
                    debug!(error = %e, "cannot open the queue-sampling channel");
                    continue;
                }
            },
        };
        for (metrics, work, dlq) in &queues {
            let mut depth = Some(0i64);
            for (i, queue) in work.iter().enumerate() {
                match passive_declare(&open, queue).await {
                    Ok(q) => {
                        depth = depth.map(|d| d + i64::from(q.message_count()));
                        if i == 0 {
                            metrics.consumers.set(i64::from(q.consumer_count()));
                        }
                    }
                    Err(e) => {
                        debug!(%queue, error = %e, "cannot sample the queue");
                        depth = None;
                    }
                }
            }
            if let Some(depth) = depth {
                metrics.work_messages.set(depth);
            }
            match passive_declare(&open, dlq).await {
                Ok(q) => metrics.dlq_messages.set(i64::from(q.message_count())),
                Err(e) => debug!(queue = %dlq, error = %e, "cannot sample the queue"),
            }
        }
        channel = Some(open);
    }
    if let Some(open) = channel {
        let _ = open.close(200, "worker stopping".into()).await;
    }
}

async fn passive_declare(channel: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

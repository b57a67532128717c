//! A worker's pulse: `worker.online`, `worker.heartbeat` and
//! `worker.offline` events on `{ns}.events`; with a store, its record in
//! the namespace's worker hash, the marking of lost workers, and the
//! periodic re-read of revocations and run-time limits.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::control::{limit_command, WorkerStatus};
use celeriac_schema::events::WorkerEventKind;
use celeriac_schema::now_ms;
use celeriac_schema::store::{ControlHash, TENANT_RATE_FIELD};
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::worker::Shared;

/// Lost records are dropped from the worker hash this long after their
/// last heartbeat.
const FORGET_LOST_AFTER: Duration = Duration::from_secs(3600);

/// Reads the store's revocations and limits into the worker (at start,
/// then on every beat).
pub(crate) async fn sync_from_store(shared: &Shared) {
    let Some(store) = &shared.config.store else {
        return;
    };
    match store.revocations().await {
        Ok(list) => shared
            .control
            .revoked
            .add(list.iter().map(|(id, expiry)| (id.as_str(), *expiry))),
        Err(e) => debug!(error = %e, "cannot read the revocations"),
    }
    match store.hash_all(ControlHash::Limits).await {
        Ok(fields) => {
            let tenants = crate::worker::job::tenant_rates(&fields);
            shared.control.limits.load_tenants(&tenants);
            let commands: Vec<_> = fields
                .iter()
                .filter(|(field, _)| !field.starts_with(TENANT_RATE_FIELD))
                .filter_map(|(field, value)| {
                    let command = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| limit_command(field, v));
                    if command.is_none() {
                        warn!(%field, "an unreadable task limit in the store; ignored");
                    }
                    command
                })
                .collect();
            shared.control.limits.load(&commands);
        }
        Err(e) => debug!(error = %e, "cannot read the task limits"),
    }
}

/// Beats until the worker shuts down, then says it goes offline.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let every = shared.config.heartbeat;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut online_sent = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let kind = if online_sent {
            WorkerEventKind::Heartbeat
        } else {
            WorkerEventKind::Online
        };
        if publish(&shared, kind).await {
            online_sent = true;
        }
        if let Some(store) = &shared.config.store {
            let status = status(&shared, WorkerEventKind::Online);
            match status.encode() {
                Ok(bytes) => {
                    if let Err(e) = store
                        .hash_put(ControlHash::Workers, &status.worker, Some(&bytes))
                        .await
                    {
                        debug!(error = %e, "cannot write the worker record");
                    }
                }
                Err(e) => warn!(error = %e, "cannot encode the worker record"),
            }
            mark_lost(&shared).await;
        }
        sync_from_store(&shared).await;
    }
    publish(&shared, WorkerEventKind::Offline).await;
    if let Some(store) = &shared.config.store {
        if let Err(e) = store
            .hash_put(ControlHash::Workers, &shared.config.worker_id, None)
            .await
        {
            debug!(error = %e, "cannot remove the worker record");
        }
    }
}

/// This worker's status now.
pub(crate) fn status(shared: &Shared, kind: WorkerEventKind) -> WorkerStatus {
    let stats = &shared.stats;
    WorkerStatus {
        kind,
        worker: shared.config.worker_id.to_string(),
        hostname: super::hostname(),
        pid: std::process::id(),
        queues: shared.control.queues.list(),
        concurrency: u32::try_from(shared.control.pool.target()).unwrap_or(u32::MAX),
        in_flight: u32::try_from(stats.in_flight.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
        processed: stats.received.load(Ordering::Relaxed),
        started_at: shared.control.started_at,
        at: now_ms(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        heartbeat_ms: shared.config.heartbeat.as_millis() as u64,
    }
}

/// Publishes `worker.{kind}` (without waiting for a confirm); whether it
/// went out.
async fn publish(shared: &Shared, kind: WorkerEventKind) -> bool {
    let Some(channel) = shared.publisher.borrow().clone() else {
        return false;
    };
    let body = match status(shared, kind).encode() {
        Ok(body) => body,
        Err(e) => {
            warn!(error = %e, "cannot encode a worker event");
            return false;
        }
    };
    let props = BasicProperties::default()
        .with_content_type(celeriac_schema::CONTENT_TYPE.into())
        .with_timestamp(now_ms() / 1000);
    let routing_key = kind.routing_key();
    let exchange = shared.config.topology.events_exchange();
    match channel
        .basic_publish(
            exchange.as_str().into(),
            routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            props,
        )
        .await
    {
        Ok(_confirm) => true,
        Err(e) => {
            debug!(error = %e, "cannot publish a worker event");
            false
        }
    }
}

/// Moves workers silent for three heartbeats to `lost`; the worker whose
/// swap wins counts it, so each is counted once cluster-wide. Sets the
/// gauge of live workers.
async fn mark_lost(shared: &Shared) {
    let Some(store) = &shared.config.store else {
        return;
    };
    let records = match store.hash_all(ControlHash::Workers).await {
        Ok(records) => records,
        Err(e) => {
            debug!(error = %e, "cannot read the worker list");
            return;
        }
    };
    let now = now_ms();
    let mut live = 0;
    for (worker, bytes) in records {
        let Ok(status) = WorkerStatus::decode(&bytes) else {
            continue;
        };
        if status.kind == WorkerEventKind::Lost {
            if now.saturating_sub(status.at) > FORGET_LOST_AFTER.as_millis() as u64 {
                let _ = store.hash_put(ControlHash::Workers, &worker, None).await;
            }
            continue;
        }
        if !status.is_lost_at(now) {
            live += 1;
            continue;
        }
        let lost = WorkerStatus {
            kind: WorkerEventKind::Lost,
            ..status
        };
        let Ok(new) = lost.encode() else { continue };
        match store
            .hash_swap(ControlHash::Workers, &worker, &bytes, &new)
            .await
        {
            Ok(true) => {
                shared.metrics.workers_lost.inc();
                info!(%worker, last_heartbeat = lost.at, "worker lost: no heartbeat for three periods");
            }
            Ok(false) => {}
            Err(e) => debug!(error = %e, "cannot mark a worker lost"),
        }
    }
    shared.metrics.workers_live.set(live);
}

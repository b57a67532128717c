//! The answers to `inspect`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use celeriac_schema::control::Inspect;
use celeriac_schema::topology::DELAY_LEVELS;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::Connection;
use serde_json::json;

use super::listener::to_value;
use crate::worker::Shared;

/// The report `what` of this worker.
pub(super) async fn inspect(
    shared: &Arc<Shared>,
    connection: &Connection,
    what: Inspect,
) -> Result<rmpv::Value, String> {
    let control = &shared.control;
    let config = &shared.config;
    match what {
        Inspect::Active => to_value(&control.jobs.list(true)),
        Inspect::Reserved => to_value(&control.jobs.list(false)),
        Inspect::Revoked => {
            let list: Vec<_> = control
                .revoked
                .list()
                .into_iter()
                .map(|(id, expires_at)| json!({ "id": id, "expires_at": expires_at }))
                .collect();
            to_value(&list)
        }
        Inspect::Registered => to_value(&shared.registry.names()),
        Inspect::Stats => {
            let stats = shared.stats.snapshot();
            to_value(&json!({
                "worker": &*config.worker_id,
                "hostname": super::hostname(),
                "pid": std::process::id(),
                "uptime_ms": celeriac_schema::now_ms().saturating_sub(control.started_at),
                "concurrency": control.pool.target(),
                "queues": control.queues.list(),
                "version": env!("CARGO_PKG_VERSION"),
                "control_refused": control.refused.load(Ordering::Relaxed),
                "stats": stats,
            }))
        }
        Inspect::Conf => to_value(&json!({
            "worker": &*config.worker_id,
            "namespace": config.topology.namespace(),
            "queues": control.queues.list(),
            "concurrency": control.pool.target(),
            "prefetch": config.prefetch,
            "grace_ms": config.grace.as_millis() as u64,
            "lease_ttl_ms": config.lease_ttl.as_millis() as u64,
            "delivery_limit": config.topology.delivery_limit(),
            "store": config.store.is_some(),
            "events": config.events,
            "heartbeat_ms": config.heartbeat.as_millis() as u64,
            "signing_key": config.signing.as_deref().map(|k| k.signing_key_id().to_owned()),
            "limits": control.limits.list(),
            "tenant_limits": control.limits.tenant_list(),
        })),
        Inspect::Scheduled => scheduled(shared, connection).await,
    }
}

/// The depth of each of the namespace's delay levels, from the broker.
async fn scheduled(shared: &Shared, connection: &Connection) -> Result<rmpv::Value, String> {
    let topology = &shared.config.topology;
    // A channel of its own: a refused passive declare closes it.
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    let mut levels = Vec::new();
    let mut total: u64 = 0;
    for level in 0..DELAY_LEVELS {
        let name = topology.delay_queue(level);
        let declared = channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(queue) => {
                let messages = queue.message_count();
                total += u64::from(messages);
                if messages > 0 {
                    levels.push(json!({ "level": level, "queue": name, "messages": messages }));
                }
            }
            Err(e) => {
                return Err(format!("cannot read the delay queue {name}: {e}"));
            }
        }
    }
    let _ = channel.close(200, "inspected".into()).await;
    to_value(&json!({ "total": total, "levels": levels }))
}

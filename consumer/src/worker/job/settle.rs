//! Settlement: the outcome stored, then the retry, delay or dead letter
//! published and confirmed before the delivery is acked.

use std::sync::Arc;

use celeriac_producer::publish::{self, long_string, Route};
use celeriac_schema::store::{Store, TaskFailure};
use celeriac_schema::{decode_with, headers, now_ms, Envelope, TaskState};
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use tracing::{debug, info, warn};

use super::Job;
use crate::disposition::{Disposition, Outcome};
use crate::stats::WorkerStats;
/// What a run leaves for the store besides its outcome.
pub(super) struct RunEnd {
    /// The handler's result.
    pub(super) output: Option<rmpv::Value>,
    /// When the run started, if its `started` state is not stored yet.
    pub(super) unrecorded_start: Option<u64>,
}

impl Job {
    /// Stores what became of a delivery; `false` when the worker shut down
    /// before the store could take it.
    pub(super) async fn store_outcome(
        &self,
        store: &Arc<dyn Store>,
        env: &Envelope,
        outcome: &Outcome,
        disposition: &Disposition,
        run: Option<&(String, String)>,
        RunEnd {
            output,
            unrecorded_start,
        }: RunEnd,
    ) -> bool {
        let mut update = match (outcome, disposition) {
            (Outcome::Succeeded, _) if run.is_some() => {
                let mut update = self.update(env, TaskState::Succeeded);
                if self.shared.registry.stores_result(&env.task) {
                    match output
                        .map(|v| celeriac_schema::store::encode_result(&v))
                        .transpose()
                    {
                        Ok(result) => update.result = result,
                        Err(e) => warn!(error = %e, "could not encode the result; storing none"),
                    }
                }
                update
            }
            (_, Disposition::Retry { .. }) => self.update(env, TaskState::Retrying),
            (Outcome::Revoked(reason), _) => {
                let mut update = self.update(env, TaskState::Revoked);
                update.error = Some(failure("Revoked", reason));
                update
            }
            (Outcome::Expired, _) => {
                let mut update = self.update(env, TaskState::Expired);
                let expired_at = env.expires.map_or_else(String::new, |ms| {
                    format!(" (expires {})", celeriac_producer::status::rfc3339(ms))
                });
                update.error = Some(failure(
                    crate::task_error::EXPIRED,
                    &format!("past its expiry before it could run{expired_at}"),
                ));
                update
            }
            (_, Disposition::DeadLetter { .. }) => self.update(env, TaskState::Failed),
            // Deferred, early or suppressed: nothing new to store.
            _ => return true,
        };
        if matches!(
            disposition,
            Disposition::Retry { .. } | Disposition::DeadLetter { .. }
        ) {
            let (error_type, message) = match (outcome, disposition) {
                (Outcome::Failed(err), _) => (err.kind().to_owned(), err.message().to_owned()),
                (Outcome::Panicked(message), _) => (crate::PANIC.to_owned(), message.clone()),
                (Outcome::TimedOut(limit), _) => (
                    crate::TIME_LIMIT.to_owned(),
                    format!("aborted at the hard time limit of {limit:?}"),
                ),
                (
                    _,
                    Disposition::DeadLetter {
                        error_type,
                        message,
                        ..
                    },
                ) => (error_type.clone(), message.clone()),
                _ => ("Unknown".to_owned(), String::new()),
            };
            update.error = Some(failure(&error_type, &message));
        }
        if run.is_some() {
            update.started_at_ms = unrecorded_start;
        }
        let stored = match run {
            Some((key, token)) => {
                self.store_call("finish", || store.finish(key, token, &update))
                    .await
            }
            None => {
                self.store_call("record", || store.record(std::slice::from_ref(&update)))
                    .await
            }
        };
        stored.is_some()
    }

    /// Makes the disposition durable: publishes the retry, delay or dead
    /// letter copy and waits for its confirm. The caller acks afterwards.
    pub(super) async fn settle(
        &self,
        publisher: &Channel,
        disposition: &Disposition,
        envelope: Option<&Envelope>,
        delivery: &Delivery,
    ) -> std::result::Result<(), String> {
        let config = &self.shared.config;
        let stats = &self.shared.stats;
        match disposition {
            Disposition::Ack => Ok(()),
            Disposition::Retry { attempt, delay } => {
                // Rebuild from the body: the run took the input.
                let mut next =
                    decode_with(&delivery.data, &config.limits).map_err(|e| e.to_string())?;
                next.attempt = *attempt;
                next.eta = Some(now_ms().saturating_add(delay.as_millis() as u64));
                let body = celeriac_schema::encode(&next).map_err(|e| e.to_string())?;
                let route = publish::route(&config.topology, &self.queue, &next, now_ms())
                    .map_err(|e| e.to_string())?;
                let props =
                    publish::task_properties(&next, &self.queue, &body, config.signing.as_deref())
                        .map_err(|e| e.to_string())?;
                publish::publish_confirmed(publisher, &route, &body, props, &next.id.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
                WorkerStats::bump(&stats.retried);
                info!(attempt, ?delay, "retry scheduled");
                Ok(())
            }
            Disposition::Delay { delay } => {
                let env = envelope.ok_or("an early delivery without an envelope")?;
                // Routed by its ETA, like any delayed task.
                let route = publish::route(&config.topology, &self.queue, env, now_ms())
                    .map_err(|e| e.to_string())?;
                let id = env.id.to_string();
                let mut table = without_broker_headers(delivery.properties.headers().as_ref());
                if let Some(reason) = self.throttled.get() {
                    table.insert(headers::THROTTLED.into(), long_string(reason.as_str()));
                }
                let props = delivery.properties.clone().with_headers(table);
                publish::publish_confirmed(publisher, &route, &delivery.data, props, &id)
                    .await
                    .map_err(|e| e.to_string())?;
                debug!(?delay, "arrived before its ETA; delayed again");
                Ok(())
            }
            Disposition::DeadLetter {
                reason,
                error_type,
                message,
            } => {
                // A task refused before its handler started never ran.
                let attempts = match (reason, envelope) {
                    (celeriac_schema::DeadLetterReason::UnknownTask, _) | (_, None) => 0,
                    (_, Some(_)) if error_type == crate::UNKNOWN_POOL => 0,
                    (_, Some(env)) => i64::from(env.attempt) + 1,
                };
                // The broker's `x-` headers (`x-death` and the like, left by
                // the delay queues) stay behind: on a dead letter they mean
                // the broker dead-lettered it itself (SPEC.md section 5.2).
                // The properties, `message_id` included, are kept.
                let mut table = without_broker_headers(delivery.properties.headers().as_ref());
                table.insert(headers::REASON.into(), long_string(reason.as_str()));
                table.insert(headers::ERROR_TYPE.into(), long_string(error_type));
                table.insert(
                    headers::ERROR_MESSAGE.into(),
                    long_string(headers::truncate_error_message(message)),
                );
                table.insert(
                    headers::FAILED_AT.into(),
                    AMQPValue::LongLongInt(now_ms() as i64),
                );
                table.insert(headers::WORKER.into(), long_string(&config.worker_id));
                table.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(attempts));
                table.insert(headers::QUEUE.into(), long_string(&self.queue));
                let props: BasicProperties = delivery.properties.clone().with_headers(table);
                let route = Route {
                    exchange: config.topology.dead_letter_exchange(),
                    routing_key: self.queue.to_string(),
                };
                let id = envelope.map(|e| e.id.to_string()).unwrap_or_default();
                publish::publish_confirmed(publisher, &route, &delivery.data, props, &id)
                    .await
                    .map_err(|e| e.to_string())?;
                WorkerStats::bump(&stats.dead_lettered);
                warn!(reason = reason.as_str(), %error_type, %message, "dead-lettered");
                Ok(())
            }
        }
    }
}

/// The headers without the broker's own (every name starting with `x-`),
/// for a copy the worker publishes.
pub(crate) fn without_broker_headers(headers: Option<&FieldTable>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers.into_iter().flat_map(|t| t.inner()) {
        if !name.as_str().starts_with("x-") {
            table.insert(name.clone(), value.clone());
        }
    }
    table
}

/// A failure as stored, its message truncated like the DLQ header.
fn failure(error_type: &str, message: &str) -> TaskFailure {
    TaskFailure {
        error_type: error_type.to_owned(),
        message: headers::truncate_error_message(message).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_headers_stay_behind_and_ours_are_kept() {
        let mut table = FieldTable::default();
        for name in [
            "x-death",
            "x-first-death-reason",
            "x-first-death-queue",
            "x-first-death-exchange",
            "x-last-death-reason",
            "x-delivery-count",
        ] {
            table.insert(name.into(), long_string("broker"));
        }
        table.insert(headers::TASK.into(), long_string("ping"));
        table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(2));
        table.insert("app-header".into(), long_string("kept"));
        let kept = without_broker_headers(Some(&table));
        let names: Vec<&str> = kept.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["app-header", "celeriac-attempt", "celeriac-task"]);
        assert!(without_broker_headers(None).inner().is_empty());
    }
}

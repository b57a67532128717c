//! The copy `replay` sends back to the work queue.
//!
//! A body that decodes is re-encoded with `attempt = 0`; its task id and
//! idempotency key stay, so that a worker's idempotency check can suppress
//! a second run of a task whose copy was sent twice. It goes through the
//! producer's routing ([`celeriac_producer::publish::route`]): the work
//! exchange, or the delay cascade when its ETA is still ahead. Properties
//! and task headers are the producer's; the broker's `x-` headers and the
//! failure headers are dropped; other headers are kept; `celeriac-replayed-at`
//! and `celeriac-replay-count` record the replay.
//!
//! A body that does not decode is sent unchanged, with its own properties,
//! to the work exchange, only when the caller allows it.

use celeriac_producer::publish::{envelope_headers, envelope_properties, route, Route};
use celeriac_schema::topology::validate_name;
use celeriac_schema::{encode, headers, Topology};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::dead_letter::{DeadLetter, REPLAYED_AT, REPLAY_COUNT};

/// Headers a dead letter carries that its replayed copy must not.
pub const FAILURE_HEADERS: [&str; 7] = [
    headers::REASON,
    headers::ERROR_TYPE,
    headers::ERROR_MESSAGE,
    headers::FAILED_AT,
    headers::WORKER,
    headers::ATTEMPTS,
    headers::LEASE,
];

/// A copy ready to publish.
#[derive(Debug, Clone)]
pub struct Copy {
    /// Where it goes.
    pub route: Route,
    /// Its body.
    pub body: Vec<u8>,
    /// Its properties and headers.
    pub properties: BasicProperties,
    /// The body was malformed and is sent unchanged.
    pub unchanged: bool,
}

/// Why a dead letter cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

/// Builds the replayed copy of `dl` at time `now_ms`.
///
/// # Errors
///
/// [`Skip`] for a malformed body (unless `allow_malformed`), an invalid
/// queue name, or an ETA beyond the longest delay.
pub fn prepare(
    topology: &Topology,
    dl: &DeadLetter,
    allow_malformed: bool,
    now_ms: u64,
) -> Result<Copy, Skip> {
    let queue = dl.queue.as_str();
    validate_name("queue", queue).map_err(|e| Skip(e.to_string()))?;
    let mut table = carried_headers(&dl.headers());
    match dl.envelope() {
        Ok(mut env) => {
            env.attempt = 0;
            let body = encode(&env).map_err(|e| Skip(format!("cannot re-encode: {e}")))?;
            let route = route(topology, queue, &env, now_ms).map_err(|e| Skip(e.to_string()))?;
            for (k, v) in envelope_headers(&env, queue).inner() {
                table.insert(k.clone(), v.clone());
            }
            mark(&mut table, dl.replay_count, now_ms);
            Ok(Copy {
                route,
                body,
                properties: envelope_properties(&env, table),
                unchanged: false,
            })
        }
        Err(e) if allow_malformed => {
            let _ = e;
            mark(&mut table, dl.replay_count, now_ms);
            Ok(Copy {
                route: Route {
                    exchange: topology.work_exchange(),
                    routing_key: queue.to_owned(),
                },
                body: dl.body.clone(),
                properties: dl.properties.clone().with_headers(table),
                unchanged: true,
            })
        }
        Err(e) => Err(Skip(format!(
            "malformed body ({e}); pass --allow-malformed to replay it unchanged"
        ))),
    }
}

/// The headers of a dead letter minus the broker's `x-` ones and the
/// failure headers.
pub fn carried_headers(table: &FieldTable) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in table.inner() {
        let name = k.as_str();
        if name.starts_with("x-") || FAILURE_HEADERS.contains(&name) {
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    out
}

fn mark(table: &mut FieldTable, previous: i64, now_ms: u64) {
    table.insert(
        REPLAYED_AT.into(),
        AMQPValue::LongLongInt(i64::try_from(now_ms).unwrap_or(i64::MAX)),
    );
    table.insert(
        REPLAY_COUNT.into(),
        AMQPValue::LongLongInt(previous.saturating_add(1)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::get_int;
    use celeriac_schema::Envelope;

    fn letter(body: Vec<u8>) -> DeadLetter {
        let mut t = FieldTable::default();
        t.insert(
            headers::REASON.into(),
            AMQPValue::LongString("rejected".into()),
        );
        t.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(3));
        t.insert("x-death".into(), AMQPValue::Void);
        t.insert("custom".into(), AMQPValue::LongString("kept".into()));
        t.insert(REPLAY_COUNT.into(), AMQPValue::LongLongInt(2));
        let props = BasicProperties::default().with_headers(t);
        DeadLetter::new("default", "ns", props, body)
    }

    #[test]
    fn resets_the_attempt_and_marks_the_replay() {
        let topo = Topology::new("ns").expect("valid");
        let mut env = Envelope::new("t", rmpv::Value::Nil);
        env.attempt = 3;
        env.idempotency_key = Some("k".into());
        let body = encode(&env).expect("encodes");
        let copy = prepare(&topo, &letter(body), false, 5).expect("prepared");
        let back = celeriac_schema::decode(&copy.body).expect("decodes");
        assert_eq!(back.attempt, 0);
        assert_eq!(back.id, env.id);
        assert_eq!(back.idempotency_key.as_deref(), Some("k"));
        assert_eq!(copy.route.exchange, "ns.work");
        let h = copy.properties.headers().clone().unwrap_or_default();
        assert_eq!(get_int(&h, headers::ATTEMPT), Some(0));
        assert_eq!(get_int(&h, REPLAY_COUNT), Some(3));
        assert_eq!(get_int(&h, REPLAYED_AT), Some(5));
        assert!(!h.contains_key(headers::REASON));
        assert!(!h.contains_key("x-death"));
        assert!(h.contains_key("custom"));
    }

    #[test]
    fn malformed_only_with_permission() {
        let topo = Topology::new("ns").expect("valid");
        assert!(prepare(&topo, &letter(vec![0xc1]), false, 0).is_err());
        let copy = prepare(&topo, &letter(vec![0xc1]), true, 0).expect("allowed");
        assert!(copy.unchanged);
        assert_eq!(copy.body, vec![0xc1]);
    }
}

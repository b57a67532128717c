//! `export` to NDJSON and `import` from it.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader};

use celeriac_producer::publish::{check_confirm, publish, Route, DEFAULT_CONFIRM_TIMEOUT};
use celeriac_schema::topology::validate_name;
use celeriac_schema::{headers, Topology};
use lapin::options::ConfirmSelectOptions;
use lapin::types::AMQPValue;
use lapin::{Channel, Connection, PublisherConfirm};
use serde_json::{json, Value};

use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::record;
use crate::scan::queue_length;

use super::common::{is_not_found, progress, read_only, Output, MAX_IN_FLIGHT};
use super::Outcome;

pub(super) async fn export(
    cli: &Cli,
    channel: &Channel,
    topology: &Topology,
    queues: &[String],
    filter: &Filter,
    limit: Option<u64>,
    out: &mut Output,
) -> Result<Outcome> {
    let matched = read_only(cli, channel, topology, queues, filter, limit, |dl| {
        out.line(record::full(&dl))?;
        Ok(true)
    })
    .await?;
    Ok(Outcome::from_counts(matched, 0))
}

pub(super) async fn import(
    cli: &Cli,
    connection: &Connection,
    channel: &Channel,
    topology: &Topology,
    input: Option<&std::path::Path>,
    into: Option<&str>,
    dry_run: bool,
) -> Result<Outcome> {
    let reader: Box<dyn BufRead> = match input {
        Some(path) => Box::new(BufReader::new(
            File::open(path).map_err(Error::io(format!("opening {}", path.display())))?,
        )),
        None => Box::new(BufReader::new(io::stdin())),
    };
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(Error::amqp("enabling publisher confirms"))?;
    let bar = progress(cli, 0, "importing");
    let mut known = HashSet::new();
    let mut in_flight: VecDeque<(PublisherConfirm, String, Route)> = VecDeque::new();
    let mut count = 0u64;
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(Error::io("reading the import file"))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| Error::BadRecord {
            line: index + 1,
            reason,
        };
        let mut rec = record::parse_line(&line).map_err(bad)?;
        if let Some(q) = into {
            rec.queue = q.to_owned();
        }
        validate_name("queue", &rec.queue).map_err(|e| bad(e.to_string()))?;
        let dlq = topology.dead_letter_queue(&rec.queue);
        if known.insert(rec.queue.clone()) {
            let probe = connection
                .create_channel()
                .await
                .map_err(Error::amqp("opening a channel"))?;
            match queue_length(&probe, &dlq).await {
                Ok(_) => {
                    let _ = probe.close(200, "ok".into()).await;
                }
                Err(Error::Amqp { source, .. }) if is_not_found(&source) => {
                    return Err(Error::UnknownQueue {
                        queue: rec.queue,
                        dlq,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        count += 1;
        bar.inc(1);
        if dry_run {
            continue;
        }
        let properties = explicit_failure_headers(rec.properties, &line);
        let route = Route {
            exchange: String::new(),
            routing_key: dlq,
        };
        let pending = publish(channel, &route, &rec.body, properties).await?;
        in_flight.push_back((pending, rec.task_id, route));
        if in_flight.len() >= MAX_IN_FLIGHT {
            if let Some((pending, id, route)) = in_flight.pop_front() {
                check_confirm(pending, &id, &route, DEFAULT_CONFIRM_TIMEOUT).await?;
            }
        }
    }
    while let Some((pending, id, route)) = in_flight.pop_front() {
        check_confirm(pending, &id, &route, DEFAULT_CONFIRM_TIMEOUT).await?;
    }
    bar.finish_and_clear();
    let verb = if dry_run { "would import" } else { "imported" };
    let mut out = Output::stdout();
    if cli.json {
        out.line(json!({"summary": {"action": verb, "count": count}}))?;
    } else {
        out.line(format_args!("{verb} {count} dead letters"))?;
    }
    out.flush()?;
    Ok(Outcome::from_counts(count, 0))
}

/// A broker dead letter's failure details live in `x-death`, which a
/// broker may not accept from a client (RabbitMQ 4 drops it): add the
/// equivalent `celeriac-reason`, `celeriac-queue` and `celeriac-failed-at`
/// headers when they are missing, never changing one that is there.
fn explicit_failure_headers(
    properties: lapin::BasicProperties,
    line: &str,
) -> lapin::BasicProperties {
    let mut table = properties.headers().clone().unwrap_or_default();
    if !table.contains_key("x-death") || table.contains_key(headers::REASON) {
        return properties;
    }
    let Ok(value) = serde_json::from_str::<Value>(line) else {
        return properties;
    };
    let mut add = |key: &str, v: AMQPValue| {
        if !table.contains_key(key) {
            table.insert(key.into(), v);
        }
    };
    if let Some(r) = value.get("reason").and_then(Value::as_str) {
        add(headers::REASON, AMQPValue::LongString(r.into()));
    }
    if let Some(q) = value.get("queue").and_then(Value::as_str) {
        add(headers::QUEUE, AMQPValue::LongString(q.into()));
    }
    if let Some(t) = value.get("failed_at").and_then(Value::as_i64) {
        add(headers::FAILED_AT, AMQPValue::LongLongInt(t));
    }
    properties.with_headers(table)
}

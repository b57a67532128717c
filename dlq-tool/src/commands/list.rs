//! `list`, `show` and `stats`: reading dead letters without changing the
//! DLQs.

use std::collections::BTreeMap;

use celeriac_schema::Topology;
use lapin::Channel;
use serde_json::{json, Value};
use tracing::warn;

use crate::cli::Cli;
use crate::dead_letter::DeadLetter;
use crate::error::Result;
use crate::filter::Filter;
use crate::record;

use super::common::{read_only, Output};
use super::Outcome;

const LIST_HEADER: &str = "TASK ID                              QUEUE            TASK                     REASON             ERROR TYPE           TRIES  FAILED AT";

fn list_line(dl: &DeadLetter) -> String {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    format!(
        "{:<36} {:<16} {:<24} {:<18} {:<20} {:>5}  {}",
        dash(&dl.task_id),
        dl.queue,
        dash(&dl.task),
        dash(&dl.reason),
        dash(&dl.error_type),
        dl.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
        dl.failed_at.map_or_else(|| "-".into(), record::rfc3339),
    )
}

pub(super) async fn list(
    cli: &Cli,
    channel: &Channel,
    topology: &Topology,
    queues: &[String],
    filter: &Filter,
    limit: Option<u64>,
    out: &mut Output,
) -> Result<Outcome> {
    let json = cli.json;
    let mut header = !json;
    let matched = read_only(cli, channel, topology, queues, filter, limit, |dl| {
        if header {
            out.line(LIST_HEADER)?;
            header = false;
        }
        if json {
            out.line(record::summary(&dl))?;
        } else {
            out.line(list_line(&dl))?;
        }
        Ok(true)
    })
    .await?;
    Ok(Outcome::from_counts(matched, 0))
}

pub(super) async fn show(
    cli: &Cli,
    channel: &Channel,
    topology: &Topology,
    queues: &[String],
    filter: &Filter,
    task_id: &str,
    out: &mut Output,
) -> Result<Outcome> {
    let json = cli.json;
    let matched = read_only(cli, channel, topology, queues, filter, None, |dl| {
        if json {
            out.line(record::full(&dl))?;
            return Ok(true);
        }
        let full = record::full(&dl);
        let field = |k: &str| match full.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".into(),
            Some(other) => other.to_string(),
        };
        for key in [
            "task_id",
            "task",
            "queue",
            "dlq_queue",
            "reason",
            "error_type",
            "error_message",
            "failed_at_rfc3339",
            "worker",
            "attempts",
            "replay_count",
            "size",
        ] {
            out.line(format_args!("{key:<18} {}", field(key)))?;
        }
        if let Some(e) = full.get("decode_error") {
            out.line(format_args!("{:<18} {e}", "decode_error"))?;
        }
        let pretty = |v: Option<&Value>| {
            v.and_then(|v| serde_json::to_string_pretty(v).ok())
                .unwrap_or_else(|| "null".into())
        };
        out.line(format_args!(
            "properties:\n{}",
            pretty(full.get("properties"))
        ))?;
        out.line(format_args!("headers:\n{}", pretty(full.get("headers"))))?;
        out.line(format_args!("envelope:\n{}", pretty(full.get("envelope"))))?;
        out.line(format_args!("body_base64: {}", field("body_base64")))?;
        out.line("")?;
        Ok(true)
    })
    .await?;
    if matched == 0 {
        warn!("no dead letter with task id {task_id}");
    }
    Ok(Outcome::from_counts(matched, 0))
}

pub(super) async fn stats(
    cli: &Cli,
    channel: &Channel,
    topology: &Topology,
    queues: &[String],
    filter: &Filter,
    out: &mut Output,
) -> Result<Outcome> {
    type Counts = BTreeMap<String, u64>;
    let mut by: [(&str, Counts); 4] = [
        ("queue", Counts::new()),
        ("task", Counts::new()),
        ("error_type", Counts::new()),
        ("reason", Counts::new()),
    ];
    let matched = read_only(cli, channel, topology, queues, filter, None, |dl| {
        let keys = [
            Some(dl.queue.clone()),
            dl.task.clone(),
            dl.error_type.clone(),
            dl.reason.clone(),
        ];
        for ((_, counts), key) in by.iter_mut().zip(keys) {
            *counts.entry(key.unwrap_or_else(|| "-".into())).or_default() += 1;
        }
        Ok(true)
    })
    .await?;
    if cli.json {
        let mut obj = serde_json::Map::new();
        obj.insert("total".into(), Value::from(matched));
        for (name, counts) in &by {
            obj.insert(format!("by_{name}"), json!(counts));
        }
        out.line(Value::Object(obj))?;
    } else {
        out.line(format_args!("total  {matched}"))?;
        for (name, counts) in &by {
            out.line(format_args!("\nby {}:", name.replace('_', " ")))?;
            let mut rows: Vec<_> = counts.iter().collect();
            rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (key, count) in rows {
                out.line(format_args!("  {count:>8}  {key}"))?;
            }
        }
    }
    Ok(Outcome::from_counts(matched, 0))
}

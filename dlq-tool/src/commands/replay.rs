//! `replay`: dead letters back to their queues, each original deleted
//! once the broker confirmed its copy.

use std::collections::VecDeque;

use celeriac_producer::publish::{check_confirm, publish, Route, DEFAULT_CONFIRM_TIMEOUT};
use celeriac_schema::{now_ms, Topology};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, PublisherConfirm};
use serde_json::json;
use tracing::warn;

use crate::cli::Cli;
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::replay::{self, Skip};
use crate::scan::DlqScan;
use crate::signing::{sign_copy, ReplaySigning, SignatureAction};

use super::common::{progress, report, total_length, Output, Pace, MAX_IN_FLIGHT};
use super::Outcome;

pub(super) struct ReplayOptions<'a> {
    pub(super) limit: Option<u64>,
    pub(super) rate: Option<f64>,
    pub(super) in_flight: Option<u32>,
    pub(super) dry_run: bool,
    pub(super) allow_malformed: bool,
    pub(super) signing: Option<ReplaySigning<'a>>,
}

#[derive(Default)]
struct Tally {
    matched: u64,
    replayed: u64,
    skipped: u64,
    failed: u64,
}

pub(super) async fn replay_all(
    cli: &Cli,
    channel: &Channel,
    topology: &Topology,
    queues: &[String],
    filter: &Filter,
    opts: &ReplayOptions<'_>,
    out: &mut Output,
) -> Result<Outcome> {
    if !opts.dry_run {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(Error::amqp("enabling publisher confirms"))?;
    }
    let window = match (opts.in_flight, opts.rate) {
        (Some(n), _) => n as usize,
        (None, Some(rate)) => ((rate / 10.0).ceil() as usize).clamp(1, MAX_IN_FLIGHT),
        (None, None) => MAX_IN_FLIGHT,
    };
    let bar = progress(
        cli,
        total_length(channel, topology, queues).await?,
        "replaying",
    );
    let mut pace = Pace::new(opts.rate);
    let mut tally = Tally::default();
    'queues: for queue in queues {
        let mut scan = DlqScan::start(channel, topology, queue).await?;
        let mut in_flight: VecDeque<(u64, PublisherConfirm, DeadLetter, Route)> = VecDeque::new();
        loop {
            if opts.limit.is_some_and(|l| tally.matched >= l) {
                settle_all(&mut scan, &mut in_flight, &mut tally, out, cli.json).await?;
                scan.finish().await?;
                break 'queues;
            }
            let Some((tag, mut dl)) = scan.next().await? else {
                break;
            };
            bar.inc(1);
            if filter.needs_body() {
                dl.fill_from_body();
            }
            if !filter.matches(&dl) {
                scan.hold(tag);
                continue;
            }
            tally.matched += 1;
            let prepared = replay::prepare(topology, &dl, opts.allow_malformed, now_ms())
                .and_then(|copy| sign_copy(copy, &dl, opts.signing));
            let (copy, signature) = match prepared {
                Ok(prepared) => prepared,
                Err(Skip(why)) => {
                    scan.hold(tag);
                    tally.skipped += 1;
                    dl.fill_from_body();
                    warn!(task_id = dl.task_id.as_deref().unwrap_or("-"), queue = %dl.queue, "skipped: {why}");
                    report(out, cli.json, &dl, "skipped", Some(&why))?;
                    continue;
                }
            };
            if opts.dry_run {
                scan.hold(tag);
                tally.replayed += 1;
                let why = match (copy.unchanged, &signature) {
                    (true, _) => Some("malformed body sent unchanged".to_owned()),
                    (false, SignatureAction::Signed(key)) => Some(format!("signed with key {key}")),
                    _ => None,
                };
                report(out, cli.json, &dl, "would-replay", why.as_deref())?;
                continue;
            }
            pace.wait().await;
            let pending = publish(channel, &copy.route, &copy.body, copy.properties).await?;
            in_flight.push_back((tag, pending, dl, copy.route));
            while in_flight.len() >= window {
                settle_one(&mut scan, &mut in_flight, &mut tally, out, cli.json).await?;
            }
        }
        settle_all(&mut scan, &mut in_flight, &mut tally, out, cli.json).await?;
        scan.finish().await?;
    }
    bar.finish_and_clear();
    let verb = if opts.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    if cli.json {
        out.line(
            json!({"summary": {"matched": tally.matched, "replayed": tally.replayed,
            "skipped": tally.skipped, "failed": tally.failed, "dry_run": opts.dry_run}}),
        )?;
    } else {
        out.line(format_args!(
            "{verb} {} of {} matching dead letters ({} skipped, {} failed)",
            tally.replayed, tally.matched, tally.skipped, tally.failed
        ))?;
    }
    if tally.failed > 0 {
        return Err(Error::Refused {
            count: tally.failed,
        });
    }
    Ok(Outcome::from_counts(tally.matched, tally.skipped))
}

/// Waits for the oldest copy's confirm; deletes its original when the
/// broker took it, keeps it otherwise.
async fn settle_one(
    scan: &mut DlqScan<'_>,
    in_flight: &mut VecDeque<(u64, PublisherConfirm, DeadLetter, Route)>,
    tally: &mut Tally,
    out: &mut Output,
    json: bool,
) -> Result<()> {
    let Some((tag, pending, dl, route)) = in_flight.pop_front() else {
        return Ok(());
    };
    let id = dl.task_id.clone().unwrap_or_else(|| "-".into());
    match check_confirm(pending, &id, &route, DEFAULT_CONFIRM_TIMEOUT).await {
        Ok(()) => {
            scan.done(tag).await?;
            tally.replayed += 1;
            if json {
                report(out, json, &dl, "replayed", None)?;
            }
        }
        Err(e) if !e.is_transient() || matches!(e, celeriac_producer::Error::Nacked { .. }) => {
            scan.hold(tag);
            tally.failed += 1;
            warn!(task_id = %id, "not replayed: {e}");
            report(out, json, &dl, "failed", Some(&e.to_string()))?;
        }
        Err(e) => return Err(e.into()),
    }
    // Acknowledge at once (the ack has no reply to wait for), so that a
    // kill leaves no more duplicates behind than the copies in flight.
    scan.flush().await?;
    Ok(())
}

async fn settle_all(
    scan: &mut DlqScan<'_>,
    in_flight: &mut VecDeque<(u64, PublisherConfirm, DeadLetter, Route)>,
    tally: &mut Tally,
    out: &mut Output,
    json: bool,
) -> Result<()> {
    while !in_flight.is_empty() {
        settle_one(scan, in_flight, tally, out, json).await?;
    }
    Ok(())
}

//! `purge`: deleting dead letters.

use celeriac_schema::Topology;
use lapin::Channel;
use serde_json::json;

use crate::cli::Cli;
use crate::error::Result;
use crate::filter::Filter;
use crate::scan::DlqScan;

use super::common::{progress, report, total_length, Output, Pace};
use super::Outcome;

#[allow(clippy::too_many_arguments)]
pub(super) async fn purge(
    cli: &Cli,
    channel: &Channel,
    topology: &Topology,
    queues: &[String],
    filter: &Filter,
    limit: Option<u64>,
    rate: Option<f64>,
    dry_run: bool,
    out: &mut Output,
) -> Result<Outcome> {
    let bar = progress(
        cli,
        total_length(channel, topology, queues).await?,
        "purging",
    );
    let mut pace = Pace::new(rate);
    let mut matched = 0u64;
    'queues: for queue in queues {
        let mut scan = DlqScan::start(channel, topology, queue).await?;
        loop {
            if limit.is_some_and(|l| matched >= l) {
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
            matched += 1;
            if dry_run {
                scan.hold(tag);
                report(out, cli.json, &dl, "would-purge", None)?;
                continue;
            }
            pace.wait().await;
            scan.done(tag).await?;
            if cli.json {
                report(out, true, &dl, "purged", None)?;
            }
        }
        scan.finish().await?;
    }
    bar.finish_and_clear();
    let verb = if dry_run { "would purge" } else { "purged" };
    if cli.json {
        out.line(json!({"summary": {"matched": matched, "dry_run": dry_run}}))?;
    } else {
        out.line(format_args!("{verb} {matched} dead letters"))?;
    }
    Ok(Outcome::from_counts(matched, 0))
}

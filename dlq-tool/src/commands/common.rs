//! What the commands share: the connection, the queues to read, the
//! output, the progress bar, pacing, and reading without changing the DLQs.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::time::Duration;

use celeriac_producer::redact_url;
use celeriac_producer::tls::TlsOptions;
use celeriac_schema::topology::DEFAULT_QUEUE;
use celeriac_schema::Topology;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::json;
use tokio::time::Instant;
use tracing::warn;

use crate::cli::Cli;
use crate::dead_letter::DeadLetter;
use crate::discover::Management;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::scan::{queue_length, DlqScan};

/// Copies in flight (published, confirm not yet seen) at most, without
/// `--rate`; with it, about a tenth of a second's worth.
pub(super) const MAX_IN_FLIGHT: usize = 256;

pub(super) async fn connect(url: &str, tls: &TlsOptions, timeout: Duration) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name("celeriac-dlq".into());
    let unreachable = |reason: String| Error::Unreachable {
        url: redact_url(url),
        reason,
    };
    tokio::time::timeout(timeout, celeriac_producer::tls::connect(url, props, tls))
        .await
        .map_err(|_| unreachable(format!("no connection within {timeout:?}")))?
        .map_err(|e| match e {
            celeriac_producer::Error::Amqp { source, .. } => unreachable(source.to_string()),
            e @ (celeriac_producer::Error::TlsConfig(_)
            | celeriac_producer::Error::InvalidUrl { .. }) => Error::Usage(e.to_string()),
            other => unreachable(other.to_string()),
        })
}

/// The logical queues to read, each with an existing DLQ.
pub(super) async fn resolve_queues(
    cli: &Cli,
    connection: &Connection,
    topology: &Topology,
) -> Result<Vec<String>> {
    let mut queues = cli.queues.clone();
    if queues.is_empty() {
        let management = Management::for_amqp(&cli.amqp_addr, cli.management_url.as_deref())?
            .with_tls(cli.tls());
        match management.dead_letter_queues(topology).await {
            Ok(found) => queues = found,
            Err(e) if cli.management_url.is_none() => {
                warn!("{e}; reading only the dead-letter queue of {DEFAULT_QUEUE:?}");
                queues = vec![DEFAULT_QUEUE.to_owned()];
            }
            Err(e) => return Err(e),
        }
    }
    let mut seen = HashSet::new();
    queues.retain(|q| seen.insert(q.clone()));
    for queue in &queues {
        // A missing queue closes the channel it was asked on.
        let probe = connection
            .create_channel()
            .await
            .map_err(Error::amqp("opening a channel"))?;
        let dlq = topology.dead_letter_queue(queue);
        match queue_length(&probe, &dlq).await {
            Ok(_) => {
                let _ = probe.close(200, "ok".into()).await;
            }
            Err(Error::Amqp { source, .. }) if is_not_found(&source) => {
                return Err(Error::UnknownQueue {
                    queue: queue.clone(),
                    dlq,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(queues)
}

pub(super) fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

/// Standard output or a file, buffered; a closed pipe is [`Error::BrokenPipe`].
pub(super) struct Output {
    inner: Box<dyn Write>,
}

impl Output {
    pub(super) fn stdout() -> Self {
        Output {
            inner: Box::new(BufWriter::new(io::stdout())),
        }
    }

    pub(super) fn file(file: File) -> Self {
        Output {
            inner: Box::new(BufWriter::new(file)),
        }
    }

    pub(super) fn line(&mut self, text: impl std::fmt::Display) -> Result<()> {
        writeln!(self.inner, "{text}").map_err(Error::io("writing output"))
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(Error::io("writing output"))
    }
}

/// A progress bar on standard error, hidden when it is not a terminal or
/// with `--json`.
pub(super) fn progress(cli: &Cli, total: u64, verb: &str) -> ProgressBar {
    if cli.json || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {wide_bar} {pos}/{len} [{elapsed_precise}, {per_sec}, eta {eta}]",
    ) {
        bar.set_style(style);
    }
    bar.set_message(verb.to_owned());
    bar
}

pub(super) async fn total_length(
    channel: &Channel,
    topology: &Topology,
    queues: &[String],
) -> Result<u64> {
    let mut total = 0u64;
    for q in queues {
        total += u64::from(queue_length(channel, &topology.dead_letter_queue(q)).await?);
    }
    Ok(total)
}

/// Calls `visit` on every matching dead letter without changing the DLQs;
/// `visit` returns `false` to stop.
pub(super) async fn read_only<F>(
    cli: &Cli,
    channel: &Channel,
    topology: &Topology,
    queues: &[String],
    filter: &Filter,
    limit: Option<u64>,
    mut visit: F,
) -> Result<u64>
where
    F: FnMut(DeadLetter) -> Result<bool>,
{
    let bar = progress(
        cli,
        total_length(channel, topology, queues).await?,
        "reading",
    );
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
            scan.hold(tag);
            dl.fill_from_body();
            if !filter.matches(&dl) {
                continue;
            }
            matched += 1;
            if !visit(dl)? {
                scan.finish().await?;
                break 'queues;
            }
        }
        scan.finish().await?;
    }
    bar.finish_and_clear();
    Ok(matched)
}

/// Sleeps so that calls come at most `rate` per second.
pub(super) struct Pace {
    interval: Option<Duration>,
    next: Instant,
}

impl Pace {
    pub(super) fn new(rate: Option<f64>) -> Self {
        Pace {
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Instant::now(),
        }
    }

    pub(super) async fn wait(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
        self.next = self.next.max(now) + interval;
    }
}

pub(super) fn report(
    out: &mut Output,
    json: bool,
    dl: &DeadLetter,
    action: &str,
    why: Option<&str>,
) -> Result<()> {
    let id = dl.task_id.as_deref().unwrap_or("-");
    if json {
        out.line(json!({"task_id": dl.task_id, "queue": dl.queue, "action": action, "why": why}))
    } else {
        match why {
            Some(why) => out.line(format_args!("{action:<12} {id} ({}): {why}", dl.queue)),
            None => out.line(format_args!("{action:<12} {id} ({})", dl.queue)),
        }
    }
}

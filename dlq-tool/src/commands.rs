//! The subcommands.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::time::Duration;

use celeriac_producer::publish::{check_confirm, publish, Route, DEFAULT_CONFIRM_TIMEOUT};
use celeriac_producer::redact_url;
use celeriac_producer::tls::TlsOptions;
use celeriac_schema::signing::Keyring;
use celeriac_schema::topology::{validate_name, DEFAULT_QUEUE};
use celeriac_schema::{headers, now_ms, Topology};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::options::ConfirmSelectOptions;
use lapin::types::AMQPValue;
use lapin::{Channel, Connection, ConnectionProperties, PublisherConfirm};
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::warn;

use crate::cli::{Cli, Command, FilterArgs};
use crate::dead_letter::DeadLetter;
use crate::discover::Management;
use crate::error::{exit, Error, Result};
use crate::filter::{parse_time, Filter};
use crate::record;
use crate::replay::{self, Skip};
use crate::scan::{queue_length, DlqScan};
use crate::signing::{sign_copy, ReplaySigning, SignatureAction};

/// How a command that ran to its end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Something matched and every action succeeded.
    Done,
    /// Nothing matched.
    NothingMatched,
    /// Some matching dead letters were skipped and stay in their DLQ.
    Partial,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => exit::OK,
            Outcome::NothingMatched => exit::NOTHING_MATCHED,
            Outcome::Partial => exit::PARTIAL,
        }
    }

    fn from_counts(matched: u64, skipped: u64) -> Self {
        if matched == 0 {
            Outcome::NothingMatched
        } else if skipped > 0 {
            Outcome::Partial
        } else {
            Outcome::Done
        }
    }
}

/// Copies in flight (published, confirm not yet seen) at most, without
/// `--rate`; with it, about a tenth of a second's worth.
const MAX_IN_FLIGHT: usize = 256;

/// Runs a parsed command line.
///
/// # Errors
///
/// Any [`Error`]; its [`exit_code`](Error::exit_code) is the process's.
pub async fn run(cli: Cli) -> Result<Outcome> {
    let topology = Topology::new(cli.namespace.clone())?;
    for queue in &cli.queues {
        validate_name("queue", queue)?;
    }
    // Check what can be checked before touching the broker.
    let now = now_ms();
    let filter = match &cli.command {
        Command::List { filter, .. }
        | Command::Stats { filter }
        | Command::Export { filter, .. }
        | Command::Replay { filter, .. }
        | Command::Purge { filter, .. } => build_filter(filter, now)?,
        Command::Show { task_id } => Filter {
            ids: HashSet::from([task_id.clone()]),
            ..Filter::default()
        },
        Command::Import { .. } => Filter::default(),
    };
    if let Command::Purge {
        yes: false,
        dry_run: false,
        ..
    } = &cli.command
    {
        return Err(Error::NotConfirmed { command: "purge" });
    }
    for rate in [rate_of(&cli.command)].into_iter().flatten() {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Error::Usage(format!(
                "--rate must be a positive number, not {rate}"
            )));
        }
    }
    if let Command::Import { into: Some(q), .. } = &cli.command {
        validate_name("queue", q)?;
    }
    let keyring = match &cli.signing_keys {
        Some(path) => Some(
            celeriac_producer::signing::load_keyring(path)
                .map_err(|e| Error::Usage(e.to_string()))?,
        ),
        None => None,
    };
    if let (
        Command::Replay {
            sign_unverified: true,
            ..
        },
        None,
    ) = (&cli.command, &keyring)
    {
        return Err(Error::Usage(
            "--sign-unverified needs --signing-keys (or CELERIAC_SIGNING_KEYS)".into(),
        ));
    }

    let connection = connect(&cli.amqp_addr, &cli.tls(), cli.connect_timeout).await?;
    let result = execute(&cli, &connection, &topology, &filter, keyring.as_ref()).await;
    // The work is done and acknowledged; a close the broker never
    // confirms must not keep the tool from exiting.
    let close = connection.close(200, "celeriac-dlq done".into());
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    result
}

/// How long to wait for the broker to confirm the connection's close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn rate_of(command: &Command) -> Option<f64> {
    match command {
        Command::Replay { rate, .. } | Command::Purge { rate, .. } => *rate,
        _ => None,
    }
}

async fn execute(
    cli: &Cli,
    connection: &Connection,
    topology: &Topology,
    filter: &Filter,
    keyring: Option<&Keyring>,
) -> Result<Outcome> {
    let channel = connection
        .create_channel()
        .await
        .map_err(Error::amqp("opening a channel"))?;
    if let Command::Import {
        input,
        into,
        dry_run,
    } = &cli.command
    {
        return import(
            cli,
            connection,
            &channel,
            topology,
            input.as_deref(),
            into.as_deref(),
            *dry_run,
        )
        .await;
    }
    let queues = resolve_queues(cli, connection, topology).await?;
    let mut out = Output::stdout();
    match &cli.command {
        Command::List { limit, .. } => {
            list(cli, &channel, topology, &queues, filter, *limit, &mut out).await
        }
        Command::Show { task_id } => {
            show(cli, &channel, topology, &queues, filter, task_id, &mut out).await
        }
        Command::Stats { .. } => stats(cli, &channel, topology, &queues, filter, &mut out).await,
        Command::Export { limit, output, .. } => {
            if let Some(path) = output {
                let file = File::create(path)
                    .map_err(Error::io(format!("creating {}", path.display())))?;
                let mut out = Output::file(file);
                let outcome =
                    export(cli, &channel, topology, &queues, filter, *limit, &mut out).await?;
                out.flush()?;
                Ok(outcome)
            } else {
                export(cli, &channel, topology, &queues, filter, *limit, &mut out).await
            }
        }
        Command::Replay {
            limit,
            rate,
            in_flight,
            dry_run,
            allow_malformed,
            sign_unverified,
            ..
        } => {
            let opts = ReplayOptions {
                limit: *limit,
                rate: *rate,
                in_flight: *in_flight,
                dry_run: *dry_run,
                allow_malformed: *allow_malformed,
                signing: keyring.map(|keyring| ReplaySigning {
                    keyring,
                    sign_unverified: *sign_unverified,
                }),
            };
            replay_all(cli, &channel, topology, &queues, filter, &opts, &mut out).await
        }
        Command::Purge {
            limit,
            rate,
            dry_run,
            ..
        } => {
            purge(
                cli, &channel, topology, &queues, filter, *limit, *rate, *dry_run, &mut out,
            )
            .await
        }
        Command::Import { .. } => Ok(Outcome::NothingMatched),
    }
    .and_then(|outcome| {
        out.flush()?;
        Ok(outcome)
    })
}

fn build_filter(args: &FilterArgs, now: u64) -> Result<Filter> {
    let set = |v: &[String]| v.iter().filter(|s| !s.is_empty()).cloned().collect();
    let filter = Filter {
        tasks: set(&args.tasks),
        error_types: set(&args.error_types),
        reasons: set(&args.reasons),
        ids: set(&args.ids),
        since: args
            .since
            .as_deref()
            .map(|s| parse_time(s, now))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|s| parse_time(s, now))
            .transpose()?,
    };
    if let (Some(since), Some(until)) = (filter.since, filter.until) {
        if since >= until {
            return Err(Error::Usage(format!(
                "--since ({}) is not before --until ({})",
                record::rfc3339(since),
                record::rfc3339(until)
            )));
        }
    }
    Ok(filter)
}

async fn connect(url: &str, tls: &TlsOptions, timeout: Duration) -> Result<Connection> {
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
async fn resolve_queues(
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

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

/// Standard output or a file, buffered; a closed pipe is [`Error::BrokenPipe`].
struct Output {
    inner: Box<dyn Write>,
}

impl Output {
    fn stdout() -> Self {
        Output {
            inner: Box::new(BufWriter::new(io::stdout())),
        }
    }

    fn file(file: File) -> Self {
        Output {
            inner: Box::new(BufWriter::new(file)),
        }
    }

    fn line(&mut self, text: impl std::fmt::Display) -> Result<()> {
        writeln!(self.inner, "{text}").map_err(Error::io("writing output"))
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(Error::io("writing output"))
    }
}

/// A progress bar on standard error, hidden when it is not a terminal or
/// with `--json`.
fn progress(cli: &Cli, total: u64, verb: &str) -> ProgressBar {
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

async fn total_length(channel: &Channel, topology: &Topology, queues: &[String]) -> Result<u64> {
    let mut total = 0u64;
    for q in queues {
        total += u64::from(queue_length(channel, &topology.dead_letter_queue(q)).await?);
    }
    Ok(total)
}

/// Calls `visit` on every matching dead letter without changing the DLQs;
/// `visit` returns `false` to stop.
async fn read_only<F>(
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

async fn list(
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

async fn show(
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

async fn stats(
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

async fn export(
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

async fn import(
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

/// Sleeps so that calls come at most `rate` per second.
struct Pace {
    interval: Option<Duration>,
    next: Instant,
}

impl Pace {
    fn new(rate: Option<f64>) -> Self {
        Pace {
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
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

struct ReplayOptions<'a> {
    limit: Option<u64>,
    rate: Option<f64>,
    in_flight: Option<u32>,
    dry_run: bool,
    allow_malformed: bool,
    signing: Option<ReplaySigning<'a>>,
}

#[derive(Default)]
struct Tally {
    matched: u64,
    replayed: u64,
    skipped: u64,
    failed: u64,
}

fn report(
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

async fn replay_all(
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

#[allow(clippy::too_many_arguments)]
async fn purge(
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

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldTable;

    #[test]
    fn outcomes() {
        assert_eq!(Outcome::from_counts(0, 0), Outcome::NothingMatched);
        assert_eq!(Outcome::from_counts(2, 1), Outcome::Partial);
        assert_eq!(Outcome::from_counts(2, 0), Outcome::Done);
        assert_eq!(Outcome::Partial.exit_code(), exit::PARTIAL);
    }

    #[test]
    fn empty_table_has_no_reason() {
        let t = FieldTable::default();
        assert!(!t.contains_key(headers::REASON));
    }
}

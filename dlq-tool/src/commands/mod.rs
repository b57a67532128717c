//! The subcommands, in modules by command: `list` (`list`, `show`,
//! `stats`), `export` (`export`, `import`), `replay` and `purge`, with what
//! they share in `common`.

mod common;
mod export;
mod list;
mod purge;
mod replay;

use std::collections::HashSet;
use std::fs::File;
use std::time::Duration;

use celeriac_schema::signing::Keyring;
use celeriac_schema::topology::validate_name;
use celeriac_schema::{now_ms, Topology};
use lapin::Connection;

use crate::cli::{Cli, Command, FilterArgs};
use crate::error::{exit, Error, Result};
use crate::filter::{parse_time, Filter};
use crate::record;
use crate::signing::ReplaySigning;
use common::{connect, resolve_queues, Output};
use export::{export, import};
use list::{list, show, stats};
use purge::purge;
use replay::{replay_all, ReplayOptions};

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

#[cfg(test)]
mod tests {
    use super::*;
    use celeriac_schema::headers;
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

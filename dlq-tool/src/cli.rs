//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Exit codes, shown at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure: broker unreachable, a broker or file error, a copy the broker refused
  2  usage: bad flags, bad time, unknown queue, a bad import line, purge without --yes
  3  nothing matched the filters (an empty dead-letter queue included)
  4  partial: some matching dead letters were skipped (replay of a malformed body
     without --allow-malformed, or of one whose signature does not verify without
     --sign-unverified) and stay in the dead-letter queue

Filters combine with AND; a repeated or comma-separated filter matches any of its values.
Times (--since, --until) apply to celeriac-failed-at (or the broker's x-death time) and take
RFC 3339 (2025-01-31T12:00:00Z) or a duration ago (30m, 2h, 7d).";

/// Inspect, export, import, replay and purge celeriac dead letters.
///
/// Dead letters live in `{namespace}.dlq.{queue}`. Reading commands (list,
/// show, stats, export) leave the queues exactly as they were; replay and
/// purge remove a dead letter only after its copy is confirmed by the
/// broker (replay) or on purpose (purge --yes).
#[derive(Debug, Parser)]
#[command(name = "celeriac-dlq", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Broker URL.
    #[arg(
        long,
        env = "AMQP_ADDR",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        global = true,
        hide_env_values = true
    )]
    pub amqp_addr: String,

    /// Namespace prefix of every queue.
    #[arg(
        long,
        env = "CELERIAC_NAMESPACE",
        default_value = "celeriac",
        global = true
    )]
    pub namespace: String,

    /// Logical work queues whose dead letters to read (repeat or
    /// comma-separate); default: every dead-letter queue of the namespace,
    /// listed through the management API.
    #[arg(short = 'Q', long = "queue", value_delimiter = ',', global = true)]
    pub queues: Vec<String>,

    /// RabbitMQ management API base URL, to find the dead-letter queues when
    /// --queue is not given [default: http://{broker host}:15672, or
    /// https://{broker host}:15671 for an amqps:// broker].
    #[arg(long, env = "CELERIAC_MANAGEMENT_URL", global = true)]
    pub management_url: Option<String>,

    /// Print JSON Lines instead of tables; hides the progress bar.
    #[arg(long, global = true)]
    pub json: bool,

    /// How long to try to reach the broker.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub connect_timeout: Duration,

    /// Key file of clusters whose workers require signed messages: one
    /// `<key-id> <base64 secret>` per line, `#` comments. `replay` keeps a
    /// dead letter's signature when the copy is unchanged, signs the copy
    /// with the first key when the replay changed it, and skips dead
    /// letters whose own signature does not verify (see
    /// --sign-unverified).
    #[arg(
        long,
        env = "CELERIAC_SIGNING_KEYS",
        value_name = "PATH",
        global = true
    )]
    pub signing_keys: Option<PathBuf>,
    /// CA bundle (PEM) to trust for an amqps:// broker and an https://
    /// management API, instead of the system's root certificates.
    #[arg(long, env = "CELERIAC_TLS_CA", value_name = "PATH", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with the broker and the
    /// management API; needs --tls-key.
    #[arg(long, env = "CELERIAC_TLS_CERT", value_name = "PATH", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM, unencrypted) of --tls-cert.
    #[arg(long, env = "CELERIAC_TLS_KEY", value_name = "PATH", global = true)]
    pub tls_key: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The TLS options of `--tls-ca`, `--tls-cert` and `--tls-key`.
    ///
    /// # Examples
    ///
    /// ```
    /// use clap::Parser;
    ///
    /// let cli = celeriac_dlq::Cli::parse_from(["celeriac-dlq", "--tls-ca", "/etc/ca.pem", "stats"]);
    /// assert_eq!(cli.tls().ca_path().and_then(|p| p.to_str()), Some("/etc/ca.pem"));
    /// ```
    pub fn tls(&self) -> celeriac_producer::tls::TlsOptions {
        let mut tls = celeriac_producer::tls::TlsOptions::new();
        if let Some(ca) = &self.tls_ca {
            tls = tls.ca(ca);
        }
        if let Some(cert) = &self.tls_cert {
            tls = tls.cert(cert);
        }
        if let Some(key) = &self.tls_key {
            tls = tls.key(key);
        }
        tls
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One line per matching dead letter.
    List {
        /// Which dead letters.
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Everything about the dead letters of one task: headers, error,
    /// decoded envelope, body.
    Show {
        /// The task id.
        task_id: String,
    },
    /// Counts by queue, task, error type and reason.
    Stats {
        /// Which dead letters.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Writes matching dead letters as JSON Lines, body in base64 (byte for
    /// byte), properties and typed headers, plus decoded fields for people.
    Export {
        /// Which dead letters.
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Publishes exported dead letters back into their dead-letter queues.
    Import {
        /// Read here instead of standard input.
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Put every record into this logical queue's DLQ instead of its own.
        #[arg(long)]
        into: Option<String>,
        /// Check the file and count, publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Sends matching dead letters back to their work queue with the attempt
    /// reset to 0 and a replay header; each is deleted from the DLQ only
    /// after the broker confirmed its copy.
    Replay {
        /// Which dead letters.
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
        /// At most this many messages per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Copies published and not yet confirmed at once, at most
        /// [default: 256, or a tenth of a second's worth at --rate]. A
        /// killed run leaves at most this many duplicate copies.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        in_flight: Option<u32>,
        /// Show what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay bodies that do not decode unchanged (their attempt cannot
        /// be reset); without it they are skipped and reported.
        #[arg(long)]
        allow_malformed: bool,
        /// With --signing-keys: also sign and replay dead letters whose own
        /// signature does not verify (unsigned, forged, or signed with a
        /// removed key: reason bad-signature). Look at them first.
        #[arg(long)]
        sign_unverified: bool,
    },
    /// Deletes matching dead letters. Needs --yes.
    Purge {
        /// Which dead letters.
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
        /// At most this many messages per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Count what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

/// Filters shared by the commands that scan.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Task names.
    #[arg(long = "task", value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Error types (`celeriac-error-type`).
    #[arg(long = "error-type", value_delimiter = ',')]
    pub error_types: Vec<String>,
    /// Reasons: retries-exhausted, rejected, unknown-task, malformed,
    /// delivery-limit, forbidden, bad-signature.
    #[arg(long = "reason", value_delimiter = ',')]
    pub reasons: Vec<String>,
    /// Task ids.
    #[arg(long = "id", value_delimiter = ',')]
    pub ids: Vec<String>,
    /// Dead-lettered at or after this time.
    #[arg(long)]
    pub since: Option<String>,
    /// Dead-lettered before this time.
    #[arg(long)]
    pub until: Option<String>,
}

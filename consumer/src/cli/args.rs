//! The worker's command-line options.

use std::time::Duration;

use clap::Parser;

use super::{FairQueue, LogFormat, MetricsAddr, TlsArgs, UrgencyArgs, DEFAULT_AMQP_ADDR};

/// The worker's options (see `--help`).
#[derive(Debug, Parser)]
#[command(
    name = "celeriac-worker",
    version,
    about = "Runs celeriac tasks from RabbitMQ queues.",
    after_help = "Every option can also come from the environment variable shown.\nPrograms as tasks: celeriac.exec is always registered; it runs only programs named by --exec-allow, so with no allowlist every exec task is dead-lettered with reason `forbidden`.\nExit codes: 0 after a clean shutdown (SIGTERM or SIGINT; a second signal exits at once with 130), 1 when the worker fails, 2 for invalid options."
)]
pub struct Args {
    /// Broker URL: amqp://user:password@host:port/vhost (%2f is the
    /// default vhost "/"); default amqp://guest:guest@127.0.0.1:5672/%2f.
    /// A flag's value is visible to every process (/proc/PID/cmdline):
    /// prefer the variable, or --amqp-addr-file.
    #[arg(long, env = "AMQP_ADDR", hide_env_values = true)]
    pub amqp_addr: Option<String>,

    /// A file holding the broker URL (e.g. a mounted secret); a trailing
    /// newline is ignored. Not together with --amqp-addr / AMQP_ADDR.
    #[arg(long, env = "AMQP_ADDR_FILE")]
    pub amqp_addr_file: Option<std::path::PathBuf>,

    /// Namespace prefix of every exchange and queue; producers must use the
    /// same.
    #[arg(long, env = "CELERIAC_NAMESPACE", default_value = "celeriac")]
    pub namespace: String,

    /// Logical queue to consume; repeat the flag or separate with commas.
    #[arg(
        long = "queue",
        short = 'Q',
        env = "CELERIAC_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,

    /// Most tasks running at once, across all queues.
    #[arg(long, short = 'c', env = "CELERIAC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,

    /// Unacked deliveries the broker may push to each queue's consumer
    /// (default: four times the concurrency). Keep it deep for short tasks,
    /// small for long ones so waiting messages go to other workers.
    #[arg(long, env = "CELERIAC_PREFETCH")]
    pub prefetch: Option<u16>,

    /// Fair queues, QUEUE=SHARDS (e.g. default=8): tenants share them
    /// round-robin. Repeat or separate with commas; wins over the store's.
    #[arg(long = "fair", env = "CELERIAC_FAIR", value_delimiter = ',')]
    pub fair: Vec<FairQueue>,

    /// On SIGTERM/SIGINT, how long in-flight tasks may finish before the
    /// rest go back to the queue (e.g. 30s, 2m).
    #[arg(long, env = "CELERIAC_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,

    /// Identity in logs and dead-letter headers (default: host-pid).
    #[arg(long, env = "CELERIAC_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Redeliveries a message may have (after a crashed worker or a
    /// requeue) before the broker dead-letters it: with a limit of N it runs
    /// at most N + 1 times. Must match the producers' (queue argument
    /// x-delivery-limit).
    #[arg(long, env = "CELERIAC_DELIVERY_LIMIT", default_value_t = celeriac_schema::topology::DEFAULT_DELIVERY_LIMIT)]
    pub delivery_limit: u32,

    /// The broker's consumer (ack) timeout; a task running past half of it
    /// swaps its delivery for a lease so it is neither lost nor run twice.
    #[arg(long, env = "CELERIAC_CONSUMER_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub consumer_timeout: Duration,

    /// How long a leased task's parked copy waits before going back to the
    /// queue if this worker stops renewing it.
    #[arg(long, env = "CELERIAC_LEASE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// Largest message body accepted, in bytes; larger ones are
    /// dead-lettered as malformed.
    #[arg(long, env = "CELERIAC_MAX_MESSAGE_BYTES", default_value_t = celeriac_schema::DecodeLimits::DEFAULT_MAX_BYTES)]
    pub max_message_bytes: usize,

    /// Threads of the async runtime (default: one per CPU). Handlers that
    /// mostly wait on I/O often run best on one or two.
    #[arg(long, env = "CELERIAC_THREADS")]
    pub threads: Option<usize>,

    /// The Redis state store (`redis://[:password@]host:port[/db]`): task
    /// states, results, idempotency keys and run leases. Without it tasks
    /// run without results or duplicate suppression.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// A file holding the Redis URL (e.g. a mounted secret); a trailing
    /// newline is ignored. Not together with --redis-url / REDIS_URL.
    #[arg(long, env = "REDIS_URL_FILE")]
    pub redis_url_file: Option<std::path::PathBuf>,

    /// Run without a state store even if REDIS_URL is set.
    #[arg(long, env = "CELERIAC_NO_STORE", conflicts_with = "redis_url")]
    pub no_store: bool,

    /// How long task records and results are kept after their last change.
    #[arg(long, env = "CELERIAC_RESULT_TTL", default_value = "1day", value_parser = humantime::parse_duration)]
    pub result_ttl: Duration,

    /// How long an idempotency key that succeeded is remembered.
    #[arg(long, env = "CELERIAC_KEY_TTL", default_value = "1day", value_parser = humantime::parse_duration)]
    pub key_ttl: Duration,

    /// How long a run lease lasts without renewal (renewed every third of
    /// it); a task whose worker died runs again once it expires.
    #[arg(long, env = "CELERIAC_RUN_LEASE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub run_lease_ttl: Duration,

    /// Publish task events (received, started, succeeded, failed,
    /// retried, expired, revoked, dead-lettered) to the events exchange
    /// `{namespace}.events`; watch them with `celeriac events`.
    #[arg(long, env = "CELERIAC_EVENTS")]
    pub events: bool,

    /// How often the worker publishes its `worker.heartbeat` event and,
    /// with a store, refreshes its entry in `celeriac workers` and re-reads
    /// revocations and task limits. Silent for three periods: shown as lost.
    #[arg(long, env = "CELERIAC_HEARTBEAT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub policy: crate::cli_policy::PolicyArgs,

    /// Where to serve /metrics (Prometheus), /healthz and /readyz;
    /// `off` (or empty) for no server. Loopback by default: give
    /// 0.0.0.0:9464 to let Prometheus on another host scrape it (the Helm
    /// chart does, and can add a NetworkPolicy and a bearer token).
    #[arg(long, env = "CELERIAC_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: MetricsAddr,

    /// A file holding the bearer token that /metrics requires
    /// (`Authorization: Bearer <token>`); surrounding whitespace is
    /// ignored. /healthz and /readyz stay open.
    #[arg(long, env = "CELERIAC_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<std::path::PathBuf>,

    /// How often the metrics sample the depth and consumers of the consumed
    /// queues and their dead-letter queues.
    #[arg(long, env = "CELERIAC_QUEUE_SAMPLE_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub queue_sample_interval: Duration,

    /// Require signed messages: a key file with one `<key-id> <base64
    /// secret>` per line (`#` comments). Every key verifies; the first
    /// signs what the worker publishes (retries, released workflow nodes,
    /// subtasks). Unsigned or badly signed messages are dead-lettered with
    /// reason `bad-signature`, never run.
    #[arg(long, env = "CELERIAC_SIGNING_KEYS", value_name = "PATH")]
    pub signing_keys: Option<std::path::PathBuf>,

    /// Log format.
    #[arg(long, env = "CELERIAC_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Programs that `celeriac.exec` tasks may run: names looked up on
    /// PATH, paths, or `*` for any, each optionally with argument patterns
    /// (`python3 /opt/jobs/*.py`: the task's arguments must match, and `-c`
    /// never does); repeat the flag or separate with commas. A program
    /// named alone takes any arguments (an interpreter: any code). Without
    /// it every exec task is dead-lettered as forbidden.
    #[arg(long, env = "CELERIAC_EXEC_ALLOW", value_delimiter = ',')]
    pub exec_allow: Vec<String>,

    /// Run programs as USER or USER:GROUP (names or numeric ids), with no
    /// supplementary groups. The worker refuses to start when the user
    /// does not exist or it cannot switch to it (needs root or
    /// CAP_SETUID/CAP_SETGID).
    #[arg(long, env = "CELERIAC_EXEC_USER", value_parser = parse_user)]
    pub exec_user: Option<crate::exec::ExecUser>,

    /// The network programs see: `host` (the worker's) or `none` (a new,
    /// empty network namespace per run; the worker refuses to start when
    /// it cannot create one).
    #[arg(long, env = "CELERIAC_EXEC_NETWORK", default_value = "host")]
    pub exec_network: crate::exec::ExecNetwork,

    /// Variables of the worker's environment that programs see, besides
    /// PATH, LANG, LC_ALL, LC_CTYPE and TZ; repeat or separate with commas.
    #[arg(long, env = "CELERIAC_EXEC_ENV_ALLOW", value_delimiter = ',')]
    pub exec_env_allow: Vec<String>,

    /// Where each program run gets a fresh working directory, removed
    /// afterwards (default: celeriac-exec in the system's temporary
    /// directory).
    #[arg(long, env = "CELERIAC_EXEC_WORKDIR")]
    pub exec_workdir: Option<std::path::PathBuf>,

    /// Largest address space of each process of a program (RLIMIT_AS),
    /// and, with a cgroup v2, the memory of the whole run (memory.max),
    /// e.g. 512M, 2G.
    #[arg(long, env = "CELERIAC_EXEC_MEMORY_LIMIT", value_parser = crate::exec::parse_bytes)]
    pub exec_memory_limit: Option<u64>,

    /// CPU time each process of a program may use (RLIMIT_CPU), e.g. 30s,
    /// 5m.
    #[arg(long, env = "CELERIAC_EXEC_CPU_LIMIT", value_parser = humantime::parse_duration)]
    pub exec_cpu_limit: Option<Duration>,

    /// CPU bandwidth of each run in CPUs, e.g. 0.5 or 2 (cgroup v2
    /// cpu.max; no rlimit can do this, so without a cgroup it is not
    /// enforced, as the worker says at start-up).
    #[arg(long, env = "CELERIAC_EXEC_CPUS")]
    pub exec_cpus: Option<f64>,

    /// Most processes and threads of a run (cgroup v2 pids.max; without a
    /// cgroup, RLIMIT_NPROC: per user, not per run, and not for root).
    #[arg(long, env = "CELERIAC_EXEC_PIDS_LIMIT")]
    pub exec_pids_limit: Option<u64>,

    /// The cgroup v2 under which each run gets its own cgroup with the
    /// limits: `auto` (the worker's own, when delegated: it moves itself
    /// into a leaf below it), `off`, or a delegated cgroup directory (the
    /// worker refuses to start if it cannot use it). Without one, rlimits
    /// alone; the start-up log says which.
    #[arg(long, env = "CELERIAC_EXEC_CGROUP", default_value = "auto")]
    pub exec_cgroup: crate::exec::CgroupMode,

    /// Most stdout a program may print, e.g. 16M; past it the program is
    /// killed and its task fails.
    #[arg(long, env = "CELERIAC_EXEC_MAX_OUTPUT", default_value = "16M", value_parser = parse_size)]
    pub exec_max_output: usize,

    /// How long a program may take to exit after SIGTERM at its soft time
    /// limit before SIGKILL, when no hard time limit comes sooner.
    #[arg(long, env = "CELERIAC_EXEC_TERM_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub exec_term_grace: Duration,

    /// TLS to the broker (amqps://) and Redis (rediss://).
    #[command(flatten)]
    pub tls: TlsArgs,

    /// Urgent-first weighting and wait thresholds.
    #[command(flatten)]
    pub urgency: UrgencyArgs,
}

impl Args {
    /// The exec runner's configuration from the `--exec-*` options.
    ///
    /// # Examples
    ///
    /// ```
    /// use clap::Parser;
    /// use celeriac_consumer::cli::Args;
    ///
    /// let args = Args::parse_from(["celeriac-worker", "--exec-allow", "python3,bash", "--exec-memory-limit", "1G"]);
    /// let config = args.exec_config();
    /// assert_eq!(config.allowed(), ["python3", "bash"]);
    /// assert_eq!(config.memory(), Some(1 << 30));
    /// ```
    pub fn exec_config(&self) -> crate::exec::ExecConfig {
        let mut config = crate::exec::ExecConfig::new()
            .max_output(self.exec_max_output)
            .term_grace(self.exec_term_grace);
        for program in &self.exec_allow {
            config = config.allow(program.trim());
        }
        for name in &self.exec_env_allow {
            config = config.env_allow(name.trim());
        }
        if let Some(root) = &self.exec_workdir {
            config = config.workdir_root(root);
        }
        if let Some(bytes) = self.exec_memory_limit {
            config = config.memory_limit(bytes);
        }
        if let Some(limit) = self.exec_cpu_limit {
            config = config.cpu_limit(limit);
        }
        if let Some(cpus) = self.exec_cpus {
            config = config.cpus(cpus);
        }
        if let Some(count) = self.exec_pids_limit {
            config = config.pids_limit(count);
        }
        if let Some(user) = &self.exec_user {
            config = config.user(user.clone());
        }
        config
            .network(self.exec_network)
            .cgroup(self.exec_cgroup.clone())
    }

    /// The broker URL, from `--amqp-addr` or `--amqp-addr-file`, else the
    /// local default.
    ///
    /// # Errors
    ///
    /// See [`secrets::resolve`](crate::secrets::resolve).
    pub fn broker_url(&self) -> crate::Result<String> {
        let url = crate::secrets::resolve(
            crate::secrets::AMQP_ADDR,
            self.amqp_addr.clone(),
            self.amqp_addr_file.as_deref(),
        )?;
        Ok(url.unwrap_or_else(|| DEFAULT_AMQP_ADDR.to_owned()))
    }

    /// The Redis URL, from `--redis-url` or `--redis-url-file`; `None`
    /// for no store (neither given, or `--no-store`).
    ///
    /// # Errors
    ///
    /// See [`secrets::resolve`](crate::secrets::resolve).
    pub fn store_url(&self) -> crate::Result<Option<String>> {
        if self.no_store {
            return Ok(None);
        }
        crate::secrets::resolve(
            crate::secrets::REDIS_URL,
            self.redis_url.clone(),
            self.redis_url_file.as_deref(),
        )
    }
}

fn parse_user(value: &str) -> Result<crate::exec::ExecUser, String> {
    value.parse()
}

fn parse_size(value: &str) -> Result<usize, String> {
    let bytes = crate::exec::parse_bytes(value)?;
    usize::try_from(bytes).map_err(|_| format!("`{value}` is too large"))
}

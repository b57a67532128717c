//! Test support: a real broker for every test, a fresh namespace per test,
//! worker processes to start, signal and kill, and helpers to look into
//! queues.
//!
//! The broker comes from `AMQP_ADDR` when it is set (CI and machines with a
//! local RabbitMQ); otherwise a RabbitMQ container is started with
//! testcontainers. A test that can reach neither fails and says how to
//! provide one: it never passes silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use celeriac_schema::topology::Declaration;
use celeriac_schema::Topology;
use lapin::options::{
    BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use testcontainers::core::{ContainerPort, ExecCommand, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage};
use tokio::sync::OnceCell;

pub use ::redis as redis_client;
pub use lapin;

pub mod http;
pub mod latency;
pub mod scenarios;
pub mod tls;

/// How a test gets a broker, said in every failure to find one.
pub const HOW_TO_PROVIDE_A_BROKER: &str = "set AMQP_ADDR=amqp://guest:guest@127.0.0.1:5672/%2f \
     to a RabbitMQ 3.10+ (e.g. `apt-get install rabbitmq-server && rabbitmq-server -detached`), \
     or run a Docker engine so that testcontainers can start one";

/// A broker the tests can use.
#[derive(Debug)]
pub struct Broker {
    /// The AMQP URL.
    pub url: String,
    container: Option<ContainerAsync<GenericImage>>,
}

static BROKER: OnceCell<Broker> = OnceCell::const_new();

/// The broker shared by all tests of this process.
///
/// # Panics
///
/// When no broker can be found or started, with a message saying how to
/// provide one.
pub async fn broker() -> &'static Broker {
    BROKER
        .get_or_init(|| async {
            match std::env::var("AMQP_ADDR") {
                Ok(url) if !url.is_empty() => {
                    let broker = Broker {
                        url,
                        container: None,
                    };
                    if let Err(e) = Connection::connect(&broker.url, ConnectionProperties::default()).await {
                        panic!(
                            "cannot reach the broker at AMQP_ADDR={}: {e}; {HOW_TO_PROVIDE_A_BROKER}",
                            celeriac_producer::redact_url(&broker.url)
                        );
                    }
                    broker
                }
                _ => start_container().await,
            }
        })
        .await
}

async fn start_container() -> Broker {
    let image = GenericImage::new("rabbitmq", "3.13-management")
        .with_exposed_port(ContainerPort::Tcp(5672))
        .with_wait_for(WaitFor::message_on_stdout("Server startup complete"));
    let container = match image.start().await {
        Ok(c) => c,
        Err(e) => panic!("AMQP_ADDR is not set and no RabbitMQ container could be started ({e}); {HOW_TO_PROVIDE_A_BROKER}"),
    };
    let port = match container.get_host_port_ipv4(5672).await {
        Ok(p) => p,
        Err(e) => {
            panic!("the RabbitMQ container exposes no AMQP port ({e}); {HOW_TO_PROVIDE_A_BROKER}")
        }
    };
    Broker {
        url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        container: Some(container),
    }
}

impl Broker {
    /// Runs `rabbitmqctl` against this broker and returns its stdout.
    ///
    /// # Panics
    ///
    /// When rabbitmqctl cannot be run or fails.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> String {
        match &self.container {
            Some(container) => {
                let mut cmd = vec!["rabbitmqctl"];
                cmd.extend_from_slice(args);
                let mut result = container
                    .exec(ExecCommand::new(cmd))
                    .await
                    .unwrap_or_else(|e| panic!("rabbitmqctl {args:?} in the container: {e}"));
                let out = result.stdout_to_vec().await.unwrap_or_default();
                String::from_utf8_lossy(&out).into_owned()
            }
            None => {
                let out = Command::new("rabbitmqctl")
                    .args(args)
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run rabbitmqctl {args:?} (the tests that inject broker faults need it on PATH): {e}"));
                assert!(
                    out.status.success(),
                    "rabbitmqctl {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        }
    }

    /// Opens a plain connection and channel.
    ///
    /// # Panics
    ///
    /// When the broker cannot be reached.
    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connect to the broker: {e}; {HOW_TO_PROVIDE_A_BROKER}"));
        let channel = conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("open a channel: {e}"));
        (conn, channel)
    }
}

/// How a test gets a Redis, said in every failure to find one.
pub const HOW_TO_PROVIDE_REDIS: &str = "set REDIS_URL=redis://127.0.0.1:6379 to a Redis 6+ \
     (e.g. `apt-get install redis-server && redis-server --daemonize yes`), \
     or run a Docker engine so that testcontainers can start one";

/// A Redis the tests can use.
#[derive(Debug)]
pub struct Redis {
    /// The Redis URL.
    pub url: String,
    _container: Option<ContainerAsync<GenericImage>>,
}

static REDIS: OnceCell<Redis> = OnceCell::const_new();

/// The Redis shared by all tests of this process: `REDIS_URL`, or a
/// container.
///
/// # Panics
///
/// When no Redis can be found or started, with a message saying how to
/// provide one.
pub async fn redis() -> &'static Redis {
    REDIS
        .get_or_init(|| async {
            match std::env::var("REDIS_URL") {
                Ok(url) if !url.is_empty() => {
                    let reachable = async {
                        let client = redis_client_for(&url)
                            .map_err(|e| ::redis::RedisError::from(std::io::Error::other(e.to_string())))?;
                        let mut conn = client.get_multiplexed_async_connection().await?;
                        ::redis::cmd("PING").query_async::<String>(&mut conn).await
                    };
                    match tokio::time::timeout(Duration::from_secs(5), reachable).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => panic!(
                            "cannot reach Redis at REDIS_URL={}: {e}; {HOW_TO_PROVIDE_REDIS}",
                            celeriac_producer::redact_url(&url)
                        ),
                        Err(_) => panic!(
                            "no answer from Redis at REDIS_URL={} within 5 s; {HOW_TO_PROVIDE_REDIS}",
                            celeriac_producer::redact_url(&url)
                        ),
                    }
                    Redis {
                        url,
                        _container: None,
                    }
                }
                _ => {
                    let image = GenericImage::new("redis", "7")
                        .with_exposed_port(ContainerPort::Tcp(6379))
                        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"));
                    let container = match image.start().await {
                        Ok(c) => c,
                        Err(e) => panic!("REDIS_URL is not set and no Redis container could be started ({e}); {HOW_TO_PROVIDE_REDIS}"),
                    };
                    let port = match container.get_host_port_ipv4(6379).await {
                        Ok(p) => p,
                        Err(e) => panic!("the Redis container exposes no port ({e}); {HOW_TO_PROVIDE_REDIS}"),
                    };
                    Redis {
                        url: format!("redis://127.0.0.1:{port}"),
                        _container: Some(container),
                    }
                }
            }
        })
        .await
}

/// The TLS options for a `rediss://` REDIS_URL, from the environment as the
/// binaries read it: `CELERIAC_REDIS_TLS_CA`, `_CERT`, `_KEY`, each
/// defaulting to `CELERIAC_TLS_CA`, `_CERT`, `_KEY`.
pub fn redis_tls() -> celeriac_producer::tls::TlsOptions {
    let from_env = |prefix: &str| {
        let mut tls = celeriac_producer::tls::TlsOptions::new();
        if let Some(ca) = std::env::var_os(format!("{prefix}_CA")) {
            tls = tls.ca(ca);
        }
        if let Some(cert) = std::env::var_os(format!("{prefix}_CERT")) {
            tls = tls.cert(cert);
        }
        if let Some(key) = std::env::var_os(format!("{prefix}_KEY")) {
            tls = tls.key(key);
        }
        tls
    };
    from_env("CELERIAC_REDIS_TLS").or(&from_env("CELERIAC_TLS"))
}

/// A raw Redis client for `url` (to look into what the store keeps), over
/// TLS for `rediss://` with [`redis_tls`], as the store connects.
///
/// # Errors
///
/// An invalid URL or unusable TLS files.
pub fn redis_client_for(url: &str) -> celeriac_producer::Result<::redis::Client> {
    celeriac_producer::tls::redis_client(url, &redis_tls())
}

/// A Redis store on the test's namespace with `settings`.
///
/// # Panics
///
/// When Redis cannot be reached.
pub async fn redis_store(
    namespace: &str,
    settings: celeriac_schema::store::StoreSettings,
) -> celeriac_store::RedisStore {
    let redis = redis().await;
    celeriac_store::RedisStore::connect_with_tls(&redis.url, namespace, settings, &redis_tls())
        .await
        .unwrap_or_else(|e| panic!("Redis store: {e}; {HOW_TO_PROVIDE_REDIS}"))
}

/// A namespace of its own for one test, `t-{name}-{random}`, whose queues
/// and exchanges are deleted when it is dropped, whether the test passed or
/// not: a long-lived broker that keeps every test's quorum queues runs out
/// of file handles.
///
/// Create it before the test's workers, so that they are stopped first and
/// cannot declare the topology again. It reads as the namespace string
/// (`&ns` where a `&str` is expected, `String::from(&ns)`, `{ns}`).
#[derive(Debug)]
pub struct TestNamespace {
    topology: Topology,
    queues: Vec<String>,
    raw_queues: Vec<String>,
}

/// A fresh [`TestNamespace`] whose logical queue is `default`.
pub fn namespace(test: &str) -> TestNamespace {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("t-{test}-{}", &id[id.len() - 10..]);
    TestNamespace {
        topology: Topology::new(name)
            .unwrap_or_else(|e| panic!("test namespace for {test:?}: {e}")),
        queues: vec![celeriac_schema::topology::DEFAULT_QUEUE.to_owned()],
        raw_queues: Vec::new(),
    }
}

impl TestNamespace {
    /// Also deletes logical queue `queue` (and its dead-letter queue) at the
    /// end.
    pub fn with_queue(mut self, queue: &str) -> Self {
        self.queues.push(queue.to_owned());
        self
    }

    /// Also deletes the broker queue named `queue` at the end (a queue the
    /// test declared itself).
    pub fn with_raw_queue(mut self, queue: &str) -> Self {
        self.raw_queues.push(queue.to_owned());
        self
    }

    /// The namespace.
    pub fn name(&self) -> &str {
        self.topology.namespace()
    }

    /// Its topology (names of queues and exchanges).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}

impl std::ops::Deref for TestNamespace {
    type Target = str;

    fn deref(&self) -> &str {
        self.name()
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&TestNamespace> for String {
    fn from(ns: &TestNamespace) -> String {
        ns.name().to_owned()
    }
}

impl From<TestNamespace> for String {
    fn from(ns: TestNamespace) -> String {
        ns.name().to_owned()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let topology = self.topology.clone();
        let queues = std::mem::take(&mut self.queues);
        let raw_queues = std::mem::take(&mut self.raw_queues);
        // A thread and runtime of its own: the test's runtime may be
        // unwinding or blocked in this drop.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let keys = delete_keys(topology.namespace());
                if tokio::time::timeout(Duration::from_secs(20), keys)
                    .await
                    .is_err()
                {
                    eprintln!(
                        "could not delete the Redis keys of {}",
                        topology.namespace()
                    );
                }
                let cleanup = delete_topology(&topology, &queues, &raw_queues);
                if tokio::time::timeout(Duration::from_secs(20), cleanup)
                    .await
                    .is_err()
                {
                    eprintln!("could not delete the queues of {}", topology.namespace());
                }
            });
        })
        .join();
    }
}

/// Deletes the namespace's Redis keys, if this process used Redis.
async fn delete_keys(namespace: &str) {
    if let Some(redis) = REDIS.get() {
        delete_redis_keys(&redis.url, namespace).await;
    }
}

/// Deletes every key of `namespace` (`{namespace}:*`) from the Redis at
/// `url`, best effort (tests and benchmarks clean up with it).
pub async fn delete_redis_keys(url: &str, namespace: &str) {
    let Ok(client) = redis_client_for(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let pattern = format!("{namespace}:*");
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): ::redis::RedisResult<(u64, Vec<String>)> = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(5000)
            .query_async(&mut conn)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            let _: ::redis::RedisResult<()> = ::redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

async fn delete_topology(topology: &Topology, queues: &[String], raw_queues: &[String]) {
    let Some(broker) = BROKER.get() else { return };
    let Ok(conn) = Connection::connect(&broker.url, ConnectionProperties::default()).await else {
        return;
    };
    let Ok(channel) = conn.create_channel().await else {
        return;
    };
    let mut declarations = topology.shared_declarations();
    for queue in queues {
        if let Ok(more) = topology.queue_declarations(queue) {
            declarations.extend(more);
        }
        // The tolerance class queues workers declare with each queue.
        if let Ok(more) = topology.tolerance_declarations(queue) {
            declarations.extend(more);
        }
    }
    declarations.extend(raw_queues.iter().map(|name| Declaration::Queue {
        name: name.clone(),
        arguments: Vec::new(),
    }));
    for declaration in declarations {
        let result = match declaration {
            Declaration::Queue { name, .. } => channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .map(drop),
            Declaration::Exchange { name, .. } => {
                channel
                    .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            eprintln!("cleaning up {}: {e}", topology.namespace());
            return;
        }
    }
    let _ = conn.close(200, "test namespace deleted".into()).await;
}

/// Ready messages and consumers of a queue, from a passive declare. A
/// missing queue is an error, and closes `channel`.
///
/// # Errors
///
/// The broker's refusal, typically `NOT_FOUND`.
pub async fn queue_stats(channel: &Channel, queue: &str) -> lapin::Result<(u32, u32)> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((q.message_count(), q.consumer_count()))
}

/// Messages ready in a queue (0 when it does not exist).
pub async fn queue_len(channel: &Channel, queue: &str) -> u32 {
    queue_stats(channel, queue)
        .await
        .map_or(0, |(ready, _)| ready)
}

/// Takes every message out of a queue (acked).
///
/// # Panics
///
/// When the broker refuses.
pub async fn drain(channel: &Channel, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let mut out = Vec::new();
    while let Some(msg) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap_or_else(|e| panic!("basic.get on {queue}: {e}"))
    {
        out.push(msg);
    }
    out
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `celeriac-test-worker` process: the real worker binary plus the test
/// tasks of `src/bin/celeriac-test-worker.rs`.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    /// Starts a worker on `namespace` with extra arguments; `record` is the
    /// file the `test.record` task appends to.
    ///
    /// # Panics
    ///
    /// When the binary cannot be started.
    pub fn start(binary: &Path, url: &str, namespace: &str, record: &Path, args: &[&str]) -> Self {
        let child = Command::new(binary)
            .args(["--namespace", namespace])
            .args(args)
            .env("AMQP_ADDR", url)
            // A worker uses the state store only when a test asks for it.
            .env_remove("REDIS_URL")
            // Many workers run at once: no fixed metrics port unless asked.
            .env("CELERIAC_METRICS_ADDR", "off")
            .env("CELERIAC_TEST_RECORD", record)
            .env(
                "RUST_LOG",
                std::env::var("TEST_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        WorkerProcess { child }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`, ...).
    ///
    /// # Panics
    ///
    /// When `kill` cannot be run.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
        assert!(
            status.success(),
            "kill -{signal} {} failed",
            self.child.id()
        );
    }

    /// Waits for the process to exit, at most `timeout`; `None` if it
    /// did not.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A xorshift64 generator: the same seed gives the same random DAG in
/// every run, with no dependency.
///
/// # Examples
///
/// ```
/// let mut a = celeriac_tests::XorShift::new(7);
/// let mut b = celeriac_tests::XorShift::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// ```
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded with `seed` (zero is replaced, as xorshift would stay at 0).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs a benchmark program's `measure` future on a multi-threaded runtime
/// (`worker_threads`, default one per CPU) and prints its report as pretty
/// JSON on stdout. Errors go to stderr, prefixed with the program's `name`,
/// and exit with `failure`.
pub fn print_report<R, F>(
    name: &str,
    failure: u8,
    worker_threads: Option<usize>,
    measure: F,
) -> std::process::ExitCode
where
    R: serde::Serialize,
    F: std::future::Future<Output = anyhow::Result<R>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(failure);
        }
    };
    let report = runtime
        .block_on(measure)
        .and_then(|report| Ok(serde_json::to_string_pretty(&report)?));
    match report {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::from(failure)
        }
    }
}

/// A header of a message taken with `basic.get`.
///
/// # Panics
///
/// When the message has no header `name`.
pub fn header<'a>(msg: &'a lapin::message::BasicGetMessage, name: &str) -> &'a AMQPValue {
    msg.delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|table| table.inner().get(name))
        .unwrap_or_else(|| panic!("the message carries no {name} header"))
}

/// A string header (long or short) of a message taken with `basic.get`.
///
/// # Panics
///
/// When the header is missing or not a string.
pub fn header_str(msg: &lapin::message::BasicGetMessage, name: &str) -> String {
    match header(msg, name) {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => panic!("header {name} is not a string: {other:?}"),
    }
}

/// An integer header, of any AMQP integer type, of a message taken with
/// `basic.get`.
///
/// # Panics
///
/// When the header is missing or not an integer.
pub fn header_int(msg: &lapin::message::BasicGetMessage, name: &str) -> i64 {
    match header(msg, name) {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        other => panic!("header {name} is not an integer: {other:?}"),
    }
}

/// A worker running inside the test process, so its counters can be read.
pub struct InProcessWorker {
    handle: celeriac_consumer::WorkerHandle,
    run: tokio::task::JoinHandle<celeriac_consumer::Result<celeriac_consumer::StatsSnapshot>>,
}

impl InProcessWorker {
    /// Builds a worker on `namespace` (tuned by `configure`), runs it and
    /// waits until it consumes.
    pub async fn start(
        namespace: &str,
        registry: celeriac_consumer::Registry,
        configure: impl FnOnce(celeriac_consumer::WorkerBuilder) -> celeriac_consumer::WorkerBuilder,
    ) -> Self {
        let builder = celeriac_consumer::Worker::builder(&broker().await.url, registry)
            .namespace(namespace)
            .grace(Duration::from_secs(5));
        let worker = configure(builder)
            .build()
            .unwrap_or_else(|e| panic!("the in-process worker cannot be built: {e}"));
        let handle = worker.handle();
        let run = tokio::spawn(worker.run());
        let ready = eventually(Duration::from_secs(15), || async { handle.is_ready() }).await;
        assert!(ready, "the in-process worker never became ready");
        InProcessWorker { handle, run }
    }

    /// The worker's counters so far.
    pub fn stats(&self) -> celeriac_consumer::StatsSnapshot {
        self.handle.stats()
    }

    /// Its metrics in the Prometheus text format.
    pub fn metrics(&self) -> String {
        self.handle.metrics()
    }

    /// Whether it consumes (its readiness).
    pub fn is_ready(&self) -> bool {
        self.handle.is_ready()
    }

    /// Shuts the worker down and waits, at most 15 s, without judging how
    /// it stopped (for tests about something else).
    pub async fn shutdown(self) {
        self.handle.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.run).await;
    }

    /// Shuts the worker down and returns its final counters.
    pub async fn stop(self) -> celeriac_consumer::StatsSnapshot {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(15), self.run)
            .await
            .expect("the worker stops within its grace period")
            .expect("the worker task does not panic")
            .expect("the worker stops cleanly")
    }
}

/// A worker process with the Redis store and a producer sharing that store,
/// in a namespace of its own: the setup of the end-to-end tests that send
/// tasks or workflows and read their results.
pub struct StoreCluster {
    /// Sends to the worker's queues and reads results from the store.
    pub producer: celeriac_producer::Producer,
    /// The worker; stopped when the cluster is dropped.
    pub worker: WorkerProcess,
    /// Last, so that its queues are deleted once the worker is gone.
    pub ns: TestNamespace,
}

/// Starts `worker_bin` (normally `env!("CARGO_BIN_EXE_celeriac-test-worker")`)
/// on the Redis store with `worker_args` after `--redis-url`, in the
/// namespace of `test`, and connects a producer with the same store.
///
/// # Panics
///
/// When the broker or Redis cannot be reached (with how to provide them).
pub async fn store_cluster(test: &str, worker_bin: &Path, worker_args: &[&str]) -> StoreCluster {
    let ns = namespace(test);
    let broker = broker().await;
    let redis_url = redis().await.url.clone();
    let store = std::sync::Arc::new(
        redis_store(&ns, celeriac_schema::store::StoreSettings::default()).await,
    );
    let mut args = vec!["--redis-url", redis_url.as_str()];
    args.extend_from_slice(worker_args);
    let worker = WorkerProcess::start(worker_bin, &broker.url, &ns, &record_file(test), &args);
    let producer = celeriac_producer::Producer::builder(&broker.url)
        .namespace(&*ns)
        .store(store)
        .connect()
        .await
        .expect("a producer connects to the test broker");
    StoreCluster {
        producer,
        worker,
        ns,
    }
}

/// The `celeriac` CLI binary, which cargo builds beside the test binaries
/// (`target/<profile>/celeriac`) when it builds the workspace.
///
/// # Panics
///
/// When it is missing, with the command that builds it.
pub fn celeriac_cli() -> PathBuf {
    workspace_binary(
        "celeriac",
        "cargo build -p celeriac-consumer --bin celeriac",
    )
}

/// The `celeriac-dlq` binary, which cargo builds beside the test binaries
/// when it builds the workspace.
///
/// # Panics
///
/// When it is missing, with the command that builds it.
pub fn celeriac_dlq_cli() -> PathBuf {
    workspace_binary("celeriac-dlq", "cargo build -p celeriac-dlq")
}

fn workspace_binary(name: &str, build: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running test binary");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .expect("a test binary lives two levels below the target directory");
    assert!(
        path.exists(),
        "{} is missing: build it with `{build}`",
        path.display()
    );
    path
}

/// Lines of a record file written by `test.record` (`{task_id} {attempt}
/// {worker pid}` each).
pub fn read_record(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A fresh, empty record file path under the target directory.
pub fn record_file(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("celeriac-tests");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{test}-{}.log", uuid::Uuid::now_v7().simple()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The tasks the `celeriac-test-worker` binary adds to the built-in ones.
pub mod test_tasks {
    /// Input of the worker's `test.record` task.
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    pub struct RecordInput {
        /// How long the task sleeps before recording its run.
        pub ms: u64,
    }

    /// `test.record`: sleeps `ms`, then appends `{task_id} {attempt} {pid}` to
    /// the worker's record file.
    pub struct Record;

    impl celeriac_schema::Task for Record {
        const NAME: &'static str = "test.record";
        type Input = RecordInput;
        type Output = ();
    }

    /// Input of [`Effect`].
    #[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
    pub struct EffectInput {
        /// Any number; the result is twice it.
        pub n: u64,
        /// How long the run takes.
        pub ms: u64,
    }

    /// `test.effect`: appends `start {task_id} {pid} {unix µs}` to the
    /// record file, sleeps `ms`, appends `end {task_id} {pid} {unix µs}`
    /// and returns `2 n`. The lines show every run, finished or cut short.
    pub struct Effect;

    impl celeriac_schema::Task for Effect {
        const NAME: &'static str = "test.effect";
        type Input = EffectInput;
        type Output = u64;
    }

    /// `test.dag-node`: a workflow node that takes its dependencies'
    /// results by name, logs its run like [`Effect`] (`start`/`end` lines),
    /// sleeps 20 ms and returns 1 + the largest input (its depth).
    pub struct DagNode;

    impl celeriac_schema::Task for DagNode {
        const NAME: &'static str = "test.dag-node";
        type Input = std::collections::BTreeMap<String, u64>;
        type Output = u64;
    }

    /// `test.crash`: aborts the worker process.
    pub struct Crash;

    impl celeriac_schema::Task for Crash {
        const NAME: &'static str = "test.crash";
        type Input = ();
        type Output = ();
    }

    /// Input of [`BenchNoop`].
    #[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
    pub struct NoopInput {
        /// When the task was handed to the producer, in Unix microseconds.
        pub t: u64,
    }

    /// `bench.noop`: the benchmark worker's no-op task, which measures the
    /// time from `t` to its start.
    pub struct BenchNoop;

    impl celeriac_schema::Task for BenchNoop {
        const NAME: &'static str = "bench.noop";
        type Input = NoopInput;
        type Output = ();
    }

    /// The current time in Unix microseconds.
    pub fn unix_micros() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

//! A worker, a producer and a dashboard on one test namespace, and a small
//! HTTP client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_dashboard::{Config, Dashboard, Login, RevokeHook, RevokeOptions, StoreHeartbeats};
use celeriac_producer::Producer;
use celeriac_schema::store::{Store, StoreSettings};
use celeriac_schema::Task;
use celeriac_store::RedisStore;
use celeriac_tests::{broker, namespace, redis_store, InProcessWorker, TestNamespace};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Adds two numbers.
pub struct Add;
impl Task for Add {
    const NAME: &'static str = "dash.add";
    type Input = (i64, i64);
    type Output = i64;
}

/// Fails for good (into the dead-letter queue) until the test heals it.
pub struct Flaky;
impl Task for Flaky {
    const NAME: &'static str = "dash.flaky";
    type Input = String;
    type Output = String;
}

/// Runs for the given milliseconds (until a revoke terminates it).
pub struct Slow;
impl Task for Slow {
    const NAME: &'static str = "dash.slow";
    type Input = u64;
    type Output = u64;
}

/// The message a failing `dash.flaky` gives.
pub const FLAKY_ERROR: &str = "the upstream service refused the invoice";

/// Whether `dash.flaky` succeeds now.
#[derive(Clone, Default)]
pub struct Healed(Arc<AtomicBool>);

impl Healed {
    pub fn heal(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub fn registry(healed: &Healed) -> Registry {
    let healed = healed.clone();
    let mut registry = Registry::new();
    registry
        .register::<Add, _, _>(|(a, b), _ctx: TaskContext| async move { Ok::<_, TaskError>(a + b) })
        .register::<Slow, _, _>(|ms, _ctx: TaskContext| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, TaskError>(ms)
        })
        .register::<Flaky, _, _>(move |input: String, _ctx: TaskContext| {
            let healed = healed.0.load(Ordering::SeqCst);
            async move {
                if healed {
                    Ok(format!("processed {input}"))
                } else {
                    Err(TaskError::fatal("UpstreamRefused", FLAKY_ERROR))
                }
            }
        });
    registry
}

/// A namespace with a worker, a producer and a dashboard.
pub struct Setup {
    pub ns: TestNamespace,
    pub store: RedisStore,
    pub producer: Producer,
    pub healed: Healed,
    pub addr: SocketAddr,
    workers: Vec<InProcessWorker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<celeriac_dashboard::Result<()>>>,
}

/// How [`setup_with`] sets a namespace up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options<'a> {
    /// More logical queues (cleaned up with the namespace) that no worker
    /// consumes.
    pub queues: &'a [&'a str],
    /// Workers by id, with short heartbeats that the Workers page reads
    /// from the store; empty: one worker of the default id, and no
    /// heartbeat source.
    pub live_workers: &'a [&'a str],
    /// A fair queue every worker also consumes, with its shard count.
    pub fair: Option<(&'a str, u16)>,
    /// Revoke through the control plane, as `celeriac dashboard` does.
    pub revoke: bool,
}

/// How often live workers beat.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// Starts everything on a fresh namespace; `configure` adjusts the
/// dashboard's config.
pub async fn setup(name: &str, configure: impl FnOnce(&mut Config)) -> Setup {
    setup_with(name, Options::default(), configure).await
}

/// As [`setup`], as `options` say.
pub async fn setup_with(
    name: &str,
    options: Options<'_>,
    configure: impl FnOnce(&mut Config),
) -> Setup {
    let mut ns = options
        .queues
        .iter()
        .fold(namespace(name), |ns, q| ns.with_queue(q));
    let mut consumed = vec!["default".to_owned()];
    if let Some((queue, shards)) = options.fair {
        ns = ns.with_queue(queue);
        // The test namespace knows no shard counts: its shards are
        // deleted by name.
        for shard in 0..shards {
            let name = ns
                .topology()
                .work_queue(&celeriac_schema::fair::shard_name(queue, shard));
            ns = ns.with_raw_queue(&name);
        }
        consumed.push(queue.to_owned());
    }
    let store = redis_store(&ns, StoreSettings::default()).await;
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let healed = Healed::default();
    let ids: Vec<Option<&str>> = if options.live_workers.is_empty() {
        vec![None]
    } else {
        options.live_workers.iter().copied().map(Some).collect()
    };
    let mut workers = Vec::new();
    for id in ids {
        let worker = InProcessWorker::start(&ns, registry(&healed), |b| {
            let mut b = b
                .concurrency(4)
                .store(shared.clone())
                .queues(consumed.clone());
            if let Some((queue, shards)) = options.fair {
                b = b.fair_queue(queue, u64::from(shards));
            }
            match id {
                Some(id) => b.worker_id(id).heartbeat(HEARTBEAT),
                None => b,
            }
        })
        .await;
        workers.push(worker);
    }
    let url = broker().await.url.clone();
    let producer = Producer::builder(&url)
        .namespace(&*ns)
        .store(shared.clone())
        .connect()
        .await
        .unwrap();
    let mut config = Config::new(&url, ns.name());
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut dashboard = Dashboard::new(config, store.clone());
    if !options.live_workers.is_empty() {
        dashboard = dashboard.workers(Arc::new(StoreHeartbeats::new(shared)));
    }
    if options.revoke {
        dashboard = dashboard.revoke(revoke_hook(producer.clone()));
    }
    let server = tokio::spawn(dashboard.serve(listener, async {
        let _ = stopped.await;
    }));
    Setup {
        ns,
        store,
        producer,
        healed,
        addr,
        workers,
        stop: Some(stop),
        server: Some(server),
    }
}

/// The control plane's revoke, terminating a run when asked (the hook of
/// `celeriac dashboard`).
fn revoke_hook(producer: Producer) -> RevokeHook {
    use celeriac_producer::control::RevokeOptions as Revoke;
    Arc::new(move |id, how: RevokeOptions| {
        let producer = producer.clone();
        Box::pin(async move {
            let options = if how.terminate {
                Revoke::new().terminate(celeriac_schema::control::KillSignal::Term)
            } else {
                Revoke::new()
            };
            let done = producer
                .revoke(&[id.to_string()], &options)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "revoked {id}{}; {} worker(s) acknowledged",
                if how.terminate {
                    " and terminated its run"
                } else {
                    ""
                },
                done.replies.replies.len()
            ))
        })
    })
}

impl Setup {
    /// Stops the dashboard and the worker.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let served = tokio::time::timeout(Duration::from_secs(10), server).await;
            assert!(
                matches!(served, Ok(Ok(Ok(())))),
                "the dashboard stops cleanly: {served:?}"
            );
        }
        for worker in self.workers.drain(..) {
            worker.shutdown().await;
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET path` as JSON, asserting 200.
    pub async fn get_json(&self, path: &str, headers: &[(&str, &str)]) -> Value {
        let reply = request(self.addr, "GET", path, headers, None).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", reply.body))
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request (`Connection: close`), with a JSON body if given.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or_default());
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(head.as_bytes()).await?;
        // Read until the answer is complete: some servers (chromedriver)
        // keep the connection open despite `Connection: close`.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if complete(&raw) {
                break;
            }
        }
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within 60 s"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    parse_reply(&raw)
}

/// Whether `raw` holds a whole answer (by its `Content-Length`, or the
/// last chunk of a chunked body).
fn complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

/// Parses a raw HTTP/1.1 answer (a `Content-Length` or chunked body).
pub fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers: head.to_owned(),
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A login token for tests.
pub fn token_login() -> Login {
    Login::Token(format!("tok-{}", uuid::Uuid::now_v7().simple()))
}

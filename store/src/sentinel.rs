//! The store through Redis Sentinel, following the primary across
//! failovers.
//!
//! A `redis+sentinel://` URL names the sentinels and the master they watch:
//!
//! ```text
//! redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db][?wait=N]
//! ```
//!
//! The password (and user) are the Redis nodes' (sentinels are asked
//! without one); a port left out is 26379. The store asks the sentinels for
//! the primary, connects to it, and when a command fails because the
//! connection broke, was refused, timed out or the node turned replica
//! (`READONLY`), asks them again and moves to the new primary. A command
//! whose connection was refused is sent again there (it never ran) for up
//! to ten seconds; any other failed command's error is returned, as it may
//! have run (the callers retry what is safe to retry). Redis replication is
//! asynchronous: writes acknowledged by a primary that dies before its
//! replicas copied them are lost with it. `wait=N` sends `WAIT N` after
//! each pipeline of writes, so that a write is on `N` replicas (or 100 ms
//! passed) before the store answers; this narrows, not closes, that
//! window.
//!
//! Result waiters open their pub/sub connections to the primary of the
//! moment too. Any other URL connects to one server (see
//! [`super::connect_manager`]).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::StoreResult;
use celeriac_schema::Error as SchemaError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tracing::{debug, info, warn};

use crate::connect::RESPONSE_TIMEOUT;
use crate::error::redact_url;
use crate::tls::TlsOptions;

/// The scheme of a store URL through Sentinel.
pub const SCHEME: &str = "redis+sentinel://";
/// The sentinels' port when a URL leaves it out.
const SENTINEL_PORT: u16 = 26379;
/// How long `WAIT` may hold a write for its replicas.
const WAIT_TIMEOUT_MS: u64 = 100;
/// How long a refused request is sent again while the primary moves.
const REFUSED_BUDGET: Duration = Duration::from_secs(10);
/// The pause before sending a refused request again.
const REFUSED_PAUSE: Duration = Duration::from_millis(100);
/// The shortest time between two questions to the sentinels.
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// A `redis+sentinel://` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    pub(crate) sentinels: Vec<(String, u16)>,
    pub(crate) master: String,
    pub(crate) db: i64,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// Replicas a pipeline waits for (`wait=N`).
    pub(crate) wait: Option<u32>,
}

/// Parses a `redis+sentinel://` URL; the error says what is wrong.
pub(crate) fn parse(url: &str) -> Result<SentinelUrl, String> {
    let rest = url
        .strip_prefix(SCHEME)
        .ok_or_else(|| format!("not a {SCHEME} URL"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or(("", u))) {
        Some((user, pass)) => (
            Some(user.to_owned()).filter(|u| !u.is_empty()),
            Some(pass.to_owned()).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (
                name,
                port.parse::<u16>()
                    .map_err(|_| format!("bad sentinel port in {host:?}"))?,
            ),
            None => (host, SENTINEL_PORT),
        };
        sentinels.push((name.to_owned(), port));
    }
    if sentinels.is_empty() {
        return Err("no sentinel address".into());
    }
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let master = segments
        .next()
        .ok_or("no master name after the sentinel addresses")?
        .to_owned();
    let db = match segments.next() {
        Some(db) => db
            .parse::<i64>()
            .map_err(|_| format!("bad database number {db:?}"))?,
        None => 0,
    };
    let mut wait = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("wait", n)) => {
                wait = Some(n.parse::<u32>().map_err(|_| format!("bad wait={n:?}"))?);
            }
            _ => return Err(format!("unknown option {pair:?}")),
        }
    }
    Ok(SentinelUrl {
        sentinels,
        master,
        db,
        username,
        password,
        wait: wait.filter(|n| *n > 0),
    })
}

/// The store's connection: to one server, or to whichever server the
/// sentinels name the primary.
#[derive(Clone)]
pub enum StoreConnection {
    /// One server; its manager reconnects to it.
    Direct(ConnectionManager),
    /// The primary of a Sentinel-watched master.
    Sentinel(Arc<Follower>),
}

/// Opens the pub/sub connections of result waiters: to the one server, or
/// to the primary of the moment.
pub enum PubSubClient {
    /// One server.
    Fixed(Box<redis::Client>),
    /// The primary the sentinels last named.
    Following(Arc<Follower>),
}

impl PubSubClient {
    /// A pub/sub connection to the server, or to the current primary.
    pub(crate) async fn get_async_pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        let client = match self {
            PubSubClient::Fixed(client) => (**client).clone(),
            PubSubClient::Following(follower) => follower
                .client
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        };
        client.get_async_pubsub().await
    }
}

/// Follows the primary: the connection to it and how to find the next.
pub struct Follower {
    master: String,
    db: i64,
    wait: Option<u32>,
    /// The generation of the connection (bumped at each move) and itself.
    current: RwLock<(u64, ConnectionManager)>,
    /// A client for the current primary, for pub/sub.
    client: RwLock<redis::Client>,
    /// The sentinels, and when they were last asked.
    sentinels: tokio::sync::Mutex<(SentinelClient, Option<Instant>)>,
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1))
}

/// Connects to `url`: through the sentinels for `redis+sentinel://`,
/// else to the one server. Returns a client for the primary (pub/sub) and
/// the connection.
pub async fn connect(url: &str, tls: &TlsOptions) -> StoreResult<(PubSubClient, StoreConnection)> {
    if !url.starts_with(SCHEME) {
        let (client, conn) = crate::connect::connect_manager(url, tls).await?;
        return Ok((
            PubSubClient::Fixed(Box::new(client)),
            StoreConnection::Direct(conn),
        ));
    }
    let redacted = redact_url(url);
    let unavailable = |message: String| SchemaError::StoreUnavailable {
        op: "connect",
        message: format!("{message} (Redis Sentinel at {redacted})"),
    };
    let parsed = parse(url).map_err(|e| unavailable(format!("invalid URL: {e}")))?;
    let mut node = redis::RedisConnectionInfo::default().set_db(parsed.db);
    if let Some(user) = &parsed.username {
        node = node.set_username(user);
    }
    if let Some(password) = &parsed.password {
        node = node.set_password(password);
    }
    let sentinels: Vec<String> = parsed
        .sentinels
        .iter()
        .map(|(host, port)| format!("redis://{host}:{port}"))
        .collect();
    let mut client = SentinelClient::build(
        sentinels,
        parsed.master.clone(),
        Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(node)),
        SentinelServerType::Master,
    )
    .map_err(|e| unavailable(e.to_string()))?;
    let (primary, conn) = primary(&mut client)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    info!(master = %parsed.master, "store connected to the primary named by the sentinels");
    let follower = Follower {
        master: parsed.master,
        db: parsed.db,
        wait: parsed.wait,
        current: RwLock::new((0, conn)),
        client: RwLock::new(primary),
        sentinels: tokio::sync::Mutex::new((client, None)),
    };
    let follower = Arc::new(follower);
    Ok((
        PubSubClient::Following(follower.clone()),
        StoreConnection::Sentinel(follower),
    ))
}

/// The primary the sentinels name now, and a connection to it.
async fn primary(client: &mut SentinelClient) -> RedisResult<(redis::Client, ConnectionManager)> {
    let asked = tokio::time::timeout(RESPONSE_TIMEOUT, client.async_get_client()).await;
    let primary = asked.map_err(|_| timed_out("asking the sentinels for the primary"))??;
    let connecting = ConnectionManager::new_with_config(primary.clone(), manager_config());
    let conn = tokio::time::timeout(RESPONSE_TIMEOUT, connecting)
        .await
        .map_err(|_| timed_out("connecting to the primary"))??;
    Ok((primary, conn))
}

fn timed_out(doing: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::Io, "timed out", doing.to_owned()))
}

/// Whether `error` may mean the primary moved.
fn primary_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN"))
}

/// Whether a reply (or one nested in it, as in `EXEC`'s) is an error that
/// [`primary_lost`] would count.
fn names_primary_lost(reply: &Value) -> bool {
    match reply {
        Value::ServerError(e) => matches!(e.code(), "READONLY" | "MASTERDOWN"),
        Value::Array(values) => values.iter().any(names_primary_lost),
        _ => false,
    }
}

impl Follower {
    fn current(&self) -> (u64, ConnectionManager) {
        let guard = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (guard.0, guard.1.clone())
    }

    /// After a failure on generation `seen`: asks the sentinels for the
    /// primary and moves there, unless another caller already did.
    async fn refresh(&self, seen: u64) {
        let mut sentinels = self.sentinels.lock().await;
        if self.current().0 != seen {
            return;
        }
        if sentinels.1.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return;
        }
        sentinels.1 = Some(Instant::now());
        match primary(&mut sentinels.0).await {
            Ok((client, conn)) => {
                *self
                    .client
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = client;
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *current = (seen + 1, conn);
                info!(master = %self.master, generation = seen + 1, "store moved to the primary the sentinels name");
            }
            Err(e) => {
                warn!(master = %self.master, error = %e, "the sentinels name no reachable primary yet");
            }
        }
    }

    /// Runs `request` on the primary; on a failure that may mean the
    /// primary moved, finds the new one before returning the error. A
    /// refused connection never ran the request: it is sent again (to the
    /// new primary once the sentinels name one) for up to
    /// [`REFUSED_BUDGET`].
    async fn run(&self, request: Request<'_>) -> RedisResult<Reply> {
        let deadline = Instant::now() + REFUSED_BUDGET;
        let mut attempt = 0u32;
        loop {
            let (generation, mut conn) = self.current();
            let result = self.send(&mut conn, &request).await;
            let Err(e) = &result else {
                // A pipeline that ignores its commands' errors succeeds on
                // a node that turned replica too: its writes then answer
                // `READONLY` one by one. That node is no longer the
                // primary: find the new one, so the callers' retries go
                // there instead of to the replica forever.
                if let Ok(Reply::Many(replies)) = &result {
                    if replies.iter().any(names_primary_lost) {
                        warn!(master = %self.master, "a write reached a replica; asking the sentinels for the primary");
                        self.refresh(generation).await;
                    }
                }
                return result;
            };
            if !primary_lost(e) {
                return result;
            }
            if attempt == 0 {
                warn!(master = %self.master, error = %e, "store command failed; asking the sentinels for the primary");
            }
            self.refresh(generation).await;
            if !e.is_connection_refusal() || Instant::now() + REFUSED_PAUSE >= deadline {
                return result;
            }
            attempt += 1;
            tokio::time::sleep(REFUSED_PAUSE).await;
        }
    }

    /// Sends `request` once on `conn`; a pipeline is followed by `WAIT`
    /// when the URL asks for it.
    async fn send(
        &self,
        conn: &mut ConnectionManager,
        request: &Request<'_>,
    ) -> RedisResult<Reply> {
        match *request {
            Request::One(cmd) => conn.req_packed_command(cmd).await.map(Reply::One),
            Request::Many(pipeline, offset, count) => {
                let replies = conn.req_packed_commands(pipeline, offset, count).await?;
                if let Some(replicas) = self.wait {
                    let mut cmd = redis::cmd("WAIT");
                    cmd.arg(replicas).arg(WAIT_TIMEOUT_MS);
                    let acked: RedisResult<i64> = cmd.query_async(conn).await;
                    if let Ok(n) = acked {
                        if n < i64::from(replicas) {
                            debug!(
                                acked = n,
                                replicas, "fewer replicas than asked hold the write"
                            );
                        }
                    }
                }
                Ok(Reply::Many(replies))
            }
        }
    }
}

/// A request to the primary: one command or a pipeline's slice.
enum Request<'a> {
    One(&'a Cmd),
    Many(&'a Pipeline, usize, usize),
}

/// Its answer.
enum Reply {
    One(Value),
    Many(Vec<Value>),
}

fn mismatch() -> RedisError {
    RedisError::from((redis::ErrorKind::Client, "a reply of the wrong shape"))
}

impl ConnectionLike for StoreConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            StoreConnection::Direct(conn) => conn.req_packed_command(cmd),
            StoreConnection::Sentinel(follower) => Box::pin(async move {
                match follower.run(Request::One(cmd)).await? {
                    Reply::One(value) => Ok(value),
                    Reply::Many(_) => Err(mismatch()),
                }
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            StoreConnection::Direct(conn) => conn.req_packed_commands(pipeline, offset, count),
            StoreConnection::Sentinel(follower) => Box::pin(async move {
                match follower.run(Request::Many(pipeline, offset, count)).await? {
                    Reply::Many(values) => Ok(values),
                    Reply::One(_) => Err(mismatch()),
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            StoreConnection::Direct(conn) => conn.get_db(),
            StoreConnection::Sentinel(follower) => follower.db,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_answered_by_a_replica_means_the_primary_moved() {
        let reply = |bytes: &[u8]| redis::parse_redis_value(bytes).expect("a RESP reply");
        let readonly = reply(b"-READONLY You can't write against a read only replica.\r\n");
        assert!(names_primary_lost(&readonly));
        // Inside a transaction's answer too.
        let exec = Value::Array(vec![Value::Okay, readonly]);
        assert!(names_primary_lost(&exec));
        assert!(names_primary_lost(&reply(
            b"-MASTERDOWN Link with MASTER is down\r\n"
        )));
        // Other errors belong to their commands.
        assert!(!names_primary_lost(&reply(
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        )));
        assert!(!names_primary_lost(&Value::Okay));
    }

    #[test]
    fn a_full_url_parses() {
        let url = "redis+sentinel://app:secret@s1:26391,s2,s3:26393/main/2?wait=1";
        let parsed = parse(url).ok();
        assert_eq!(
            parsed,
            Some(SentinelUrl {
                sentinels: vec![
                    ("s1".into(), 26391),
                    ("s2".into(), SENTINEL_PORT),
                    ("s3".into(), 26393)
                ],
                master: "main".into(),
                db: 2,
                username: Some("app".into()),
                password: Some("secret".into()),
                wait: Some(1),
            })
        );
        let plain = parse("redis+sentinel://:pw@127.0.0.1:26391/celeriac").ok();
        assert_eq!(
            plain.as_ref().map(|p| p.password.as_deref()),
            Some(Some("pw"))
        );
        assert_eq!(plain.as_ref().map(|p| p.username.clone()), Some(None));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = |url: &str| parse(url).err().unwrap_or_default();
        assert!(err("redis+sentinel://s1:26379").contains("master name"));
        assert!(err("redis+sentinel:///m").contains("no sentinel"));
        assert!(err("redis+sentinel://s1:x/m").contains("port"));
        assert!(err("redis+sentinel://s1/m/x").contains("database"));
        assert!(err("redis+sentinel://s1/m?wait=many").contains("wait"));
        assert!(err("redis+sentinel://s1/m?color=red").contains("unknown option"));
        assert!(err("redis://s1/m").contains("not a"));
    }

    #[tokio::test]
    async fn unreachable_sentinels_are_an_error_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()
            .and_then(|l| l.local_addr().ok())
            .map_or(1, |a| a.port());
        let url = format!("redis+sentinel://:secret@127.0.0.1:{port}/celeriac");
        let err = connect(&url, &TlsOptions::default())
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("Redis Sentinel"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}

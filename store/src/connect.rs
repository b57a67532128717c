//! Connecting, and the plumbing every store step goes through: running
//! pipelines of script calls (loading the scripts again when Redis lost
//! them), the batched writes, and the names of the keys.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::store::StoreSettings;
use celeriac_schema::{Error as SchemaError, TaskId};
use redis::aio::ConnectionManager;
use redis::{Cmd, Pipeline, RedisWrite, Script, ToRedisArgs, ToSingleRedisArg};
use tracing::debug;

use crate::batch::{Batcher, Mode};
use crate::error::redact_url;
use crate::scripts;
use crate::tls::TlsOptions;
use crate::waiters::Waiters;
use crate::{unavailable, Inner, RedisStore, Scripts, StoreResult};

/// How long a store command may take before it counts as a failure.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a client for `url` (over TLS with `tls` for `rediss://`) and its
/// reconnecting connection, within five seconds; errors name the
/// URL with its password redacted, and a failed TLS handshake the server
/// and the reason. For other users of the store's Redis (beat's state).
///
/// # Errors
///
/// [`SchemaError::StoreUnavailable`] when the URL or a TLS file cannot be
/// used, or Redis does not answer in time.
///
/// # Examples
///
/// ```no_run
/// use celeriac_store::connect_manager;
/// use celeriac_store::tls::TlsOptions;
///
/// # async fn demo() -> celeriac_schema::Result<()> {
/// let (_client, mut conn) = connect_manager("redis://127.0.0.1:6379", &TlsOptions::new()).await?;
/// let pong: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| {
///     celeriac_schema::Error::StoreUnavailable { op: "ping", message: e.to_string() }
/// })?;
/// assert_eq!(pong, "PONG");
/// # Ok(()) }
/// ```
pub async fn connect_manager(
    url: &str,
    tls: &TlsOptions,
) -> StoreResult<(redis::Client, ConnectionManager)> {
    let redacted = redact_url(url);
    let client = crate::tls::redis_client(url, tls).map_err(|e| SchemaError::StoreUnavailable {
        op: "connect",
        message: format!("{e} (Redis at {redacted})"),
    })?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let conn = tokio::time::timeout(
        RESPONSE_TIMEOUT,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| SchemaError::StoreUnavailable {
        op: "connect",
        message: format!("no answer from {redacted} within {RESPONSE_TIMEOUT:?}"),
    })?
    .map_err(|e| SchemaError::StoreUnavailable {
        op: "connect",
        message: format!("{} ({redacted})", crate::tls::describe_redis_error(url, &e)),
    })?;
    Ok((client, conn))
}

impl RedisStore {
    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`,
    /// `rediss://` for TLS), keeping keys under `namespace`.
    ///
    /// # Errors
    ///
    /// [`SchemaError::StoreUnavailable`] when Redis cannot be reached within
    /// five seconds or the URL is invalid; the message names the URL with
    /// its password redacted.
    pub async fn connect(
        url: &str,
        namespace: &str,
        settings: StoreSettings,
    ) -> StoreResult<RedisStore> {
        Self::connect_with_tls(url, namespace, settings, &TlsOptions::default()).await
    }

    /// [`RedisStore::connect`] with TLS settings for a `rediss://` URL: the
    /// CA bundle to trust (default: the system's roots) and a client
    /// certificate for mutual TLS. Ignored for `redis://`.
    ///
    /// # Errors
    ///
    /// As [`RedisStore::connect`]; a TLS file that cannot be used or a
    /// failed TLS handshake is also [`SchemaError::StoreUnavailable`],
    /// whose message names the file, or the server and the reason.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use celeriac_store::tls::TlsOptions;
    /// use celeriac_store::RedisStore;
    /// use celeriac_schema::store::StoreSettings;
    ///
    /// # async fn demo() -> celeriac_schema::Result<()> {
    /// let tls = TlsOptions::new().ca("/etc/celeriac/ca.pem");
    /// let store = RedisStore::connect_with_tls("rediss://redis.internal:6380", "celeriac", StoreSettings::default(), &tls).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_tls(
        url: &str,
        namespace: &str,
        settings: StoreSettings,
        tls: &TlsOptions,
    ) -> StoreResult<RedisStore> {
        let (client, conn) = crate::sentinel::connect(url, tls).await?;
        let redacted = redact_url(url);
        let with_apply = |body: &str| Script::new(&format!("{}{}", scripts::APPLY, body));
        let store = RedisStore {
            inner: Arc::new(Inner {
                url: redacted,
                prefix: format!("{namespace}:"),
                settings,
                apply: Scripts {
                    record: with_apply(scripts::RECORD),
                    claim: with_apply(scripts::CLAIM),
                    release: Script::new(scripts::RELEASE),
                    renew: Script::new(scripts::RENEW),
                    unclaim: Script::new(scripts::UNCLAIM),
                    node_succeeded: Script::new(&scripts::node_succeeded()),
                    node_failed: Script::new(&scripts::node_failed()),
                    create_workflow: Script::new(scripts::CREATE_WORKFLOW),
                },
                waiters: Waiters::new(client),
                batcher: Batcher::start(conn.clone()),
                indexed: Default::default(),
                conn,
            }),
        };
        store.ping_redis().await?;
        store.load_scripts().await?;
        Ok(store)
    }

    pub(crate) async fn load_scripts(&self) -> StoreResult<()> {
        let scripts = &self.inner.apply;
        let mut pipe = redis::pipe();
        for script in [
            &scripts.record,
            &scripts.claim,
            &scripts.release,
            &scripts.renew,
            &scripts.unclaim,
            &scripts.node_succeeded,
            &scripts.node_failed,
            &scripts.create_workflow,
        ] {
            pipe.load_script(script).ignore();
        }
        let mut conn = self.inner.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(unavailable("loading scripts", &self.inner.url))
    }

    /// Runs a pipeline of script calls, loading the scripts again if Redis
    /// lost them (a restart or `SCRIPT FLUSH`).
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> StoreResult<T> {
        let mut conn = self.inner.conn.clone();
        match pipe.query_async::<T>(&mut conn).await {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                debug!("Redis lost the store scripts; loading them again");
                self.load_scripts().await?;
                pipe.query_async::<T>(&mut conn)
                    .await
                    .map_err(unavailable(op, &self.inner.url))
            }
            other => other.map_err(unavailable(op, &self.inner.url)),
        }
    }

    /// Applies `cmds` through the batcher, which shares one trip (and one
    /// transaction, for [`Mode::Atomic`]) among the writes of concurrent
    /// runs.
    pub(crate) async fn write(
        &self,
        op: &'static str,
        mode: Mode,
        cmds: Vec<Cmd>,
    ) -> StoreResult<Vec<redis::Value>> {
        self.inner
            .batcher
            .write(cmds, mode)
            .await
            .map_err(unavailable(op, &self.inner.url))
    }

    pub(crate) fn record_key(&self, id: TaskId) -> String {
        self.record_name(id).to_string()
    }

    /// [`record_key`](Self::record_key), as a command argument.
    pub(crate) fn record_name(&self, id: TaskId) -> Name<'_, TaskId> {
        Name::new(&self.inner.prefix, "r:", id)
    }

    /// The record and history keys of layout version 1, read while
    /// records written by earlier builds last.
    pub(crate) fn v1_keys(&self, id: TaskId) -> (String, String) {
        let prefix = &self.inner.prefix;
        (format!("{prefix}t:{id}"), format!("{prefix}t:{id}:h"))
    }

    pub(crate) fn execution_key(&self, key: &str) -> String {
        self.execution_name(key).to_string()
    }

    /// [`execution_key`](Self::execution_key), as a command argument.
    pub(crate) fn execution_name<'a>(&'a self, key: &'a str) -> Name<'a, &'a str> {
        Name::new(&self.inner.prefix, "k:", key)
    }

    pub(crate) fn channel(&self, id: TaskId) -> String {
        self.channel_name(id).to_string()
    }

    /// [`channel`](Self::channel), as a command argument.
    pub(crate) fn channel_name(&self, id: TaskId) -> Name<'_, TaskId> {
        Name::new(&self.inner.prefix, "done:", id)
    }

    pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
        (ttl.as_millis() as u64).max(1)
    }

    pub(crate) fn invoke(
        pipe: &mut Pipeline,
        script: &Script,
        keys: &[String],
        args: Vec<Vec<u8>>,
    ) {
        let cmd = pipe.cmd("EVALSHA").arg(script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(key);
        }
        for arg in args {
            cmd.arg(arg);
        }
    }

    /// [`Store::ping`].
    pub(crate) async fn ping_redis(&self) -> StoreResult<()> {
        let mut conn = self.inner.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable("ping", &self.inner.url))
    }
}

/// A name in the store's namespace, `{prefix}{kind}{name}`: written into a
/// command's buffer as it is sent, so the writes of every run make no
/// `String` of their keys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Name<'a, T> {
    prefix: &'a str,
    kind: &'static str,
    name: T,
}

impl<'a, T> Name<'a, T> {
    pub(crate) fn new(prefix: &'a str, kind: &'static str, name: T) -> Self {
        Name { prefix, kind, name }
    }
}

impl<T: fmt::Display> fmt::Display for Name<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix)?;
        f.write_str(self.kind)?;
        self.name.fmt(f)
    }
}

impl<T: fmt::Display> ToRedisArgs for Name<'_, T> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + RedisWrite,
    {
        out.write_arg_fmt(self);
    }
}

/// One argument, always.
impl<T: fmt::Display> ToSingleRedisArg for Name<'_, T> {}

/// One command argument written from its `Display` form straight into the
/// command's buffer, with no `String` of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shown<T>(pub(crate) T);

impl<T: fmt::Display> ToRedisArgs for Shown<T> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + RedisWrite,
    {
        out.write_arg_fmt(&self.0);
    }
}

/// One argument, always.
impl<T: fmt::Display> ToSingleRedisArg for Shown<T> {}

/// A command named `name` with room for `args` arguments of `bytes` bytes
/// in all, so that adding them never grows its buffers.
pub(crate) fn command(name: &'static str, args: usize, bytes: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(args, bytes);
    cmd.arg(name);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arguments of `cmd`, as Redis receives them.
    fn args(cmd: &Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => b"<not a plain argument>".to_vec(),
            })
            .collect()
    }

    #[test]
    fn names_are_written_as_their_strings() {
        let id: TaskId = "0191e0c4-3f6a-7d2c-9b1e-5a4f3c2b1a09"
            .parse()
            .expect("a valid task id");
        let record = Name::new("ns:", "r:", id);
        let lease = Name::new("ns:", "k:", "order-42");
        assert_eq!(record.to_string(), format!("ns:r:{id}"));
        assert_eq!(lease.to_string(), "ns:k:order-42");
        let mut cmd = command("HSET", 4, 8);
        cmd.arg(record).arg(Shown(7u32)).arg(lease);
        assert_eq!(
            args(&cmd),
            vec![
                b"HSET".to_vec(),
                format!("ns:r:{id}").into_bytes(),
                b"7".to_vec(),
                b"ns:k:order-42".to_vec(),
            ]
        );
    }
}

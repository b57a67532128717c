//! The Redis implementation of the state store.
//!
//! One multiplexed connection (reconnecting on its own) carries every
//! command. Each store step is atomic: a Lua script where it must read
//! before it writes (producer states with their rules, enqueue claims,
//! workflow steps), plain commands in one transaction where it need not (a
//! run's lease, start and outcome). A worker's concurrent runs share those
//! transactions (see the `batch` module), and a producer's batches of
//! updates go out pipelined. Waiting for results costs one more connection,
//! shared by every waiter of the process: each waiter subscribes to its
//! task's channel, and the final write publishes on it.
//!
//! Keys, under the namespace `{ns}` (the public layout, version 1, of
//! SPEC.md section 18; `celeriac_schema::store::layout` names them and
//! reads records):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:t:{task id}` | hash | the record; its field `q` is a producer's `queued` mark for a task sent without a key |
//! | `{ns}:t:{task id}:h` | string | its history: MessagePack transitions one after another |
//! | `{ns}:k:{key}` | string | the run lease token while a run holds it; `done:{task id}` once a run with this key succeeded |
//! | `{ns}:e:{key}` | string | the task id an enqueue key is bound to |
//! | `{ns}:purged` | hash | logical queue → when it was purged (ms); the hash lives as long as the longest mark asked for |
//! | channel `{ns}:done:{task id}` | pub/sub | the final state, when reached |
//!
//! The control plane's keys (revocations, run-time limits, workers) are
//! listed in the `control` module.

mod batch;
mod control;
pub(crate) mod index;
mod scripts;
pub(crate) mod sentinel;
mod waiters;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::store::layout::{self, QueuedMark};
use celeriac_schema::store::{
    Begin, Claim, ControlHash, NodeProgress, Ready, Store, StoreSettings, TaskRecord, Update,
    WorkflowRecord, WorkflowState, CLAIM_STALE_AFTER,
};
use celeriac_schema::workflow::{Node, Workflow};
use celeriac_schema::{Error as SchemaError, TaskId, TaskState};
use redis::aio::ConnectionManager;
use redis::{Cmd, Pipeline, Script};
use tracing::debug;

use crate::error::redact_url;
use crate::tls::TlsOptions;

use batch::Batcher;
use waiters::Waiters;

type StoreResult<T> = celeriac_schema::Result<T>;

/// How long a store command may take before it counts as a failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The record field of a producer's [`QueuedMark`].
const QUEUED_MARK: &str = layout::QUEUED_MARK;

/// A [`Store`] in Redis, for clusters.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use celeriac_producer::RedisStore;
/// use celeriac_schema::store::{Store, StoreSettings};
///
/// # async fn demo() -> celeriac_schema::Result<()> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379", "celeriac", StoreSettings::default()).await?;
/// let store: Arc<dyn Store> = Arc::new(store);
/// store.ping().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    prefix: String,
    settings: StoreSettings,
    conn: sentinel::StoreConnection,
    apply: Scripts,
    waiters: Waiters,
    /// Carries the run leases and outcomes of concurrent runs together.
    batcher: Batcher,
}

struct Scripts {
    record: Script,
    claim: Script,
    release: Script,
    renew: Script,
    unclaim: Script,
    node_succeeded: Script,
    node_failed: Script,
    create_workflow: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable<'a>(
    op: &'static str,
    url: &'a str,
) -> impl Fn(redis::RedisError) -> SchemaError + 'a {
    move |e| SchemaError::StoreUnavailable {
        op,
        message: format!("{} ({})", e, redact_url(url)),
    }
}

/// MessagePack with named fields, as the store keeps its values.
fn encode<T: serde::Serialize + ?Sized>(what: &'static str, value: &T) -> StoreResult<Vec<u8>> {
    let mut bytes = Vec::new();
    encode_into(&mut bytes, what, value)?;
    Ok(bytes)
}

/// [`encode`], appended to `bytes`.
fn encode_into<T: serde::Serialize + ?Sized>(
    bytes: &mut Vec<u8>,
    what: &'static str,
    value: &T,
) -> StoreResult<()> {
    rmp_serde::encode::write_named(bytes, value).map_err(|e| SchemaError::Encode {
        what,
        message: e.to_string(),
    })
}

/// Opens a client for `url` (over TLS with `tls` for `rediss://`) and its
/// reconnecting connection, within [`RESPONSE_TIMEOUT`]; errors name the
/// URL with its password redacted, and a failed TLS handshake the server
/// and the reason.
pub(crate) async fn connect_manager(
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
    /// use celeriac_producer::tls::TlsOptions;
    /// use celeriac_producer::RedisStore;
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
        let (client, conn) = sentinel::connect(url, tls).await?;
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
                conn,
            }),
        };
        store.ping().await?;
        store.load_scripts().await?;
        Ok(store)
    }

    /// The key prefix (`{namespace}:`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    async fn load_scripts(&self) -> StoreResult<()> {
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
    async fn run<T: redis::FromRedisValue>(
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

    /// Applies `cmds` atomically through the batcher, which shares one
    /// transaction among the writes of concurrent runs.
    async fn write(&self, op: &'static str, cmds: Vec<Cmd>) -> StoreResult<Vec<redis::Value>> {
        self.inner
            .batcher
            .write(cmds)
            .await
            .map_err(unavailable(op, &self.inner.url))
    }

    fn record_key(&self, id: TaskId) -> String {
        format!("{}t:{id}", self.inner.prefix)
    }

    /// The keys of a workflow: record, children, pending, status, nodes.
    fn workflow_keys(&self, id: TaskId) -> [String; 5] {
        let base = format!("{}w:{id}", self.inner.prefix);
        [
            base.clone(),
            format!("{base}:c"),
            format!("{base}:p"),
            format!("{base}:s"),
            format!("{base}:n"),
        ]
    }

    async fn coordinate(
        &self,
        op: &'static str,
        script: &Script,
        workflow: TaskId,
        node: &str,
    ) -> StoreResult<redis::Value> {
        let keys = self.workflow_keys(workflow);
        let mut pipe = redis::pipe();
        Self::invoke(
            &mut pipe,
            script,
            &keys[..4],
            vec![
                node.as_bytes().to_vec(),
                Self::ttl_ms(self.inner.settings.result_ttl)
                    .to_string()
                    .into_bytes(),
                celeriac_schema::now_ms().to_string().into_bytes(),
                self.channel(workflow).into_bytes(),
            ],
        );
        let (value,): (redis::Value,) = self.run(op, &pipe).await?;
        Ok(value)
    }

    fn history_key(&self, id: TaskId) -> String {
        format!("{}t:{id}:h", self.inner.prefix)
    }

    fn execution_key(&self, key: &str) -> String {
        format!("{}k:{key}", self.inner.prefix)
    }

    /// `SET` of a run lease, if nobody holds the key.
    fn take_lease_cmd(&self, key: &str, token: &str) -> Cmd {
        let mut take = redis::cmd("SET");
        take.arg(self.execution_key(key))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(Self::ttl_ms(self.inner.settings.lease_ttl));
        take
    }

    /// Who holds a key whose lease could not be taken: a run (busy) or a
    /// success.
    async fn lease_holder(&self, key: &str) -> StoreResult<Begin> {
        let k = self.execution_key(key);
        let mut pipe = redis::pipe();
        pipe.get(&k).pttl(&k);
        // A holder gone in between (its lease ran out) reads as busy
        // for a millisecond: the caller asks again.
        let (holder, left): (Option<String>, i64) = self.run("lease", &pipe).await?;
        match holder.as_deref().and_then(|h| h.strip_prefix("done:")) {
            Some(id) => id
                .parse::<TaskId>()
                .map(|task_id| Begin::Succeeded { task_id })
                .map_err(|e| SchemaError::StoreData {
                    what: "execution key",
                    message: format!("{id:?}: {e}"),
                }),
            None => Ok(Begin::Busy {
                retry_after: Duration::from_millis(left.max(1) as u64),
            }),
        }
    }

    /// Adds the native commands that write a worker-side state (which
    /// applies unconditionally) to `cmds`: the record's fields, the history
    /// entry, the TTLs, and the wake-up of waiters on a final state.
    fn worker_state(&self, cmds: &mut Vec<Cmd>, update: &Update) -> StoreResult<()> {
        let rec = self.record_key(update.id);
        let hist = self.history_key(update.id);
        let ttl = Self::ttl_ms(self.inner.settings.result_ttl);
        // Sized once: the fields below, and the values that vary in length.
        let varying = update.task.len()
            + update.queue.len()
            + update.worker.as_ref().map_or(0, String::len)
            + update.idempotency_key.as_ref().map_or(0, String::len)
            + update.workflow_id.as_ref().map_or(0, String::len)
            + update.result.as_ref().map_or(0, Vec::len)
            + update
                .error
                .as_ref()
                .map_or(0, |e| e.error_type.len() + e.message.len());
        let mut fields = Cmd::with_capacity(32, rec.len() + varying + 256);
        fields
            .arg("HSET")
            .arg(&rec)
            .arg("task")
            .arg(&update.task)
            .arg("queue")
            .arg(&update.queue)
            .arg("state")
            .arg(update.state.as_str())
            .arg("attempt")
            .arg(update.attempt);
        if let Some(worker) = &update.worker {
            fields.arg("worker").arg(worker);
        }
        if let Some(key) = &update.idempotency_key {
            fields.arg("key").arg(key);
        }
        if let Some(wf) = &update.workflow_id {
            fields.arg("wf").arg(wf);
        }
        // A run too short to have written `started` records it here.
        let started = update.started_transition();
        if let Some(started) = &started {
            fields.arg("started_at").arg(started.at_ms);
        }
        match update.state {
            TaskState::Started => {
                fields
                    .arg("started_at")
                    .arg(update.at_ms)
                    .arg("finished_at")
                    .arg("");
            }
            s if s.is_terminal() => {
                fields.arg("finished_at").arg(update.at_ms);
            }
            _ => {}
        }
        if let Some(failure) = &update.error {
            fields
                .arg("err_type")
                .arg(&failure.error_type)
                .arg("err_msg")
                .arg(&failure.message);
        }
        if update.state == TaskState::Succeeded {
            fields
                .arg("err_type")
                .arg("")
                .arg("err_msg")
                .arg("")
                .arg("result")
                .arg(update.result.as_deref().unwrap_or_default());
        }
        cmds.push(fields);
        if started.is_some() || update.state == TaskState::Started {
            cmds.push(Cmd::hincr(&rec, "runs", 1));
        }
        let mut entries = Vec::new();
        if let Some(started) = &started {
            encode_into(&mut entries, "transition", started)?;
        }
        encode_into(&mut entries, "transition", &update.transition())?;
        cmds.push(Cmd::append(&hist, entries));
        cmds.push(Cmd::pexpire(&rec, ttl as i64));
        cmds.push(Cmd::pexpire(&hist, ttl as i64));
        if update.state.is_terminal() {
            cmds.push(Cmd::publish(self.channel(update.id), update.state.as_str()));
        }
        index::task_cmds(self, update, cmds);
        Ok(())
    }

    fn channel(&self, id: TaskId) -> String {
        format!("{}done:{id}", self.inner.prefix)
    }

    fn ttl_ms(ttl: Duration) -> u64 {
        (ttl.as_millis() as u64).max(1)
    }

    fn update_args(&self, update: &Update) -> StoreResult<Vec<Vec<u8>>> {
        let entry = encode("transition", &update.transition())?;
        let (has_err, err_type, err_msg) = match &update.error {
            Some(f) => ("1", f.error_type.as_str(), f.message.as_str()),
            None => ("0", "", ""),
        };
        let (has_result, result) = match &update.result {
            Some(bytes) => ("1", bytes.clone()),
            None => ("0", Vec::new()),
        };
        Ok(vec![
            update.state.as_str().into(),
            update.attempt.to_string().into(),
            update.at_ms.to_string().into(),
            update.worker.clone().unwrap_or_default().into(),
            update.idempotency_key.clone().unwrap_or_default().into(),
            update.workflow_id.clone().unwrap_or_default().into(),
            update.task.clone().into(),
            update.queue.clone().into(),
            has_err.into(),
            err_type.into(),
            err_msg.into(),
            entry,
            has_result.into(),
            result,
        ])
    }

    fn invoke(pipe: &mut Pipeline, script: &Script, keys: &[String], args: Vec<Vec<u8>>) {
        let cmd = pipe.cmd("EVALSHA").arg(script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(key);
        }
        for arg in args {
            cmd.arg(arg);
        }
    }

    fn parse_record(
        &self,
        id: TaskId,
        fields: HashMap<String, Vec<u8>>,
        history_bytes: Vec<u8>,
    ) -> StoreResult<Option<TaskRecord>> {
        layout::parse_record(id, &fields, &history_bytes)
    }
}

/// Sets a purge mark and keeps the hash at least as long as asked.
const MARK_PURGED: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#;

#[async_trait::async_trait]
impl Store for RedisStore {
    fn settings(&self) -> &StoreSettings {
        &self.inner.settings
    }

    async fn mark_purged(&self, queue: &str, at_ms: u64, ttl: Duration) -> StoreResult<()> {
        let mut conn = self.inner.conn.clone();
        Script::new(MARK_PURGED)
            .key(format!("{}purged", self.inner.prefix))
            .arg(queue)
            .arg(at_ms)
            .arg(Self::ttl_ms(ttl))
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable("mark purged", &self.inner.url))
    }

    async fn purge_marks(&self) -> StoreResult<Vec<(String, u64)>> {
        let mut conn = self.inner.conn.clone();
        let marks: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(format!("{}purged", self.inner.prefix))
            .query_async(&mut conn)
            .await
            .map_err(unavailable("purge marks", &self.inner.url))?;
        Ok(marks.into_iter().collect())
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.inner.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable("ping", &self.inner.url))
    }

    async fn record(&self, updates: &[Update]) -> StoreResult<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let ttl = Self::ttl_ms(self.inner.settings.result_ttl);
        let mut pipe = redis::pipe();
        index::tasks_pipe(self, updates, &mut pipe);
        // A producer's `queued` for a task sent without a key needs no
        // script: its mark is one field set only if unset (the first
        // send's wins), and reading the record applies it by the usual
        // rules (a worker that started the task first keeps its state and
        // history).
        let (plain, scripted): (Vec<&Update>, Vec<&Update>) = updates.iter().partition(|u| {
            u.state == TaskState::Queued && u.idempotency_key.is_none() && u.result.is_none()
        });
        for update in plain {
            let rec = self.record_key(update.id);
            let mut names = redis::cmd("HSET");
            names
                .arg(&rec)
                .arg("task")
                .arg(&update.task)
                .arg("queue")
                .arg(&update.queue);
            if let Some(wf) = &update.workflow_id {
                names.arg("wf").arg(wf);
            }
            pipe.add_command(names).ignore();
            pipe.hset_nx(&rec, QUEUED_MARK, QueuedMark::of(update).encode()?)
                .ignore();
            pipe.pexpire(&rec, ttl as i64).ignore();
        }
        for batch in scripted.chunks(scripts::RECORD_BATCH) {
            let mut keys = Vec::with_capacity(batch.len());
            let mut args = Vec::with_capacity(1 + batch.len() * 15);
            args.push(ttl.to_string().into_bytes());
            for update in batch {
                keys.push(self.record_key(update.id));
                keys.push(self.history_key(update.id));
                args.push(self.channel(update.id).into_bytes());
                args.extend(self.update_args(update)?);
            }
            Self::invoke(&mut pipe, &self.inner.apply.record, &keys, args);
            pipe.ignore();
        }
        self.run::<()>("record", &pipe).await
    }

    async fn get(&self, id: TaskId) -> StoreResult<Option<TaskRecord>> {
        let mut pipe = redis::pipe();
        pipe.hgetall(self.record_key(id)).get(self.history_key(id));
        let (fields, history): (HashMap<String, Vec<u8>>, Option<Vec<u8>>) =
            self.run("get", &pipe).await?;
        self.parse_record(id, fields, history.unwrap_or_default())
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> StoreResult<Option<TaskRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let channel = self.channel(id);
        let mut subscription = self.inner.waiters.subscribe(&channel).await;
        loop {
            // Subscribed first, read second: a final write between the two
            // is seen by the read.
            if let Some(record) = self.get(id).await? {
                if record.state.is_terminal() {
                    return Ok(Some(record));
                }
            }
            if !subscription.changed_before(deadline).await {
                return Ok(None);
            }
            subscription.resubscribe_if_needed().await;
        }
    }

    async fn claim(&self, claims: &[(String, Update)]) -> StoreResult<Vec<Claim>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let settings = &self.inner.settings;
        let mut pipe = redis::pipe();
        for (key, update) in claims {
            let mut args = vec![
                Self::ttl_ms(settings.key_ttl).to_string().into_bytes(),
                (CLAIM_STALE_AFTER.as_millis() as u64)
                    .to_string()
                    .into_bytes(),
                format!("{}t:", self.inner.prefix).into_bytes(),
                update.id.to_string().into_bytes(),
                Self::ttl_ms(settings.result_ttl).to_string().into_bytes(),
                self.channel(update.id).into_bytes(),
            ];
            args.extend(self.update_args(update)?);
            Self::invoke(
                &mut pipe,
                &self.inner.apply.claim,
                &[
                    format!("{}e:{key}", self.inner.prefix),
                    self.record_key(update.id),
                    self.history_key(update.id),
                ],
                args,
            );
        }
        let answers: Vec<(i64, String, i64)> = self.run("claim", &pipe).await?;
        answers
            .into_iter()
            .map(|(code, id, republish)| match code {
                0 => Ok(Claim::Claimed),
                _ => id
                    .parse::<TaskId>()
                    .map(|task_id| Claim::Existing {
                        task_id,
                        republish: republish == 1,
                    })
                    .map_err(|e| SchemaError::StoreData {
                        what: "enqueue key",
                        message: format!("{id:?}: {e}"),
                    }),
            })
            .collect()
    }

    async fn unclaim(&self, claims: &[(String, TaskId)]) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        for (key, id) in claims {
            Self::invoke(
                &mut pipe,
                &self.inner.apply.unclaim,
                &[format!("{}e:{key}", self.inner.prefix)],
                vec![id.to_string().into_bytes()],
            );
            pipe.ignore();
        }
        self.run::<()>("unclaim", &pipe).await
    }

    async fn lease(&self, key: &str, token: &str) -> StoreResult<Begin> {
        // Plain commands: take the lease or see who holds the key. The key
        // holds a run's token while it runs and `done:{task id}` once a run
        // succeeded; finishing sets the mark before anything releases it.
        // The usual case, a key nobody holds, costs one command; who holds
        // it is asked only when the lease is taken.
        let replies = self
            .write("lease", vec![self.take_lease_cmd(key, token)])
            .await?;
        if matches!(replies.first(), Some(redis::Value::Nil)) {
            return self.lease_holder(key).await;
        }
        Ok(Begin::Run)
    }

    async fn admit(&self, key: &str, token: &str, revocable: &[&str]) -> StoreResult<Begin> {
        self.admit_checked(key, token, revocable).await
    }

    async fn revoke(&self, ids: &[String], expires_at: u64) -> StoreResult<()> {
        self.revoke_ids(ids, expires_at).await
    }

    async fn revocations(&self) -> StoreResult<Vec<(String, u64)>> {
        self.live_revocations().await
    }

    async fn hash_all(&self, hash: ControlHash) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.control_hash_all(hash).await
    }

    async fn hash_put(
        &self,
        hash: ControlHash,
        field: &str,
        value: Option<&[u8]>,
    ) -> StoreResult<()> {
        self.control_hash_put(hash, field, value).await
    }

    async fn hash_swap(
        &self,
        hash: ControlHash,
        field: &str,
        old: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        self.control_hash_swap(hash, field, old, new).await
    }

    async fn started(&self, update: &Update) -> StoreResult<()> {
        let mut cmds = Vec::with_capacity(6);
        self.worker_state(&mut cmds, update)?;
        self.write("started", cmds).await.map(drop)
    }

    async fn results(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.hget(self.record_key(*id), "result");
            }
            let values: Vec<Option<Vec<u8>>> = self.run("results", &pipe).await?;
            out.extend(values.into_iter().map(|v| v.filter(|b| !b.is_empty())));
        }
        Ok(out)
    }

    async fn create_workflow(&self, workflow: &Workflow, outputs: &[String]) -> StoreResult<bool> {
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for node in &workflow.nodes {
            for dep in &node.dependencies {
                children.entry(dep.as_str()).or_default().push(&node.id);
            }
        }
        let total = workflow.nodes.len();
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(8 + 4 * total + 2 * children.len());
        args.push(
            Self::ttl_ms(self.inner.settings.result_ttl)
                .to_string()
                .into_bytes(),
        );
        args.push(if total == 0 { "succeeded" } else { "running" }.into());
        args.push(total.to_string().into_bytes());
        args.push(total.to_string().into_bytes());
        args.push(b"0".to_vec());
        args.push(encode("outputs", outputs)?);
        args.push(celeriac_schema::now_ms().to_string().into_bytes());
        args.push(total.to_string().into_bytes());
        for node in &workflow.nodes {
            let (status, pending) = if node.dependencies.is_empty() {
                ("r", String::new())
            } else {
                ("w", node.dependencies.len().to_string())
            };
            args.push(node.id.clone().into_bytes());
            args.push(encode("workflow node", node)?);
            args.push(status.into());
            args.push(pending.into_bytes());
        }
        for (node, kids) in &children {
            args.push(node.as_bytes().to_vec());
            args.push(encode("workflow edges", kids)?);
        }
        let mut pipe = redis::pipe();
        Self::invoke(
            &mut pipe,
            &self.inner.apply.create_workflow,
            &self.workflow_keys(workflow.id),
            args,
        );
        index::workflow_pipe(self, workflow.id, &mut pipe);
        let (created,): (i64,) = self.run("create_workflow", &pipe).await?;
        Ok(created == 1)
    }

    async fn workflow_nodes(
        &self,
        workflow: TaskId,
        nodes: &[String],
    ) -> StoreResult<Vec<Option<Node>>> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let [.., n] = self.workflow_keys(workflow);
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&n).arg(nodes);
        let (specs,): (Vec<Option<Vec<u8>>>,) = self.run("workflow_nodes", &pipe).await?;
        specs
            .into_iter()
            .map(|spec| {
                spec.map(|bytes| {
                    rmp_serde::from_slice::<Node>(&bytes).map_err(|e| SchemaError::StoreData {
                        what: "workflow node",
                        message: e.to_string(),
                    })
                })
                .transpose()
            })
            .collect()
    }

    async fn node_succeeded(&self, workflow: TaskId, node: &str) -> StoreResult<Vec<Ready>> {
        let value = self
            .coordinate(
                "node_succeeded",
                &self.inner.apply.node_succeeded,
                workflow,
                node,
            )
            .await?;
        let flat: Vec<redis::Value> =
            redis::from_redis_value(value).map_err(|e| SchemaError::StoreData {
                what: "released nodes",
                message: e.to_string(),
            })?;
        let mut ready = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let [node, first] = pair else { continue };
            let node: String =
                redis::from_redis_value(node.clone()).map_err(|e| SchemaError::StoreData {
                    what: "released node",
                    message: e.to_string(),
                })?;
            let first: i64 = redis::from_redis_value(first.clone()).unwrap_or(0);
            ready.push(Ready {
                node,
                first: first == 1,
            });
        }
        Ok(ready)
    }

    async fn node_failed(&self, workflow: TaskId, node: &str) -> StoreResult<Vec<String>> {
        let value = self
            .coordinate("node_failed", &self.inner.apply.node_failed, workflow, node)
            .await?;
        redis::from_redis_value(value).map_err(|e| SchemaError::StoreData {
            what: "skipped nodes",
            message: e.to_string(),
        })
    }

    async fn get_workflow(&self, workflow: TaskId) -> StoreResult<Option<WorkflowRecord>> {
        let [w, _, _, st, _] = self.workflow_keys(workflow);
        let mut pipe = redis::pipe();
        pipe.hgetall(&w).hgetall(&st);
        let (fields, status): (HashMap<String, Vec<u8>>, HashMap<String, String>) =
            self.run("get_workflow", &pipe).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let text = |name: &str| {
            fields
                .get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let number = |name: &'static str| -> StoreResult<u64> {
            text(name)
                .parse::<u64>()
                .map_err(|e| SchemaError::StoreData {
                    what: name,
                    message: e.to_string(),
                })
        };
        let state = WorkflowState::parse(&text("state")).ok_or_else(|| SchemaError::StoreData {
            what: "workflow state",
            message: text("state"),
        })?;
        let outputs: Vec<String> = match fields.get("outputs") {
            Some(bytes) => rmp_serde::from_slice(bytes).map_err(|e| SchemaError::StoreData {
                what: "workflow outputs",
                message: e.to_string(),
            })?,
            None => Vec::new(),
        };
        let progress = status
            .into_iter()
            .map(|(node, s)| {
                let p = match s.as_str() {
                    "r" => NodeProgress::Released,
                    "s" => NodeProgress::Succeeded,
                    "f" => NodeProgress::Failed,
                    "k" => NodeProgress::Skipped,
                    _ => NodeProgress::Waiting,
                };
                (node, p)
            })
            .collect();
        Ok(Some(WorkflowRecord {
            id: workflow,
            state,
            nodes: number("nodes")? as usize,
            remaining: text("remaining").parse::<i64>().unwrap_or(0).max(0) as usize,
            failed: number("failed")? as usize,
            released: text("released").parse().unwrap_or(0),
            outputs,
            created_at: number("created_at")?,
            finished_at: text("finished_at").parse().ok(),
            progress,
        }))
    }

    async fn wait_workflow(
        &self,
        workflow: TaskId,
        timeout: Duration,
    ) -> StoreResult<Option<WorkflowRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let channel = self.channel(workflow);
        let mut subscription = self.inner.waiters.subscribe(&channel).await;
        loop {
            if let Some(record) = self.get_workflow(workflow).await? {
                if record.state != WorkflowState::Running {
                    return Ok(Some(record));
                }
            }
            if !subscription.changed_before(deadline).await {
                return Ok(None);
            }
            subscription.resubscribe_if_needed().await;
        }
    }

    async fn renew(&self, key: &str, token: &str) -> StoreResult<bool> {
        let mut pipe = redis::pipe();
        Self::invoke(
            &mut pipe,
            &self.inner.apply.renew,
            &[format!("{}k:{key}", self.inner.prefix)],
            vec![
                token.as_bytes().to_vec(),
                Self::ttl_ms(self.inner.settings.lease_ttl)
                    .to_string()
                    .into_bytes(),
            ],
        );
        let (renewed,): (i64,) = self.run("renew", &pipe).await?;
        Ok(renewed == 1)
    }

    async fn finish(&self, key: &str, token: &str, update: &Update) -> StoreResult<()> {
        let k = self.execution_key(key);
        let mut cmds = Vec::with_capacity(8);
        if update.state == TaskState::Succeeded {
            // The mark and the record land together.
            let mut mark = redis::cmd("SET");
            mark.arg(&k)
                .arg(format!("done:{}", update.id))
                .arg("PX")
                .arg(Self::ttl_ms(self.inner.settings.key_ttl));
            cmds.push(mark);
        } else {
            // On its own: a script Redis lost is loaded and run again
            // without repeating the record's writes.
            let mut release = redis::pipe();
            Self::invoke(
                &mut release,
                &self.inner.apply.release,
                &[k],
                vec![token.as_bytes().to_vec()],
            );
            release.ignore();
            self.run::<()>("finish", &release).await?;
        }
        self.worker_state(&mut cmds, update)?;
        self.write("finish", cmds).await.map(drop)
    }
}

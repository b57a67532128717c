//! Task records: a producer's states (pipelined, by script where the
//! rules must read before they write), a worker's states (plain commands
//! in the shared transaction), reading records and results, enqueue-key
//! claims, and the queues' purge marks.

use std::collections::HashMap;
use std::time::Duration;

use celeriac_schema::store::layout::{self, QueuedMark};
use celeriac_schema::store::{Claim, TaskRecord, Update, CLAIM_STALE_AFTER};
use celeriac_schema::{Error as SchemaError, TaskId, TaskState};
use redis::{Cmd, Script};

use crate::batch::Mode;
use crate::connect::{command, Shown};
use crate::{index, scripts, unavailable, RedisStore, StoreResult};

/// The record field of a producer's [`QueuedMark`].
const QUEUED_MARK: &str = layout::QUEUED_MARK;

/// Sets a purge mark and keeps the hash at least as long as asked.
const MARK_PURGED: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#;

impl RedisStore {
    /// Adds the native commands that write a worker-side state (which
    /// applies unconditionally) to `cmds`: the record's fields, the history
    /// entry, the TTLs, and the wake-up of waiters on a final state.
    pub(crate) fn worker_state(&self, cmds: &mut Vec<Cmd>, update: &Update) -> StoreResult<()> {
        let rec = self.record_name(update.id);
        let rec_len = self.inner.prefix.len() + 40;
        let ttl = Self::ttl_ms(self.inner.settings.result_ttl);
        // A run too short to have written `started` records it here.
        let started = update.started_transition();
        let transition = update.transition();
        let started_entry = started
            .as_ref()
            .map(|t| Ok::<_, SchemaError>((layout::HistoryField(t), layout::encode_transition(t)?)))
            .transpose()?;
        let entry = layout::encode_transition(&transition)?;
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
                .map_or(0, |e| e.error_type.len() + e.message.len())
            + entry.len()
            + started_entry.as_ref().map_or(0, |(_, e)| e.len());
        let mut fields = Cmd::with_capacity(32, rec_len + varying + 256);
        fields
            .arg("HSET")
            .arg(rec)
            .arg(layout::TASK)
            .arg(&update.task)
            .arg(layout::QUEUE)
            .arg(&update.queue)
            .arg(layout::STATE)
            .arg(update.state.as_str())
            .arg(layout::ATTEMPT)
            .arg(update.attempt);
        if let Some(worker) = &update.worker {
            fields.arg(layout::WORKER).arg(worker);
        }
        if let Some(key) = &update.idempotency_key {
            fields.arg(layout::KEY).arg(key);
        }
        if let Some(wf) = &update.workflow_id {
            fields.arg(layout::WORKFLOW).arg(wf);
        }
        if let Some(started) = &started {
            fields.arg(layout::STARTED_AT).arg(started.at_ms);
        }
        match update.state {
            TaskState::Started => {
                fields
                    .arg(layout::STARTED_AT)
                    .arg(update.at_ms)
                    .arg(layout::FINISHED_AT)
                    .arg("");
            }
            s if s.is_terminal() => {
                fields.arg(layout::FINISHED_AT).arg(update.at_ms);
            }
            _ => {}
        }
        if let Some(failure) = &update.error {
            fields
                .arg(layout::ERROR_TYPE)
                .arg(&failure.error_type)
                .arg(layout::ERROR_MESSAGE)
                .arg(&failure.message);
        }
        // A success leaves an earlier error in place: readers show none
        // for a succeeded record. A result not stored is no field.
        if let (TaskState::Succeeded, Some(result)) = (update.state, &update.result) {
            fields.arg(layout::RESULT).arg(result);
        }
        // The history: one field per transition, in the same command.
        if let Some((name, bytes)) = &started_entry {
            fields.arg(Shown(name)).arg(bytes);
        }
        fields
            .arg(Shown(layout::HistoryField(&transition)))
            .arg(entry);
        cmds.push(fields);
        let mut expire = command("PEXPIRE", 3, rec_len + 24);
        expire.arg(rec).arg(ttl);
        cmds.push(expire);
        if update.state.is_terminal() {
            let mut publish = command("PUBLISH", 3, rec_len + 24);
            publish
                .arg(self.channel_name(update.id))
                .arg(update.state.as_str());
            cmds.push(publish);
        }
        index::task_cmds(self, update, cmds);
        Ok(())
    }

    pub(crate) fn update_args(&self, update: &Update) -> StoreResult<Vec<Vec<u8>>> {
        let transition = update.transition();
        let entry = layout::encode_transition(&transition)?;
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
            layout::history_field(&transition).into_bytes(),
            entry,
            has_result.into(),
            result,
        ])
    }

    /// [`Store::mark_purged`].
    pub(crate) async fn mark_queue_purged(
        &self,
        queue: &str,
        at_ms: u64,
        ttl: Duration,
    ) -> StoreResult<()> {
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

    /// [`Store::purge_marks`].
    pub(crate) async fn read_purge_marks(&self) -> StoreResult<Vec<(String, u64)>> {
        let mut conn = self.inner.conn.clone();
        let marks: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(format!("{}purged", self.inner.prefix))
            .query_async(&mut conn)
            .await
            .map_err(unavailable("purge marks", &self.inner.url))?;
        Ok(marks.into_iter().collect())
    }

    /// [`Store::record`].
    pub(crate) async fn record_updates(&self, updates: &[Update]) -> StoreResult<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let ttl = Self::ttl_ms(self.inner.settings.result_ttl);
        let mut pipe = redis::pipe();
        index::tasks_pipe(self, updates, &mut pipe);
        // A producer's `queued` for a task sent without a key needs no
        // script: its mark is one field set only if unset (the first
        // send's wins), carrying the task's name, queue and workflow, and
        // reading the record applies it by the usual rules (a worker that
        // started the task first keeps its state and history).
        let (plain, scripted): (Vec<&Update>, Vec<&Update>) = updates.iter().partition(|u| {
            u.state == TaskState::Queued && u.idempotency_key.is_none() && u.result.is_none()
        });
        let rec_len = self.inner.prefix.len() + 40;
        for update in plain {
            let rec = self.record_name(update.id);
            let mark = QueuedMark::of(update).encode()?;
            let mut set = command("HSETNX", 4, rec_len + mark.len() + 8);
            set.arg(rec).arg(QUEUED_MARK).arg(mark);
            pipe.add_command(set).ignore();
            let mut expire = command("PEXPIRE", 3, rec_len + 24);
            expire.arg(rec).arg(ttl);
            pipe.add_command(expire).ignore();
        }
        for batch in scripted.chunks(scripts::RECORD_BATCH) {
            let mut keys = Vec::with_capacity(batch.len());
            let mut args = Vec::with_capacity(1 + batch.len() * (1 + scripts::UPDATE_ARGS));
            args.push(ttl.to_string().into_bytes());
            for update in batch {
                keys.push(self.record_key(update.id));
                args.push(self.channel(update.id).into_bytes());
                args.extend(self.update_args(update)?);
            }
            Self::invoke(&mut pipe, &self.inner.apply.record, &keys, args);
            pipe.ignore();
        }
        self.run::<()>("record", &pipe).await
    }

    /// [`Store::get`]: the record, or one of layout version 1 written by
    /// an earlier build, read in the same trip.
    pub(crate) async fn get_record(&self, id: TaskId) -> StoreResult<Option<TaskRecord>> {
        let (v1_rec, v1_hist) = self.v1_keys(id);
        let mut pipe = redis::pipe();
        pipe.hgetall(self.record_key(id))
            .hgetall(v1_rec)
            .get(v1_hist);
        type Fields = HashMap<String, Vec<u8>>;
        let (fields, v1_fields, v1_history): (Fields, Fields, Option<Vec<u8>>) =
            self.run("get", &pipe).await?;
        if fields.is_empty() && !v1_fields.is_empty() {
            return layout::v1::parse_record(id, &v1_fields, &v1_history.unwrap_or_default());
        }
        layout::parse_record(id, &fields)
    }

    /// [`Store::claim`].
    pub(crate) async fn claim_keys(&self, claims: &[(String, Update)]) -> StoreResult<Vec<Claim>> {
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
                format!("{}r:", self.inner.prefix).into_bytes(),
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

    /// [`Store::unclaim`].
    pub(crate) async fn unclaim_keys(&self, claims: &[(String, TaskId)]) -> StoreResult<()> {
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

    /// [`Store::started`].
    pub(crate) async fn record_started(&self, update: &Update) -> StoreResult<()> {
        let mut cmds = Vec::with_capacity(6);
        self.worker_state(&mut cmds, update)?;
        self.write("started", Mode::Atomic, cmds).await.map(drop)
    }

    /// [`Store::results`].
    pub(crate) async fn read_results(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.hget(self.record_key(*id), layout::RESULT);
            }
            let mut values: Vec<Option<Vec<u8>>> = self.run("results", &pipe).await?;
            // Only where there is none: the result of a record of layout
            // version 1, written by an earlier build.
            let missing: Vec<usize> = (0..values.len()).filter(|i| values[*i].is_none()).collect();
            if !missing.is_empty() {
                let mut pipe = redis::pipe();
                for i in &missing {
                    pipe.hget(self.v1_keys(chunk[*i]).0, layout::RESULT);
                }
                let old: Vec<Option<Vec<u8>>> = self.run("results", &pipe).await?;
                for (i, value) in missing.into_iter().zip(old) {
                    values[i] = value;
                }
            }
            out.extend(values.into_iter().map(|v| v.filter(|b| !b.is_empty())));
        }
        Ok(out)
    }
}

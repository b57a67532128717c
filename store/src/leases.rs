//! Run leases of idempotency keys: taking one, renewing it while the run
//! lasts, and finishing (the success mark, or the lease released).
//!
//! A task sent without an idempotency key runs under its own id as key.
//! Its success needs no mark of its own: its record says it, so taking its
//! lease also reads the record's state, and a success deletes the lease.

use std::time::Duration;

use celeriac_schema::store::{layout, Begin, Update};
use celeriac_schema::{Error as SchemaError, TaskId, TaskState};
use redis::Cmd;

use crate::batch::Mode;
use crate::connect::command;
use crate::{RedisStore, StoreResult};

impl RedisStore {
    /// `SET` of a run lease, if nobody holds the key; for a key that is a
    /// task id, also the `HGET` of that task's state (its success is kept
    /// there, not in the key).
    pub(crate) fn take_lease_cmds(&self, key: &str, token: &str, cmds: &mut Vec<Cmd>) {
        let prefix = self.inner.prefix.len();
        let mut take = command("SET", 6, prefix + key.len() + token.len() + 40);
        take.arg(self.execution_name(key))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(Self::ttl_ms(self.inner.settings.lease_ttl));
        cmds.push(take);
        if let Ok(id) = key.parse::<TaskId>() {
            let mut state = command("HGET", 3, prefix + 60);
            state.arg(self.record_name(id)).arg(layout::STATE);
            cmds.push(state);
        }
    }

    /// What the replies of [`take_lease_cmds`](Self::take_lease_cmds)
    /// mean.
    pub(crate) async fn lease_taken(
        &self,
        key: &str,
        token: &str,
        replies: &[redis::Value],
    ) -> StoreResult<Begin> {
        if matches!(replies.first(), Some(redis::Value::Nil)) {
            // Held already: by another run, by a success, or by this very
            // run, when an earlier try's `SET NX` went through but its
            // reply was lost (a broken connection, a failover). Tokens are
            // unique per run, so the last case is this run's lease.
            if let Some(held) = self.lease_holder(key, token).await? {
                return Ok(held);
            }
        }
        let state: Option<String> = match replies.get(1) {
            Some(value) => {
                redis::from_redis_value_ref(value).map_err(|e| SchemaError::StoreData {
                    what: "task state",
                    message: e.to_string(),
                })?
            }
            None => None,
        };
        if state.as_deref() != Some(TaskState::Succeeded.as_str()) {
            return Ok(Begin::Run);
        }
        // The task ran to success already: the lease just taken goes back.
        let task_id = key.parse::<TaskId>().map_err(|e| SchemaError::StoreData {
            what: "execution key",
            message: format!("{key:?}: {e}"),
        })?;
        self.release_lease(key, token).await?;
        Ok(Begin::Succeeded { task_id })
    }

    /// Releases a run lease if `token` still holds it.
    async fn release_lease(&self, key: &str, token: &str) -> StoreResult<()> {
        let mut release = redis::pipe();
        Self::invoke(
            &mut release,
            &self.inner.apply.release,
            &[self.execution_key(key)],
            vec![token.as_bytes().to_vec()],
        );
        release.ignore();
        self.run::<()>("release", &release).await
    }

    /// Who holds a key whose lease could not be taken: another run (busy)
    /// or a success; `None` when `token`, the asking run's, holds it.
    pub(crate) async fn lease_holder(&self, key: &str, token: &str) -> StoreResult<Option<Begin>> {
        let k = self.execution_key(key);
        let mut pipe = redis::pipe();
        pipe.get(&k).pttl(&k);
        // A holder gone in between (its lease ran out) reads as busy
        // for a millisecond: the caller asks again.
        let (holder, left): (Option<String>, i64) = self.run("lease", &pipe).await?;
        if holder.as_deref() == Some(token) {
            return Ok(None);
        }
        match holder.as_deref().and_then(|h| h.strip_prefix("done:")) {
            Some(id) => id
                .parse::<TaskId>()
                .map(|task_id| Some(Begin::Succeeded { task_id }))
                .map_err(|e| SchemaError::StoreData {
                    what: "execution key",
                    message: format!("{id:?}: {e}"),
                }),
            None => Ok(Some(Begin::Busy {
                retry_after: Duration::from_millis(left.max(1) as u64),
            })),
        }
    }

    /// [`Store::lease`].
    pub(crate) async fn take_lease(&self, key: &str, token: &str) -> StoreResult<Begin> {
        // Plain commands: take the lease or see who holds the key. The key
        // holds a run's token while it runs and `done:{task id}` once a run
        // succeeded; finishing sets the mark before anything releases it.
        // The usual case, a key nobody holds, costs one command; who holds
        // it is asked only when the lease is taken.
        let mut cmds = Vec::with_capacity(2);
        self.take_lease_cmds(key, token, &mut cmds);
        let replies = self.write("lease", Mode::Plain, cmds).await?;
        self.lease_taken(key, token, &replies).await
    }

    /// [`Store::renew`].
    pub(crate) async fn renew_lease(&self, key: &str, token: &str) -> StoreResult<bool> {
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

    /// [`Store::finish`].
    pub(crate) async fn finish_run(
        &self,
        key: &str,
        token: &str,
        update: &Update,
    ) -> StoreResult<()> {
        let k = self.execution_key(key);
        let mut cmds = Vec::with_capacity(6);
        let own_key =
            update.idempotency_key.is_none() && key.parse::<TaskId>().ok() == Some(update.id);
        match update.state {
            // The record says it: the lease goes, in the same transaction.
            TaskState::Succeeded if own_key => {
                let mut del = command("DEL", 2, k.len() + 8);
                del.arg(&k);
                cmds.push(del);
            }
            TaskState::Succeeded => {
                // The mark and the record land together.
                let mut mark = redis::cmd("SET");
                mark.arg(&k)
                    .arg(format!("{}{}", layout::SUCCEEDED_PREFIX, update.id))
                    .arg("PX")
                    .arg(Self::ttl_ms(self.inner.settings.key_ttl));
                cmds.push(mark);
            }
            // On its own: a script Redis lost is loaded and run again
            // without repeating the record's writes.
            _ => self.release_lease(key, token).await?,
        }
        self.worker_state(&mut cmds, update)?;
        self.write("finish", Mode::Atomic, cmds).await.map(drop)
    }
}

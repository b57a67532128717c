//! The index of recent tasks and workflows, for browsing (the dashboard's
//! task list): the store otherwise finds records by id only.
//!
//! Two sorted sets per namespace, each trimmed to [`INDEX_LIMIT`] members
//! (a worker's single-task writes trim once in `TRIM_EVERY`) and
//! expiring with the records (the result TTL after their last write):
//!
//! | key | members | score |
//! |---|---|---|
//! | `{ns}:idx:t` | task ids | Unix ms of the task's latest recorded state |
//! | `{ns}:idx:w` | workflow ids | Unix ms of the workflow's submission |
//!
//! The commands ride along with writes the store makes anyway (a worker's
//! state in its transaction, a producer's pipelined `queued`, a workflow's
//! creation), so indexing costs no round trip. An id whose record expired
//! is skipped when reading.

use std::collections::HashMap;

use celeriac_schema::store::{TaskRecord, Update};
use celeriac_schema::{TaskId, TaskState};
use redis::{Cmd, Pipeline};

use super::connect::{command, Name, Shown};
use super::{RedisStore, StoreResult};

/// Members kept per index: the newest ones.
pub const INDEX_LIMIT: usize = 10_000;

/// How many index entries one [`RedisStore::recent_tasks`] call reads at
/// most while looking for matches.
pub const SCAN_LIMIT: usize = 5_000;

/// Records fetched per pipeline while reading.
const CHUNK: usize = 500;

/// What [`RedisStore::recent_tasks`] keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks in these states (any state when empty).
    pub states: Vec<TaskState>,
    /// Only tasks whose name contains this text.
    pub task: Option<String>,
    /// Only tasks of this logical queue.
    pub queue: Option<String>,
    /// Only tasks whose latest state was recorded at or after this Unix ms.
    pub since_ms: Option<u64>,
    /// Only tasks whose latest state was recorded at or before this Unix ms.
    pub until_ms: Option<u64>,
    /// At most this many matches (the newest first).
    pub limit: usize,
}

/// A task found in the index: its record (without its history) and when its
/// latest state was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedTask {
    /// The record; `history` is left empty.
    pub record: TaskRecord,
    /// Unix ms of its latest recorded state.
    pub updated_at: u64,
}

/// What a [`RedisStore::recent_tasks`] call found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskPage {
    /// The matching tasks, newest first.
    pub tasks: Vec<IndexedTask>,
    /// Index entries looked at.
    pub scanned: usize,
    /// Whether more entries were left unread (the limit or the scan limit
    /// was reached).
    pub truncated: bool,
}

/// The task index's key, after the namespace's prefix.
const TASKS: &str = "idx:t";

pub(super) fn tasks_key(prefix: &str) -> String {
    tasks_name(prefix).to_string()
}

/// [`tasks_key`], as a command argument.
fn tasks_name(prefix: &str) -> Name<'_, &'static str> {
    Name::new(prefix, TASKS, "")
}

pub(super) fn workflows_key(prefix: &str) -> String {
    format!("{prefix}idx:w")
}

fn ttl_ms(store: &RedisStore) -> u64 {
    RedisStore::ttl_ms(store.inner.settings.result_ttl)
}

/// A client trims the task index and refreshes its TTL with one in this
/// many of its single-task writes, not with each: the index may hold up
/// to this many entries over [`INDEX_LIMIT`] per writing client between
/// two trims, and every write costs Redis one command instead of three.
pub(super) const TRIM_EVERY: u64 = 64;

/// The commands that index `update`'s task, for a worker's transaction.
pub(super) fn task_cmds(store: &RedisStore, update: &Update, cmds: &mut Vec<Cmd>) {
    let key = tasks_name(&store.inner.prefix);
    let mut add = command("ZADD", 4, store.inner.prefix.len() + 70);
    add.arg(key).arg(update.at_ms).arg(Shown(update.id));
    cmds.push(add);
    let written = store
        .inner
        .indexed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if written.is_multiple_of(TRIM_EVERY) {
        cmds.push(Cmd::zremrangebyrank(key, 0, -(INDEX_LIMIT as isize) - 1));
        cmds.push(Cmd::pexpire(key, ttl_ms(store) as i64));
    }
}

/// Indexes the tasks of `updates` in `pipe`, replies ignored.
pub(super) fn tasks_pipe<'a>(
    store: &RedisStore,
    updates: impl IntoIterator<Item = &'a Update>,
    pipe: &mut Pipeline,
) {
    let prefix = &store.inner.prefix;
    let updates = updates.into_iter();
    let members = updates.size_hint().0;
    let mut add = command("ZADD", 2 + 2 * members, prefix.len() + 16 + 60 * members);
    let key = tasks_name(prefix);
    add.arg(key);
    let mut added = 0;
    for update in updates {
        add.arg(update.at_ms).arg(Shown(update.id));
        added += 1;
    }
    if added == 0 {
        return;
    }
    pipe.add_command(add).ignore();
    pipe.zremrangebyrank(key, 0, -(INDEX_LIMIT as isize) - 1)
        .ignore();
    pipe.pexpire(key, ttl_ms(store) as i64).ignore();
}

/// Indexes a workflow created now in `pipe`, replies ignored.
pub(super) fn workflow_pipe(store: &RedisStore, workflow: TaskId, pipe: &mut Pipeline) {
    let key = workflows_key(&store.inner.prefix);
    let at_ms = celeriac_schema::now_ms();
    pipe.zadd(&key, workflow.to_string(), at_ms).ignore();
    pipe.zremrangebyrank(&key, 0, -(INDEX_LIMIT as isize) - 1)
        .ignore();
    pipe.pexpire(&key, ttl_ms(store) as i64).ignore();
}

impl TaskQuery {
    fn matches(&self, record: &TaskRecord) -> bool {
        (self.states.is_empty() || self.states.contains(&record.state))
            && self.task.as_deref().is_none_or(|t| record.task.contains(t))
            && self.queue.as_deref().is_none_or(|q| record.queue == q)
    }
}

impl RedisStore {
    /// The most recently updated tasks matching `query`, newest first, from
    /// the index of recent tasks (see the `index` module: at most the last
    /// [`INDEX_LIMIT`] tasks; [`SCAN_LIMIT`] entries are looked at per call).
    ///
    /// # Errors
    ///
    /// [`celeriac_schema::Error::StoreUnavailable`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use celeriac_store::TaskQuery;
    /// use celeriac_schema::TaskState;
    ///
    /// # async fn demo(store: celeriac_store::RedisStore) -> celeriac_schema::Result<()> {
    /// let failed = TaskQuery { states: vec![TaskState::Failed], limit: 20, ..TaskQuery::default() };
    /// for task in store.recent_tasks(&failed).await?.tasks {
    ///     println!("{} {} {:?}", task.record.id, task.record.task, task.record.error);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn recent_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        let key = tasks_key(&self.inner.prefix);
        let max = query
            .until_ms
            .map_or_else(|| "+inf".to_owned(), |t| t.to_string());
        let min = query
            .since_ms
            .map_or_else(|| "-inf".to_owned(), |t| t.to_string());
        let mut page = TaskPage::default();
        let mut offset = 0;
        while page.tasks.len() < query.limit && offset < SCAN_LIMIT {
            let count = CHUNK.min(SCAN_LIMIT - offset);
            let mut pipe = redis::pipe();
            pipe.cmd("ZREVRANGEBYSCORE")
                .arg(&key)
                .arg(&max)
                .arg(&min)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(offset)
                .arg(count);
            let (entries,): (Vec<(String, f64)>,) = self.run("recent tasks", &pipe).await?;
            let ids: Vec<(TaskId, u64)> = entries
                .iter()
                .filter_map(|(id, score)| Some((id.parse().ok()?, *score as u64)))
                .collect();
            page.scanned += entries.len();
            offset += entries.len();
            let mut pipe = redis::pipe();
            for (id, _) in &ids {
                pipe.hgetall(self.record_key(*id));
            }
            let records: Vec<HashMap<String, Vec<u8>>> = if ids.is_empty() {
                Vec::new()
            } else {
                self.run("recent tasks", &pipe).await?
            };
            for ((id, updated_at), fields) in ids.into_iter().zip(records) {
                // A record this build cannot read is left out of the list.
                let Ok(Some(mut record)) =
                    celeriac_schema::store::layout::parse_record(id, &fields)
                else {
                    continue;
                };
                // The list shows records, not their histories.
                record.history = Vec::new();
                if query.matches(&record) {
                    if page.tasks.len() == query.limit {
                        page.truncated = true;
                        return Ok(page);
                    }
                    page.tasks.push(IndexedTask { record, updated_at });
                }
            }
            if entries.len() < count {
                return Ok(page);
            }
        }
        page.truncated = true;
        Ok(page)
    }

    /// The ids of the most recently submitted workflows with their
    /// submission time (Unix ms), newest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`celeriac_schema::Error::StoreUnavailable`].
    pub async fn recent_workflows(&self, limit: usize) -> StoreResult<Vec<(TaskId, u64)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("ZREVRANGE")
            .arg(workflows_key(&self.inner.prefix))
            .arg(0)
            .arg(limit - 1)
            .arg("WITHSCORES");
        let (entries,): (Vec<(String, f64)>,) = self.run("recent workflows", &pipe).await?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, score)| Some((id.parse().ok()?, score as u64)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: TaskState, task: &str, queue: &str) -> TaskRecord {
        TaskRecord::from_first(&Update::new(TaskId::new(), task, queue, state, 0))
    }

    #[test]
    fn a_query_filters_by_state_name_and_queue() {
        let failed = record(TaskState::Failed, "images.resize", "default");
        let any = TaskQuery::default();
        assert!(any.matches(&failed));
        let by_state = TaskQuery {
            states: vec![TaskState::Succeeded],
            ..TaskQuery::default()
        };
        assert!(!by_state.matches(&failed));
        let by_name = TaskQuery {
            task: Some("resize".into()),
            queue: Some("default".into()),
            ..TaskQuery::default()
        };
        assert!(by_name.matches(&failed));
        let other_queue = TaskQuery {
            queue: Some("mail".into()),
            ..TaskQuery::default()
        };
        assert!(!other_queue.matches(&failed));
    }
}

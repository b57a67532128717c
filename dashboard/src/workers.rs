//! The Workers page: the workers' heartbeats, through a [`WorkerSource`]
//! (the records workers keep in the store: [`StoreHeartbeats`]), and the
//! workers seen in recent tasks from the store, which is always available.

use std::collections::BTreeMap;
use std::sync::Arc;

use celeriac_schema::control::WorkerStatus;
use celeriac_schema::events::WorkerEventKind;
use celeriac_schema::store::{ControlHash, Store};
use celeriac_schema::TaskState;
use celeriac_store::TaskQuery;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::Result;
use crate::App;

/// One worker's latest heartbeat: the body of its `worker.heartbeat`
/// event (SPEC section 17), as the control plane keeps it.
pub use celeriac_schema::events::WorkerEvent as WorkerHeartbeat;

/// Where the Workers page reads heartbeats from.
///
/// # Examples
///
/// ```
/// use celeriac_dashboard::{WorkerHeartbeat, WorkerSource};
///
/// #[derive(Debug)]
/// struct Fixed(Vec<WorkerHeartbeat>);
///
/// #[async_trait::async_trait]
/// impl WorkerSource for Fixed {
///     async fn heartbeats(&self) -> Result<Option<Vec<WorkerHeartbeat>>, String> {
///         Ok(Some(self.0.clone()))
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait WorkerSource: Send + Sync + std::fmt::Debug + 'static {
    /// The latest heartbeat of each live worker, or `None` when this
    /// deployment has no heartbeat data.
    ///
    /// # Errors
    ///
    /// Why the heartbeats cannot be read now.
    async fn heartbeats(&self) -> Result<Option<Vec<WorkerHeartbeat>>, String>;
}

/// No heartbeat data: the page shows the workers seen in recent tasks
/// only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeartbeats;

#[async_trait::async_trait]
impl WorkerSource for NoHeartbeats {
    async fn heartbeats(&self) -> Result<Option<Vec<WorkerHeartbeat>>, String> {
        Ok(None)
    }
}

/// The heartbeat records workers with a store keep in its worker list
/// (`celeriac workers` reads the same): live workers only, a worker being
/// lost once it stopped or missed three heartbeats.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> celeriac_dashboard::Result<()> {
/// use std::sync::Arc;
/// use celeriac_dashboard::{Config, Dashboard, StoreHeartbeats};
/// use celeriac_schema::store::StoreSettings;
///
/// let store = celeriac_store::RedisStore::connect(
///     "redis://127.0.0.1:6379", "celeriac", StoreSettings::default()).await?;
/// let config = Config::new("amqp://guest:guest@127.0.0.1:5672/%2f", "celeriac");
/// let source = StoreHeartbeats::new(Arc::new(store.clone()));
/// let dashboard = Dashboard::new(config, store).workers(Arc::new(source));
/// # let _ = dashboard;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct StoreHeartbeats(Arc<dyn Store>);

impl StoreHeartbeats {
    /// The heartbeats in `store`.
    pub fn new(store: Arc<dyn Store>) -> StoreHeartbeats {
        StoreHeartbeats(store)
    }
}

#[async_trait::async_trait]
impl WorkerSource for StoreHeartbeats {
    async fn heartbeats(&self) -> Result<Option<Vec<WorkerHeartbeat>>, String> {
        let records = self
            .0
            .hash_all(ControlHash::Workers)
            .await
            .map_err(|e| e.to_string())?;
        let now = celeriac_schema::now_ms();
        let mut live: Vec<WorkerHeartbeat> = records
            .iter()
            .filter_map(|(_, bytes)| WorkerStatus::decode(bytes).ok())
            .filter(|s| s.kind != WorkerEventKind::Lost && !s.is_lost_at(now))
            .collect();
        live.sort_by(|a, b| a.worker.cmp(&b.worker));
        Ok(Some(live))
    }
}

/// A worker seen in the recent tasks of the store.
#[derive(Debug, Clone, Default, Serialize)]
struct Seen {
    worker: String,
    last_seen: u64,
    running: u64,
    succeeded: u64,
    failed: u64,
    retrying: u64,
    tasks: u64,
    queues: Vec<String>,
}

/// `GET /api/workers`.
pub(crate) async fn list(app: &App) -> Result<Value> {
    let (heartbeats, heartbeat_error) = match app.workers.heartbeats().await {
        Ok(h) => (h, None),
        Err(e) => (None, Some(e)),
    };
    let query = TaskQuery {
        limit: 2_000,
        ..TaskQuery::default()
    };
    let page = app.store.recent_tasks(&query).await?;
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for task in &page.tasks {
        let Some(worker) = crate::tasks::shown_worker(&task.record) else {
            continue;
        };
        let s = seen.entry(worker.to_owned()).or_insert_with(|| Seen {
            worker: worker.to_owned(),
            ..Seen::default()
        });
        s.last_seen = s.last_seen.max(task.updated_at);
        s.tasks += 1;
        match task.record.state {
            TaskState::Started => s.running += 1,
            TaskState::Succeeded => s.succeeded += 1,
            TaskState::Failed => s.failed += 1,
            TaskState::Retrying => s.retrying += 1,
            _ => {}
        }
        if !s.queues.contains(&task.record.queue) {
            s.queues.push(task.record.queue.clone());
        }
    }
    let mut seen: Vec<Seen> = seen.into_values().collect();
    seen.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
    Ok(json!({
        "heartbeats": heartbeats,
        "heartbeat_error": heartbeat_error,
        "seen": seen,
        "seen_scanned": page.scanned,
    }))
}

//! The RabbitMQ management API's queue list (`GET /api/queues/{vhost}`,
//! through `celeriac-dlq`'s client): the names, unacknowledged counts and
//! message counters the Queues page uses.

use celeriac_dlq::discover::Management;
use serde::Deserialize;

/// One queue as the management API reports it.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct QueueInfo {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) messages_unacknowledged: Option<u64>,
    #[serde(default)]
    pub(crate) message_stats: Option<MessageStats>,
}

/// Cumulative counters (present once the queue saw traffic).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct MessageStats {
    #[serde(default)]
    pub(crate) publish: Option<u64>,
    #[serde(default)]
    pub(crate) ack: Option<u64>,
}

/// Every queue of the virtual host, or why they could not be listed.
pub(crate) async fn queues(management: &Management) -> Result<Vec<QueueInfo>, String> {
    let listed = management
        .queue_list("name,messages_unacknowledged,message_stats.publish,message_stats.ack")
        .await
        .map_err(|e| e.to_string())?;
    listed
        .into_iter()
        .map(|queue| serde_json::from_value(queue).map_err(|e| format!("not a queue: {e}")))
        .collect()
}

//! Fair queues on the producer side: where the shard counts come from.
//!
//! The `{ns}:fair` hash of the state store is the source of truth (set by
//! `celeriac queue fair`); [`ProducerBuilder::fair_queue`] sets a count
//! without a store, and wins over the store when both name a queue.

use celeriac_schema::fair::parse_shards;
use celeriac_schema::store::ControlHash;
use celeriac_schema::topology::validate_name;
use celeriac_schema::workflow::Node;
use celeriac_schema::Topology;
use tracing::warn;

use super::ProducerBuilder;
use crate::error::Result;

/// Checks a workflow node's task name and tenant before it is sent.
pub(super) fn check_node(node: &Node) -> celeriac_schema::Result<()> {
    validate_name("task", &node.task)?;
    match &node.tenant {
        Some(tenant) => celeriac_schema::fair::validate_tenant(tenant),
        None => Ok(()),
    }
}

impl ProducerBuilder {
    /// Makes logical queue `queue` fair with `shards` shard queues: a task
    /// sent with [`crate::SendOptions::tenant()`] goes to its tenant's shard
    /// (SPEC.md section 21). Workers of the queue must use the same count;
    /// with a state store, `celeriac queue fair` records it once for all.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> celeriac_producer::Result<()> {
    /// use celeriac_producer::{Producer, SendOptions};
    ///
    /// let producer = Producer::builder("amqp://127.0.0.1:5672/%2f")
    ///     .fair_queue("default", 8)
    ///     .connect()
    ///     .await?;
    /// let opts = SendOptions::new().tenant("acme");
    /// producer.prepare_value("report", rmpv::Value::Nil, &opts)?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`ProducerBuilder::connect`] fails for a count of 0 or above 256.
    pub fn fair_queue(mut self, queue: impl Into<String>, shards: u64) -> Self {
        self.fair.push((queue.into(), shards));
        self
    }

    /// The topology with the fair queues of the store and of the builder.
    pub(super) async fn fair_topology(&self, mut topology: Topology) -> Result<Topology> {
        if let Some(store) = &self.store {
            match store.hash_all(ControlHash::Fair).await {
                Ok(entries) => {
                    for (queue, value) in entries {
                        match parse_shards(&queue, &value) {
                            Ok(shards) => {
                                topology = topology.with_fair_queue(&queue, u64::from(shards))?;
                            }
                            Err(e) => warn!(error = %e, "ignoring a fair queue setting"),
                        }
                    }
                }
                // Tasks then go to the plain queues, which workers of fair
                // queues consume too: nothing is lost, only less fair.
                Err(e) => warn!(error = %e, "cannot read the fair queues from the store"),
            }
        }
        for (queue, shards) in &self.fair {
            topology = topology.with_fair_queue(queue, *shards)?;
        }
        Ok(topology)
    }
}

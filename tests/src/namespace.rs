//! A namespace of its own per test, deleted with its queues and keys.

use std::time::Duration;

use celeriac_schema::topology::Declaration;
use celeriac_schema::Topology;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

use crate::broker::BROKER;
use crate::store::{redis_client_for, REDIS};

/// A namespace of its own for one test, `t-{name}-{random}`, whose queues
/// and exchanges are deleted when it is dropped, whether the test passed or
/// not: a long-lived broker that keeps every test's quorum queues runs out
/// of file handles.
///
/// Create it before the test's workers, so that they are stopped first and
/// cannot declare the topology again. It reads as the namespace string
/// (`&ns` where a `&str` is expected, `String::from(&ns)`, `{ns}`).
#[derive(Debug)]
pub struct TestNamespace {
    topology: Topology,
    queues: Vec<String>,
    raw_queues: Vec<String>,
}

/// A fresh [`TestNamespace`] whose logical queue is `default`.
pub fn namespace(test: &str) -> TestNamespace {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("t-{test}-{}", &id[id.len() - 10..]);
    TestNamespace {
        topology: Topology::new(name)
            .unwrap_or_else(|e| panic!("test namespace for {test:?}: {e}")),
        queues: vec![celeriac_schema::topology::DEFAULT_QUEUE.to_owned()],
        raw_queues: Vec::new(),
    }
}

impl TestNamespace {
    /// Also deletes logical queue `queue` (and its dead-letter queue) at the
    /// end.
    pub fn with_queue(mut self, queue: &str) -> Self {
        self.queues.push(queue.to_owned());
        self
    }

    /// Also deletes the broker queue named `queue` at the end (a queue the
    /// test declared itself).
    pub fn with_raw_queue(mut self, queue: &str) -> Self {
        self.raw_queues.push(queue.to_owned());
        self
    }

    /// The namespace.
    pub fn name(&self) -> &str {
        self.topology.namespace()
    }

    /// Its topology (names of queues and exchanges).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}

impl std::ops::Deref for TestNamespace {
    type Target = str;

    fn deref(&self) -> &str {
        self.name()
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&TestNamespace> for String {
    fn from(ns: &TestNamespace) -> String {
        ns.name().to_owned()
    }
}

impl From<TestNamespace> for String {
    fn from(ns: TestNamespace) -> String {
        ns.name().to_owned()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let topology = self.topology.clone();
        let queues = std::mem::take(&mut self.queues);
        let raw_queues = std::mem::take(&mut self.raw_queues);
        // A thread and runtime of its own: the test's runtime may be
        // unwinding or blocked in this drop.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let keys = delete_keys(topology.namespace());
                if tokio::time::timeout(Duration::from_secs(20), keys)
                    .await
                    .is_err()
                {
                    eprintln!(
                        "could not delete the Redis keys of {}",
                        topology.namespace()
                    );
                }
                let cleanup = delete_topology(&topology, &queues, &raw_queues);
                if tokio::time::timeout(Duration::from_secs(20), cleanup)
                    .await
                    .is_err()
                {
                    eprintln!("could not delete the queues of {}", topology.namespace());
                }
            });
        })
        .join();
    }
}

/// Deletes the namespace's Redis keys, if this process used Redis.
async fn delete_keys(namespace: &str) {
    if let Some(redis) = REDIS.get() {
        delete_redis_keys(&redis.url, namespace).await;
    }
}

/// Deletes every key of `namespace` (`{namespace}:*`) from the Redis at
/// `url`, best effort (tests and benchmarks clean up with it).
pub async fn delete_redis_keys(url: &str, namespace: &str) {
    let Ok(client) = redis_client_for(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let pattern = format!("{namespace}:*");
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): ::redis::RedisResult<(u64, Vec<String>)> = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(5000)
            .query_async(&mut conn)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            let _: ::redis::RedisResult<()> = ::redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

async fn delete_topology(topology: &Topology, queues: &[String], raw_queues: &[String]) {
    let Some(broker) = BROKER.get() else { return };
    let Ok(conn) = Connection::connect(&broker.url, ConnectionProperties::default()).await else {
        return;
    };
    let Ok(channel) = conn.create_channel().await else {
        return;
    };
    let mut declarations = topology.shared_declarations();
    for queue in queues {
        if let Ok(more) = topology.queue_declarations(queue) {
            declarations.extend(more);
        }
        // The tolerance class queues workers declare with each queue.
        if let Ok(more) = topology.tolerance_declarations(queue) {
            declarations.extend(more);
        }
    }
    declarations.extend(raw_queues.iter().map(|name| Declaration::Queue {
        name: name.clone(),
        arguments: Vec::new(),
    }));
    for declaration in declarations {
        let result = match declaration {
            Declaration::Queue { name, .. } => channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .map(drop),
            Declaration::Exchange { name, .. } => {
                channel
                    .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            eprintln!("cleaning up {}: {e}", topology.namespace());
            return;
        }
    }
    let _ = conn.close(200, "test namespace deleted".into()).await;
}

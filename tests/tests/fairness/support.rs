//! Shared helpers of the fairness tests.

use celeriac_producer::Producer;
use celeriac_schema::fair::{shard_name, shard_of};
use celeriac_schema::Task;
use celeriac_tests::{broker, TestNamespace};

/// `test.fair.work`: sleeps the given milliseconds.
pub struct Work;

impl Task for Work {
    const NAME: &'static str = "test.fair.work";
    type Input = u64;
    type Output = ();
}

/// A fresh namespace whose shard queues of `default` are deleted too.
pub fn fair_namespace(test: &str, shards: u16) -> TestNamespace {
    let mut ns = celeriac_tests::namespace(test);
    let topology = ns.topology().clone();
    for shard in 0..shards {
        ns = ns.with_raw_queue(&topology.work_queue(&shard_name("default", shard)));
    }
    ns
}

/// A producer on `ns` whose `default` queue has `shards` shards.
pub async fn fair_producer(ns: &TestNamespace, shards: u64) -> Producer {
    Producer::builder(&broker().await.url)
        .namespace(ns.name())
        .fair_queue("default", shards)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("producer: {e}"))
}

/// Two tenant names that hash into different shards of `shards`.
pub fn tenants_in_different_shards(shards: u16) -> (String, String) {
    let a = "tenant-a".to_owned();
    let b = (0..)
        .map(|i| format!("tenant-b{i}"))
        .find(|b| shard_of(b, shards) != shard_of(&a, shards))
        .unwrap();
    (a, b)
}

//! The Redis policies follow the same rules as the memory store's: the
//! same scenarios run on both.

use std::collections::BTreeMap;
use std::time::Duration;

use celeriac_schema::store::{Bucket, MemoryStore, PoolGrant, Store, StoreSettings};
use celeriac_tests::{namespace, redis_store};

async fn buckets_take_together_or_not_at_all(store: &dyn Store) {
    let policy = store.policy().unwrap();
    let task = Bucket::task("t", "100/s".parse().unwrap());
    let tenant = Bucket::tenant("a", "1/m".parse().unwrap());
    let grant = policy
        .take_tokens(std::slice::from_ref(&task), 50)
        .await
        .unwrap();
    assert_eq!(grant.granted, 10, "a burst of 100/s is 10 tokens");
    let both = [task.clone(), tenant.clone()];
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(policy.take_tokens(&both, 1).await.unwrap().granted, 1);
    let refused = policy.take_tokens(&both, 1).await.unwrap();
    assert_eq!(refused.granted, 0, "the tenant's bucket is empty");
    assert!(refused.retry_after > Duration::from_secs(50), "{refused:?}");
    let alone = policy.take_tokens(&[task], 1).await.unwrap();
    assert_eq!(
        alone.granted, 1,
        "the refusal did not charge the task's bucket"
    );
}

async fn pools_all_or_nothing_with_expiring_leases(store: &dyn Store) {
    let policy = store.policy().unwrap();
    policy.set_pool("gpu", Some(2), false).await.unwrap();
    policy.set_pool("db", Some(1), false).await.unwrap();
    assert!(
        !policy.set_pool("gpu", Some(9), true).await.unwrap(),
        "kept"
    );
    let both = BTreeMap::from([("gpu".to_owned(), 1), ("db".to_owned(), 1)]);
    let gpu2 = BTreeMap::from([("gpu".to_owned(), 2)]);
    let short = Duration::from_millis(300);
    assert_eq!(
        policy.acquire_pools("a", &both, short).await.unwrap(),
        PoolGrant::Granted
    );
    assert!(matches!(
        policy.acquire_pools("b", &gpu2, short).await.unwrap(),
        PoolGrant::Full { ref pool, .. } if pool == "gpu"
    ));
    assert!(matches!(
        policy.acquire_pools("c", &both, short).await.unwrap(),
        PoolGrant::Full { ref pool, .. } if pool == "db"
    ));
    let in_use: u32 = policy.pools().await.unwrap().iter().map(|p| p.in_use).sum();
    assert_eq!(in_use, 2, "the refused requests took nothing");
    assert!(policy.renew_pools("a", &both, short).await.unwrap());
    tokio::time::sleep(short * 2).await;
    assert!(
        !policy.renew_pools("a", &both, short).await.unwrap(),
        "expired"
    );
    assert_eq!(
        policy.acquire_pools("b", &gpu2, short).await.unwrap(),
        PoolGrant::Granted
    );
    policy.release_pools("b", &gpu2).await.unwrap();
    let in_use: u32 = policy.pools().await.unwrap().iter().map(|p| p.in_use).sum();
    assert_eq!(in_use, 0);
    assert_eq!(
        policy
            .acquire_pools("d", &BTreeMap::from([("tpu".to_owned(), 1)]), short)
            .await
            .unwrap(),
        PoolGrant::Unknown {
            pool: "tpu".into(),
            capacity: None
        }
    );
    assert_eq!(
        policy
            .acquire_pools("d", &BTreeMap::from([("gpu".to_owned(), 3)]), short)
            .await
            .unwrap(),
        PoolGrant::Unknown {
            pool: "gpu".into(),
            capacity: Some(2)
        }
    );
    assert!(
        policy.set_pool("gpu", None, false).await.unwrap(),
        "removed"
    );
    let names: Vec<String> = policy
        .pools()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["db"]);
}

#[tokio::test]
async fn redis_and_memory_policies_agree() {
    let memory = MemoryStore::new(StoreSettings::default());
    buckets_take_together_or_not_at_all(&memory).await;
    pools_all_or_nothing_with_expiring_leases(&memory).await;
    let ns = namespace("limits-store");
    let redis = redis_store(&ns, StoreSettings::default()).await;
    buckets_take_together_or_not_at_all(&redis).await;
    pools_all_or_nothing_with_expiring_leases(&redis).await;
}

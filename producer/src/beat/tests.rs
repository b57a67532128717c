//! The beat's unit tests: tick keys and ids, missed ticks, and the memory
//! state's claims.

#![allow(clippy::unwrap_used)]

use celeriac_schema::workflow::Workflow;
use celeriac_schema::TaskId;

use super::entry::MIN_TICK_TTL;
use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn tick_keys_and_ids_are_deterministic() {
    let build = |id| Workflow { id, nodes: vec![] };
    let a = BeatEntry::new(
        "f",
        None,
        Schedule::interval_secs(1.0).unwrap(),
        Overlap::Skip,
        build,
    );
    let b = BeatEntry::new(
        "f",
        Some("t".into()),
        Schedule::interval_secs(1.0).unwrap(),
        Overlap::Skip,
        build,
    );
    assert_eq!(a.tick_key(5), "beat:f:*:5");
    assert_eq!(b.tick_key(5), "beat:f:t:5");
    assert_eq!(a.run_id(5), a.clone().run_id(5));
    assert_ne!(a.run_id(5), a.run_id(6));
    assert_ne!(a.run_id(5), b.run_id(5));
    assert_eq!(a.tick_ttl(), MIN_TICK_TTL);
}

#[test]
fn missed_ticks_are_counted() {
    let s = Schedule::interval_secs(10.0).unwrap();
    assert_eq!(missed_between(&s, 100, at(110)), 0);
    assert_eq!(missed_between(&s, 100, at(150)), 4);
    assert_eq!(missed_between(&s, i64::MIN, at(150)), 0);
    let c = Schedule::cron("* * * * *").unwrap();
    assert_eq!(missed_between(&c, 60, at(300)), 3);
}

#[tokio::test]
async fn memory_state_takes_each_tick_once_and_one_pending() {
    let state = MemoryBeatState::default();
    let (lease, ttl) = (Duration::from_secs(60), Duration::from_secs(3600));
    assert_eq!(
        state.claim_tick("e", 10, "a", lease, ttl).await.unwrap(),
        TickClaim::Claimed
    );
    assert_eq!(
        state.claim_tick("e", 10, "b", lease, ttl).await.unwrap(),
        TickClaim::Held { by: "a".into() }
    );
    state.release_tick("e", 10, "b").await.unwrap();
    assert!(!state
        .claim_tick("e", 10, "b", lease, ttl)
        .await
        .unwrap()
        .is_ours());
    state.release_tick("e", 10, "a").await.unwrap();
    assert!(state
        .claim_tick("e", 10, "b", lease, ttl)
        .await
        .unwrap()
        .is_ours());
    state.finish_tick("e", 10, "b", ttl).await.unwrap();
    assert_eq!(
        state.claim_tick("e", 10, "a", lease, ttl).await.unwrap(),
        TickClaim::Done
    );
    state.release_tick("e", 10, "b").await.unwrap();
    assert_eq!(
        state.claim_tick("e", 10, "a", lease, ttl).await.unwrap(),
        TickClaim::Done,
        "a handled tick is never given back"
    );
    assert!(state
        .claim_tick("e", 9, "b", lease, ttl)
        .await
        .unwrap()
        .is_ours());
    assert_eq!(state.entry("e").await.unwrap().last_tick, Some(10));
    state.set_pending("e", 11).await.unwrap();
    state.set_pending("e", 12).await.unwrap();
    assert!(!state.take_pending("e", 11, "a", lease).await.unwrap());
    assert!(state.take_pending("e", 12, "a", lease).await.unwrap());
    assert!(
        !state.take_pending("e", 12, "b", lease).await.unwrap(),
        "held by a"
    );
    assert!(state.take_pending("e", 12, "a", lease).await.unwrap());
    state.clear_pending("e", 11).await.unwrap();
    assert_eq!(state.entry("e").await.unwrap().pending, Some(12));
    state.clear_pending("e", 12).await.unwrap();
    assert!(!state.take_pending("e", 12, "a", lease).await.unwrap());
    let id = TaskId::new();
    state.set_last_run("e", 12, id).await.unwrap();
    state.set_last_run("e", 11, TaskId::new()).await.unwrap();
    assert_eq!(state.entry("e").await.unwrap().last_run, Some((12, id)));
}

#[tokio::test]
async fn memory_state_hands_an_unhandled_tick_over_once_its_lease_ends() {
    let state = MemoryBeatState::default();
    let ttl = Duration::from_secs(3600);
    let short = Duration::from_millis(30);
    assert!(state
        .claim_tick("e", 10, "dead", short, ttl)
        .await
        .unwrap()
        .is_ours());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        state
            .claim_tick("e", 10, "b", Duration::from_secs(60), ttl)
            .await
            .unwrap(),
        TickClaim::TakenOver {
            from: "dead".into()
        }
    );
    assert_eq!(
        state
            .claim_tick("e", 10, "c", Duration::from_secs(60), ttl)
            .await
            .unwrap(),
        TickClaim::Held { by: "b".into() }
    );
    state.set_pending("e", 20).await.unwrap();
    assert!(state.take_pending("e", 20, "dead", short).await.unwrap());
    assert!(!state.take_pending("e", 20, "b", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(state.take_pending("e", 20, "b", short).await.unwrap());
}

//! The revocations a worker holds: loaded from the store at start and
//! re-read on a period, fed live by `revoke` broadcasts; lapsed ones are
//! dropped. Without a store they come from broadcasts alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use celeriac_schema::{now_ms, Envelope};

/// Revoked task ids, workflow ids and idempotency keys, with their expiry.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    /// Whether any is held: the common path reads this flag alone.
    any: AtomicBool,
    held: RwLock<HashMap<String, u64>>,
}

impl Revocations {
    /// The revoked id or key that matches the task, if any: its id, its
    /// workflow id or its idempotency key.
    pub(crate) fn matching(&self, env: &Envelope) -> Option<String> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let now = now_ms();
        let held = self.held.read().unwrap_or_else(PoisonError::into_inner);
        let live = |id: &str| held.get(id).is_some_and(|expiry| *expiry > now);
        let id = env.id.to_string();
        if live(&id) {
            return Some(id);
        }
        if let Some(workflow) = &env.workflow {
            let workflow = workflow.workflow_id.to_string();
            if live(&workflow) {
                return Some(workflow);
            }
        }
        env.idempotency_key.as_ref().filter(|k| live(k)).cloned()
    }

    /// Adds revocations (a broadcast, or the store's list).
    pub(crate) fn add<'a>(&self, revoked: impl IntoIterator<Item = (&'a str, u64)>) {
        let now = now_ms();
        let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, expiry| *expiry > now);
        for (id, expiry) in revoked {
            if expiry > now {
                let at = held.entry(id.to_owned()).or_insert(0);
                *at = (*at).max(expiry);
            }
        }
        self.any.store(!held.is_empty(), Ordering::Relaxed);
    }

    /// Those in force, sorted.
    pub(crate) fn list(&self) -> Vec<(String, u64)> {
        let now = now_ms();
        let held = self.held.read().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<(String, u64)> = held
            .iter()
            .filter(|(_, expiry)| **expiry > now)
            .map(|(id, expiry)| (id.clone(), *expiry))
            .collect();
        list.sort();
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_matches_by_id_workflow_or_key_until_expiry() {
        let revoked = Revocations::default();
        let mut env = Envelope::new("t", rmpv::Value::Nil);
        assert_eq!(revoked.matching(&env), None);
        env.idempotency_key = Some("order-7".into());
        revoked.add([("order-7", now_ms() + 60_000), ("old", now_ms() - 1)]);
        assert_eq!(revoked.matching(&env).as_deref(), Some("order-7"));
        assert_eq!(revoked.list().len(), 1, "the lapsed one is dropped");
        let other = Envelope::new("t", rmpv::Value::Nil);
        assert_eq!(revoked.matching(&other), None);
        revoked.add([(other.id.to_string().as_str(), now_ms() + 60_000)]);
        assert!(revoked.matching(&other).is_some());
    }
}

//! What the control plane keeps in a store: revocations and the control
//! hashes (task limits, the worker list), and their in-memory form.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A hash of the namespace the control plane keeps in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlHash {
    /// Per-task rate and time limits set at run time (`{ns}:limits`):
    /// field `rate:{task}` holds a rate such as `10/s`, field
    /// `time:{task}` holds `{soft ms} {hard ms}` (`-` for none).
    Limits,
    /// The workers of the namespace (`{ns}:workers`): field = worker id,
    /// value = its MessagePack record with its last heartbeat.
    Workers,
    /// The fair queues of the namespace (`{ns}:fair`): field = logical
    /// queue, value = its number of shards in ASCII decimal (`8`).
    Fair,
}

impl ControlHash {
    /// The key suffix after `{ns}:`.
    pub fn suffix(self) -> &'static str {
        match self {
            ControlHash::Limits => "limits",
            ControlHash::Workers => "workers",
            ControlHash::Fair => "fair",
        }
    }
}

/// Revocations and control hashes in process memory.
#[derive(Debug, Default)]
pub(super) struct ControlState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// id or key → expiry (Unix ms).
    revoked: HashMap<String, u64>,
    hashes: HashMap<ControlHash, BTreeMap<String, Vec<u8>>>,
}

impl ControlState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first of `ids` revoked now.
    pub(super) fn revoked_any(&self, ids: &[&str]) -> Option<String> {
        let now = crate::now_ms();
        let inner = self.lock();
        ids.iter()
            .find(|id| inner.revoked.get(**id).is_some_and(|expiry| *expiry > now))
            .map(|id| (*id).to_owned())
    }

    pub(super) fn revoke(&self, ids: &[String], expires_at: u64) {
        let now = crate::now_ms();
        let mut inner = self.lock();
        inner.revoked.retain(|_, expiry| *expiry > now);
        for id in ids {
            let expiry = inner.revoked.entry(id.clone()).or_insert(0);
            *expiry = (*expiry).max(expires_at);
        }
    }

    pub(super) fn revocations(&self) -> Vec<(String, u64)> {
        let now = crate::now_ms();
        let inner = self.lock();
        let mut all: Vec<(String, u64)> = inner
            .revoked
            .iter()
            .filter(|(_, expiry)| **expiry > now)
            .map(|(id, expiry)| (id.clone(), *expiry))
            .collect();
        all.sort();
        all
    }

    pub(super) fn hash_all(&self, hash: ControlHash) -> Vec<(String, Vec<u8>)> {
        self.lock()
            .hashes
            .get(&hash)
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub(super) fn hash_put(&self, hash: ControlHash, field: &str, value: Option<&[u8]>) {
        let mut inner = self.lock();
        let map = inner.hashes.entry(hash).or_default();
        match value {
            Some(value) => {
                map.insert(field.to_owned(), value.to_vec());
            }
            None => {
                map.remove(field);
            }
        }
    }

    pub(super) fn hash_swap(&self, hash: ControlHash, field: &str, old: &[u8], new: &[u8]) -> bool {
        let mut inner = self.lock();
        let map = inner.hashes.entry(hash).or_default();
        match map.get_mut(field) {
            Some(value) if value.as_slice() == old => {
                *value = new.to_vec();
                true
            }
            _ => false,
        }
    }
}

//! The control plane's keys in Redis: revocations checked with the run
//! lease, and the control hashes.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:revoked` | sorted set | revoked task ids, workflow ids and idempotency keys, scored by their expiry (Unix ms) |
//! | `{ns}:limits` | hash | run-time task limits (see [`ControlHash::Limits`]) |
//! | `{ns}:workers` | hash | worker records (see [`ControlHash::Workers`]) |

use celeriac_schema::store::{Begin, ControlHash};
use celeriac_schema::Error as SchemaError;
use redis::Script;

use super::batch::Mode;
use super::connect::{command, Name};
use super::{unavailable, RedisStore, StoreResult};

/// KEYS: hash. ARGV: field, old, new. Swaps the field's value if it still
/// holds `old`; 1 when it did.
const SWAP: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"#;

impl RedisStore {
    /// The set of revocations, as a command argument.
    fn revoked_name(&self) -> Name<'_, &'static str> {
        Name::new(self.prefix(), "revoked", "")
    }

    fn hash_key(&self, hash: ControlHash) -> String {
        format!("{}{}", self.prefix(), hash.suffix())
    }

    /// The run lease and the revocation check in one write: the revoked
    /// set is read in the same trip as the lease is taken (ahead of the
    /// batch's transaction), so the common path costs no extra round
    /// trip. The check comes after the lease's `SET NX`: a revocation
    /// recorded before the lease was taken is always seen.
    pub(super) async fn admit_checked(
        &self,
        key: &str,
        token: &str,
        revocable: &[&str],
    ) -> StoreResult<Begin> {
        let bytes: usize = revocable.iter().map(|id| id.len() + 8).sum();
        let mut check = command(
            "ZMSCORE",
            2 + revocable.len(),
            self.prefix().len() + bytes + 16,
        );
        check.arg(self.revoked_name()).arg(revocable);
        let mut cmds = Vec::with_capacity(3);
        self.take_lease_cmds(key, token, &mut cmds);
        cmds.push(check);
        let replies = self.write("lease", Mode::Plain, cmds).await?;
        let (scores, lease) = replies.split_last().unzip();
        let scores: Vec<Option<f64>> = scores
            .map(redis::from_redis_value_ref)
            .transpose()
            .map_err(|e| SchemaError::StoreData {
                what: "revocations",
                message: e.to_string(),
            })?
            .unwrap_or_default();
        let now = celeriac_schema::now_ms() as f64;
        if let Some(id) = scores
            .iter()
            .zip(revocable)
            .find(|(score, _)| score.is_some_and(|expiry| expiry > now))
            .map(|(_, id)| (*id).to_owned())
        {
            return Ok(Begin::Revoked { id });
        }
        self.lease_taken(key, token, lease.unwrap_or_default())
            .await
    }

    pub(super) async fn revoke_ids(&self, ids: &[String], expires_at: u64) -> StoreResult<()> {
        let key = self.revoked_name();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(key)
            .arg("-inf")
            .arg(celeriac_schema::now_ms())
            .ignore();
        // GT: new ids are added, and a longer revocation already held is
        // kept.
        let add = pipe.cmd("ZADD").arg(key).arg("GT");
        for id in ids {
            add.arg(expires_at).arg(id);
        }
        pipe.ignore();
        self.run::<()>("revoke", &pipe).await
    }

    pub(super) async fn live_revocations(&self) -> StoreResult<Vec<(String, u64)>> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(self.revoked_name())
            .arg(format!("({}", celeriac_schema::now_ms()))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES");
        let (pairs,): (Vec<(String, f64)>,) = self.run("revocations", &pipe).await?;
        Ok(pairs
            .into_iter()
            .map(|(id, expiry)| (id, expiry as u64))
            .collect())
    }

    pub(super) async fn control_hash_all(
        &self,
        hash: ControlHash,
    ) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let mut pipe = redis::pipe();
        pipe.hgetall(self.hash_key(hash));
        let (all,): (Vec<(String, Vec<u8>)>,) = self.run("hash_all", &pipe).await?;
        Ok(all)
    }

    pub(super) async fn control_hash_put(
        &self,
        hash: ControlHash,
        field: &str,
        value: Option<&[u8]>,
    ) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        match value {
            Some(value) => pipe.hset(self.hash_key(hash), field, value).ignore(),
            None => pipe.hdel(self.hash_key(hash), field).ignore(),
        };
        self.run::<()>("hash_put", &pipe).await
    }

    pub(super) async fn control_hash_swap(
        &self,
        hash: ControlHash,
        field: &str,
        old: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        let mut conn = self.inner.conn.clone();
        let swapped: i64 = Script::new(SWAP)
            .key(self.hash_key(hash))
            .arg(field)
            .arg(old)
            .arg(new)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable("hash_swap", &self.inner.url))?;
        Ok(swapped == 1)
    }
}

//! The value of `--fair`: a fair queue and its shard count.

use std::str::FromStr;

/// `QUEUE=SHARDS`: consume `QUEUE` as a fair queue of `SHARDS` shards.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::cli::FairQueue;
///
/// let fair: FairQueue = "default=8".parse().unwrap();
/// assert_eq!((fair.queue.as_str(), fair.shards), ("default", 8));
/// assert!("default=0".parse::<FairQueue>().is_err());
/// assert!("default".parse::<FairQueue>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FairQueue {
    /// The logical queue.
    pub queue: String,
    /// Its number of shards.
    pub shards: u64,
}

impl FromStr for FairQueue {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let (queue, shards) = value
            .split_once('=')
            .ok_or_else(|| format!("{value:?}: expected QUEUE=SHARDS, e.g. default=8"))?;
        let shards: u64 = shards
            .trim()
            .parse()
            .map_err(|_| format!("{value:?}: the shard count is not a number"))?;
        let queue = queue.trim();
        celeriac_schema::topology::validate_name("queue", queue).map_err(|e| e.to_string())?;
        celeriac_schema::fair::validate_shards(queue, shards).map_err(|e| e.to_string())?;
        Ok(FairQueue {
            queue: queue.to_owned(),
            shards,
        })
    }
}

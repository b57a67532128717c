//! Tenant fairness on the wire: which shard of a fair queue a tenant's
//! tasks go to, and what a tenant name and a shard count may be.
//!
//! A fair logical queue `q` with `S` shards has, besides its plain work
//! queue, `S` shard queues `{ns}.q.{q}.f.{i}` for `i` in `0..S`, routed by
//! the key `{q}.f.{i}`. A task with a tenant goes to shard
//! [`shard_of`]`(tenant, S)`: FNV-1a 64 of the tenant's UTF-8 bytes, modulo
//! `S`. A task without a tenant goes to the plain queue. Every producer, in
//! any language, must route with this exact function (SPEC.md section 21).

use crate::error::{Error, Result};

/// Longest tenant name, in UTF-8 bytes.
pub const MAX_TENANT_BYTES: usize = 128;
/// Most shards a fair queue may have.
pub const MAX_SHARDS: u16 = 256;

/// FNV-1a 64 offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`.
///
/// # Examples
///
/// ```
/// use celeriac_schema::fair::fnv1a64;
///
/// assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard (`0..shards`) of a fair queue that `tenant`'s tasks go to.
/// `shards` of 0 is treated as 1 (callers check counts with
/// [`validate_shards`]).
///
/// # Examples
///
/// ```
/// use celeriac_schema::fair::shard_of;
///
/// assert_eq!(shard_of("acme", 8), shard_of("acme", 8));
/// assert!(shard_of("acme", 8) < 8);
/// assert_eq!(shard_of("acme", 1), 0);
/// ```
pub fn shard_of(tenant: &str, shards: u16) -> u16 {
    let hash = fnv1a64(tenant.as_bytes());
    // The remainder is below `shards`, so it fits.
    (hash % u64::from(shards.max(1))) as u16
}

/// Checks a tenant name: 1 to [`MAX_TENANT_BYTES`] bytes of UTF-8 without
/// control characters.
///
/// # Errors
///
/// [`Error::InvalidName`] (kind `tenant`) with the reason.
///
/// # Examples
///
/// ```
/// use celeriac_schema::fair::validate_tenant;
///
/// assert!(validate_tenant("acme").is_ok());
/// assert!(validate_tenant("Zürich GmbH").is_ok());
/// assert!(validate_tenant("").is_err());
/// assert!(validate_tenant(&"x".repeat(129)).is_err());
/// ```
pub fn validate_tenant(tenant: &str) -> Result<()> {
    let reason = if tenant.is_empty() {
        Some("must not be empty")
    } else if tenant.len() > MAX_TENANT_BYTES {
        Some("must be at most 128 bytes of UTF-8")
    } else if tenant.chars().any(char::is_control) {
        Some("must not hold control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            kind: "tenant",
            name: tenant.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks the shard count of fair queue `queue`: 1 to [`MAX_SHARDS`].
///
/// # Errors
///
/// [`Error::InvalidShards`] with the reason.
///
/// # Examples
///
/// ```
/// use celeriac_schema::fair::validate_shards;
///
/// assert_eq!(validate_shards("default", 8).unwrap(), 8);
/// assert!(validate_shards("default", 0).is_err());
/// assert!(validate_shards("default", 257).is_err());
/// ```
pub fn validate_shards(queue: &str, shards: u64) -> Result<u16> {
    let reason = if shards == 0 {
        "a fair queue needs at least 1 shard"
    } else if shards > u64::from(MAX_SHARDS) {
        "a fair queue has at most 256 shards"
    } else {
        return Ok(shards as u16);
    };
    Err(Error::InvalidShards {
        queue: queue.to_owned(),
        shards,
        reason,
    })
}

/// Reads a shard count as stored in the `{ns}:fair` hash (ASCII decimal).
///
/// # Errors
///
/// [`Error::InvalidShards`] for anything but a decimal count in range.
///
/// # Examples
///
/// ```
/// use celeriac_schema::fair::parse_shards;
///
/// assert_eq!(parse_shards("default", b"16").unwrap(), 16);
/// assert!(parse_shards("default", b"sixteen").is_err());
/// ```
pub fn parse_shards(queue: &str, value: &[u8]) -> Result<u16> {
    let count = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| Error::InvalidShards {
            queue: queue.to_owned(),
            shards: 0,
            reason: "the stored shard count is not a decimal number",
        })?;
    validate_shards(queue, count)
}

/// The routing name of shard `shard` of logical queue `queue`: `{queue}.f.{shard}`.
///
/// # Examples
///
/// ```
/// assert_eq!(celeriac_schema::fair::shard_name("default", 3), "default.f.3");
/// ```
pub fn shard_name(queue: &str, shard: u16) -> String {
    format!("{queue}.f.{shard}")
}

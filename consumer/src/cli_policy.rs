//! The worker's flags for rate limits and resource pools.

use celeriac_schema::control::Rate;
use clap::Args;

use crate::worker::WorkerBuilder;

/// `--rate-limit`, `--tenant-rate-limit` and `--pool`.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// A task's rate, `TASK=RATE` (`reports.build=100/s`, `5000/h`):
    /// cluster-wide with a store, per worker without one. A rate set with
    /// `celeriac control rate-limit` overrides it. Repeat the flag.
    #[arg(long = "rate-limit", value_name = "TASK=RATE", value_parser = parse_rate)]
    pub rate_limits: Vec<(String, Rate)>,

    /// A tenant's rate, `TENANT=RATE` (`acme=10/s`), for tasks sent with
    /// that tenant. Repeat the flag.
    #[arg(long = "tenant-rate-limit", value_name = "TENANT=RATE", value_parser = parse_rate)]
    pub tenant_rate_limits: Vec<(String, Rate)>,

    /// A resource pool's capacity, `NAME=UNITS` (`gpu=4`), set in the store
    /// only if the pool has none yet (`celeriac pool set` changes it).
    /// Without a store the worker keeps its own pools. Repeat the flag.
    #[arg(long = "pool", value_name = "NAME=UNITS", value_parser = parse_pool)]
    pub pools: Vec<(String, u32)>,
}

impl PolicyArgs {
    /// Hands the flags to the worker builder.
    pub fn apply(&self, mut builder: WorkerBuilder) -> WorkerBuilder {
        for (task, rate) in &self.rate_limits {
            builder = builder.rate_limit(task.clone(), *rate);
        }
        for (tenant, rate) in &self.tenant_rate_limits {
            builder = builder.tenant_rate_limit(tenant.clone(), *rate);
        }
        for (name, capacity) in &self.pools {
            builder = builder.pool(name.clone(), *capacity);
        }
        builder
    }
}

fn split(value: &str, what: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, rest)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), rest.trim().to_owned()))
        }
        _ => Err(format!("expected {what}, got {value:?}")),
    }
}

/// `NAME=RATE`.
pub(crate) fn parse_rate(value: &str) -> Result<(String, Rate), String> {
    let (name, rate) = split(value, "NAME=RATE (e.g. reports.build=100/s)")?;
    Ok((name, rate.parse()?))
}

/// `NAME=UNITS`, at least one unit: a pool's capacity, or the units a
/// task asks for (`celeriac send --pool`).
pub fn parse_pool_units(value: &str) -> Result<(String, u32), String> {
    parse_pool(value)
}

/// `NAME=UNITS`, at least one unit.
pub(crate) fn parse_pool(value: &str) -> Result<(String, u32), String> {
    let (name, units) = split(value, "NAME=UNITS (e.g. gpu=4)")?;
    match units.parse::<u32>() {
        Ok(n) if n > 0 => Ok((name, n)),
        _ => Err(format!(
            "invalid capacity {units:?} in {value:?}: a whole number of units, at least 1"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_bad_ones_say_why() {
        let (task, rate) = parse_rate("reports.build=100/s").expect("valid");
        assert_eq!((task.as_str(), rate.count), ("reports.build", 100));
        assert!(parse_rate("100/s")
            .expect_err("no name")
            .contains("NAME=RATE"));
        assert!(parse_rate("t=fast")
            .expect_err("bad rate")
            .contains("invalid rate"));
        assert_eq!(parse_pool("gpu=4"), Ok(("gpu".to_owned(), 4)));
        assert!(parse_pool("gpu=0")
            .expect_err("no units")
            .contains("at least 1"));
        assert!(parse_pool("=3").is_err());
    }
}

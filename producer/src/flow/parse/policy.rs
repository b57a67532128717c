//! The `tenant:` and `pools:` settings of a task (or of `defaults` and a
//! block, which their tasks inherit; a task's own `pools` replaces the
//! inherited map).

use std::collections::BTreeMap;

use saphyr::{Scalar, YamlData};

use super::{at, data, join, scalar_text, Fields, Reader, Result};

/// Units by pool name.
type Pools = BTreeMap<String, u32>;

impl Reader<'_> {
    /// `tenant: NAME` and `pools: {NAME: UNITS}`, where given.
    pub(super) fn policy_options(
        &self,
        f: &Fields<'_, '_>,
    ) -> Result<(Option<String>, Option<Pools>)> {
        let path = &f.path;
        let tenant = f
            .get("tenant")
            .map(|(v, _)| self.tenant(v, path))
            .transpose()?;
        let pools = match f.get("pools") {
            Some((v, _)) => {
                let pools_path = join(path, "pools");
                let YamlData::Mapping(map) = data(v) else {
                    return Err(self.wrong_type(
                        v,
                        &pools_path,
                        "a mapping of pool names to units",
                    ));
                };
                let mut pools = BTreeMap::new();
                for (k, units) in map {
                    let name = scalar_text(k).unwrap_or_default();
                    if name.is_empty() || name.chars().any(char::is_whitespace) {
                        return Err(self.invalid(
                            at(k),
                            pools_path,
                            format!("{name:?} is not a pool name"),
                        ));
                    }
                    let units_path = join(&pools_path, &name);
                    let n = match data(units) {
                        YamlData::Value(Scalar::Integer(n)) => {
                            u32::try_from(*n).ok().filter(|n| *n > 0)
                        }
                        _ => {
                            return Err(self.wrong_type(
                                units,
                                &units_path,
                                "a whole number of units",
                            ))
                        }
                    };
                    let Some(n) = n else {
                        return Err(self.invalid(
                            at(units),
                            units_path,
                            "a task holds at least 1 unit of a pool it names",
                        ));
                    };
                    pools.insert(name, n);
                }
                Some(pools)
            }
            None => None,
        };
        Ok((tenant, pools))
    }
}

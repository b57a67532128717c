//! Reading the `limits:` section (see [`crate::flow::FlowLimits`]).

use std::collections::BTreeMap;

use celeriac_schema::control::Rate;
use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{at, data, join, scalar_text, Reader, Result};
use crate::flow::FlowLimits;

const LIMIT_KEYS: &[&str] = &["pools", "rate", "tenant_rate"];

impl Reader<'_> {
    /// `limits: {pools: {NAME: CAPACITY}, rate: {TASK: RATE}, tenant_rate: {TENANT: RATE}}`.
    pub(super) fn limits(&self, node: &MarkedYaml<'_>) -> Result<FlowLimits> {
        let f = self.fields(node, "limits", LIMIT_KEYS, "a mapping")?;
        let mut limits = FlowLimits::default();
        if let Some((v, _)) = f.get("pools") {
            for (name, value, path) in
                self.entries(v, "limits.pools", "a mapping of pool names to capacities")?
            {
                let capacity = match data(value) {
                    YamlData::Value(Scalar::Integer(n)) => {
                        u32::try_from(*n).ok().filter(|n| *n > 0)
                    }
                    _ => return Err(self.wrong_type(value, &path, "a whole number of units")),
                };
                let Some(capacity) = capacity else {
                    return Err(self.invalid(at(value), path, "a pool holds at least 1 unit"));
                };
                limits.pools.insert(name, capacity);
            }
        }
        for (key, into) in [
            ("rate", &mut limits.rates),
            ("tenant_rate", &mut limits.tenant_rates),
        ] {
            let Some((v, _)) = f.get(key) else { continue };
            let section = join("limits", key);
            for (name, value, path) in self.entries(v, &section, "a mapping of names to rates")? {
                let text = scalar_text(value).unwrap_or_default();
                let rate = text.parse::<Rate>().map_err(|e| {
                    self.invalid(
                        at(value),
                        path.clone(),
                        format!("{text:?} is not a rate: {e}"),
                    )
                })?;
                into.insert(name, rate);
            }
        }
        Ok(limits)
    }

    /// The entries of a mapping whose keys are names (no spaces), with the
    /// path of each.
    fn entries<'b, 'a>(
        &self,
        node: &'b MarkedYaml<'a>,
        path: &str,
        expected: &'static str,
    ) -> Result<Vec<(String, &'b MarkedYaml<'a>, String)>> {
        let YamlData::Mapping(map) = data(node) else {
            return Err(self.wrong_type(node, path, expected));
        };
        let mut out = Vec::with_capacity(map.len());
        let mut seen = BTreeMap::new();
        for (k, v) in map {
            let name = scalar_text(k).unwrap_or_default();
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(self.invalid(at(k), path, format!("{name:?} is not a name")));
            }
            if seen.insert(name.clone(), ()).is_some() {
                return Err(self.invalid(at(k), path, format!("{name:?} is given twice")));
            }
            let entry_path = join(path, &name);
            out.push((name, v, entry_path));
        }
        Ok(out)
    }
}

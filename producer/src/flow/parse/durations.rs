//! Durations in a flow file: time limits and the delay tolerance.

use std::time::Duration;

use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{at, data, join, Fields, Reader, Result};

impl Reader<'_> {
    pub(super) fn seconds(&self, node: &MarkedYaml<'_>, path: &str) -> Result<Duration> {
        let secs = match data(node) {
            YamlData::Value(Scalar::Integer(n)) => *n as f64,
            YamlData::Value(Scalar::FloatingPoint(f)) => f.into_inner(),
            _ => return Err(self.wrong_type(node, path, "a number of seconds")),
        };
        if !(secs.is_finite() && secs > 0.0) {
            return Err(self.invalid(
                at(node),
                path,
                format!("{secs} is not a time limit: give a positive number of seconds"),
            ));
        }
        Duration::try_from_secs_f64(secs)
            .map_err(|e| self.invalid(at(node), path, format!("{secs} seconds: {e}")))
    }

    /// `tolerance:` in seconds (SPEC.md section 19): more than zero, at
    /// most the longest supported tolerance.
    pub(super) fn tolerance(&self, f: &Fields<'_, '_>) -> Result<Option<Duration>> {
        let Some((node, _)) = f.get("tolerance") else {
            return Ok(None);
        };
        let path = join(&f.path, "tolerance");
        let secs = match data(node) {
            YamlData::Value(Scalar::Integer(n)) => *n as f64,
            YamlData::Value(Scalar::FloatingPoint(f)) => f.into_inner(),
            _ => return Err(self.wrong_type(node, &path, "a number of seconds")),
        };
        if !secs.is_finite() || secs.is_sign_negative() {
            return Err(self.invalid(
                at(node),
                path,
                format!("{secs} is not a delay tolerance: give a positive number of seconds"),
            ));
        }
        let tolerance = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
        celeriac_schema::tolerance::validate_tolerance(tolerance)
            .map_err(|e| self.invalid(at(node), path, e.to_string()))?;
        Ok(Some(tolerance))
    }
}

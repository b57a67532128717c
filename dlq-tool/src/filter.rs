//! Which dead letters a command acts on.

use std::collections::HashSet;
use std::time::Duration;

use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};

/// A conjunction of conditions; an empty list means "any".
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Task names (exact).
    pub tasks: HashSet<String>,
    /// Error types (exact).
    pub error_types: HashSet<String>,
    /// Dead-letter reasons (exact, e.g. `retries-exhausted`, `delivery-limit`).
    pub reasons: HashSet<String>,
    /// Task ids.
    pub ids: HashSet<String>,
    /// Dead-lettered at or after this time, Unix ms.
    pub since: Option<u64>,
    /// Dead-lettered before this time, Unix ms.
    pub until: Option<u64>,
}

impl Filter {
    /// Whether the filter needs the task id or name, which may have to come
    /// from the body when the headers lack them.
    pub fn needs_body(&self) -> bool {
        !self.tasks.is_empty() || !self.ids.is_empty()
    }

    /// Whether `dl` passes. A dead letter without a failure time never
    /// passes a time condition.
    pub fn matches(&self, dl: &DeadLetter) -> bool {
        fn one_of(set: &HashSet<String>, value: Option<&str>) -> bool {
            set.is_empty() || value.is_some_and(|v| set.contains(v))
        }
        one_of(&self.tasks, dl.task.as_deref())
            && one_of(&self.error_types, dl.error_type.as_deref())
            && one_of(&self.reasons, dl.reason.as_deref())
            && one_of(&self.ids, dl.task_id.as_deref())
            && self
                .since
                .is_none_or(|since| dl.failed_at.is_some_and(|t| t >= since))
            && self
                .until
                .is_none_or(|until| dl.failed_at.is_some_and(|t| t < until))
    }
}

/// Parses a time filter: RFC 3339 (`2025-01-31T12:00:00Z`,
/// `2025-01-31T13:00:00+01:00`) or a duration before `now_ms` (`2h`,
/// `30m`, `7d`, `1h 30m`), into Unix milliseconds.
///
/// # Errors
///
/// [`Error::BadTime`] for anything else.
///
/// # Examples
///
/// ```
/// use celeriac_dlq::filter::parse_time;
///
/// assert_eq!(parse_time("1970-01-01T00:00:01Z", 0).unwrap(), 1000);
/// assert_eq!(parse_time("2h", 10_000_000).unwrap(), 10_000_000 - 7_200_000);
/// assert!(parse_time("yesterday", 0).is_err());
/// ```
pub fn parse_time(value: &str, now_ms: u64) -> Result<u64> {
    let bad = || Error::BadTime {
        value: value.to_owned(),
    };
    let trimmed = value.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(trimmed) {
        return u64::try_from(t.timestamp_millis()).map_err(|_| bad());
    }
    let ago: Duration = humantime::parse_duration(trimmed).map_err(|_| bad())?;
    let ago = u64::try_from(ago.as_millis()).map_err(|_| bad())?;
    Ok(now_ms.saturating_sub(ago))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;

    fn letter(task: &str, at: Option<u64>) -> DeadLetter {
        let mut dl = DeadLetter::new("q", "ns", BasicProperties::default(), Vec::new());
        dl.task = Some(task.into());
        dl.failed_at = at;
        dl.reason = Some("rejected".into());
        dl
    }

    #[test]
    fn conditions_combine() {
        let mut f = Filter::default();
        assert!(f.matches(&letter("a", None)));
        f.tasks.insert("a".into());
        assert!(f.matches(&letter("a", None)));
        assert!(!f.matches(&letter("b", None)));
        f.since = Some(100);
        assert!(!f.matches(&letter("a", None)));
        assert!(!f.matches(&letter("a", Some(99))));
        assert!(f.matches(&letter("a", Some(100))));
        f.until = Some(200);
        assert!(!f.matches(&letter("a", Some(200))));
        f.reasons.insert("malformed".into());
        assert!(!f.matches(&letter("a", Some(150))));
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2025-01-01T01:00:00+01:00", 0).ok(),
            parse_time("2025-01-01T00:00:00Z", 0).ok()
        );
        assert_eq!(parse_time("30m", 3_600_000).ok(), Some(1_800_000));
        assert_eq!(parse_time("7d", 0).ok(), Some(0));
        assert!(parse_time("", 0).is_err());
        assert!(parse_time("2025-13-01T00:00:00Z", 0).is_err());
    }
}

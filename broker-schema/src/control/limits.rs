//! Rates and run-time limits: the `100/m` rate syntax, and how a limit is
//! kept in the store's limits hash.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::Command;

/// A rate: at most `count` starts per `per`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_schema::control::Rate;
///
/// let rate: Rate = "100/m".parse()?;
/// assert_eq!((rate.count, rate.per), (100, Duration::from_secs(60)));
/// assert_eq!(rate.to_string(), "100/m");
/// assert!("0/s".parse::<Rate>().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Starts allowed per period.
    pub count: u32,
    /// The period: a second, a minute or an hour.
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (count, unit) = s.split_once('/').unwrap_or((s, "s"));
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate {s:?}: expected N/s, N/m or N/h"))?;
        if count == 0 {
            return Err(format!("invalid rate {s:?}: the count must be at least 1"));
        }
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => return Err(format!("invalid rate unit {other:?} in {s:?}: s, m or h")),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// The field and value a run-time limit is kept under in the store's
/// limits hash ([`crate::store::ControlHash::Limits`]); value `None` lifts
/// the limit (the field is deleted). `None` for other commands.
///
/// # Examples
///
/// ```
/// use celeriac_schema::control::{limit_command, limit_entry, Command};
///
/// let set = Command::TimeLimit { task: "t".into(), soft_ms: None, hard_ms: Some(500) };
/// let (field, value) = limit_entry(&set).unwrap();
/// assert_eq!((field.as_str(), value.as_deref()), ("time:t", Some("- 500")));
/// assert_eq!(limit_command(&field, value.as_deref().unwrap()), Some(set));
/// ```
pub fn limit_entry(command: &Command) -> Option<(String, Option<String>)> {
    match command {
        Command::RateLimit { task, rate } => Some((format!("rate:{task}"), rate.clone())),
        Command::TimeLimit {
            task,
            soft_ms,
            hard_ms,
        } => {
            let show = |ms: &Option<u64>| ms.map_or_else(|| "-".to_owned(), |ms| ms.to_string());
            let value = (soft_ms.is_some() || hard_ms.is_some())
                .then(|| format!("{} {}", show(soft_ms), show(hard_ms)));
            Some((format!("time:{task}"), value))
        }
        _ => None,
    }
}

/// The command a field of the limits hash stands for; `None` for a field
/// this build does not know or cannot read.
pub fn limit_command(field: &str, value: &str) -> Option<Command> {
    if let Some(task) = field.strip_prefix("rate:") {
        value.parse::<Rate>().ok()?;
        return Some(Command::RateLimit {
            task: task.to_owned(),
            rate: Some(value.to_owned()),
        });
    }
    let task = field.strip_prefix("time:")?;
    let (soft, hard) = value.split_once(' ')?;
    let ms = |s: &str| -> Option<Option<u64>> {
        match s {
            "-" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some(Command::TimeLimit {
        task: task.to_owned(),
        soft_ms: ms(soft)?,
        hard_ms: ms(hard)?,
    })
}

//! Run-time limits per task name: a rate (a token bucket per worker,
//! waited on before the run without holding a concurrency slot) and time
//! limits that override the task's own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use celeriac_schema::control::{Command, Rate};
use celeriac_schema::Envelope;
use serde::Serialize;
use tokio::time::Instant;

/// The limits of every task that has one.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    /// Whether any limit is set: the common path reads this flag alone.
    any: AtomicBool,
    tasks: RwLock<HashMap<String, TaskLimits>>,
}

#[derive(Debug, Clone, Default)]
struct TaskLimits {
    rate: Option<(Rate, Arc<Bucket>)>,
    soft_ms: Option<u64>,
    hard_ms: Option<u64>,
}

/// One task's limits as `inspect conf` shows them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LimitInfo {
    task: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    soft_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hard_ms: Option<u64>,
}

/// A token bucket holding one token: starts are spaced by `per / count`.
#[derive(Debug)]
struct Bucket {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Bucket {
    fn new(rate: Rate) -> Bucket {
        Bucket {
            interval: rate.per / rate.count,
            next: Mutex::new(None),
        }
    }

    /// Takes the token if it is there; otherwise how long until it is.
    fn take(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        match *next {
            Some(at) if at > now => Some(at - now),
            _ => {
                *next = Some(now + self.interval);
                None
            }
        }
    }
}

impl Limits {
    /// Applies a `rate-limit` or `time-limit` command; an error for a bad
    /// rate.
    pub(crate) fn apply(&self, command: &Command) -> Result<(), String> {
        let mut tasks = self.tasks.write().unwrap_or_else(PoisonError::into_inner);
        match command {
            Command::RateLimit { task, rate } => {
                let rate = rate.as_deref().map(str::parse::<Rate>).transpose()?;
                let entry = tasks.entry(task.clone()).or_default();
                match rate {
                    // The same rate keeps its bucket (a periodic re-read
                    // must not reset it).
                    Some(rate) if entry.rate.as_ref().is_some_and(|(r, _)| *r == rate) => {}
                    Some(rate) => entry.rate = Some((rate, Arc::new(Bucket::new(rate)))),
                    None => entry.rate = None,
                }
            }
            Command::TimeLimit {
                task,
                soft_ms,
                hard_ms,
            } => {
                let entry = tasks.entry(task.clone()).or_default();
                entry.soft_ms = *soft_ms;
                entry.hard_ms = *hard_ms;
            }
            other => return Err(format!("{} is not a limit", other.name())),
        }
        tasks.retain(|_, l| l.rate.is_some() || l.soft_ms.is_some() || l.hard_ms.is_some());
        self.any.store(!tasks.is_empty(), Ordering::Relaxed);
        Ok(())
    }

    /// Replaces every limit with those of the store's hash; a rate that
    /// did not change keeps its bucket.
    pub(crate) fn load(&self, commands: &[Command]) {
        let fresh = Limits::default();
        for command in commands {
            let _ = fresh.apply(command);
        }
        let mut fresh = fresh
            .tasks
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let mut tasks = self.tasks.write().unwrap_or_else(PoisonError::into_inner);
        for (task, limits) in fresh.iter_mut() {
            let old = tasks.get(task).and_then(|o| o.rate.as_ref());
            if let (Some((rate, _)), Some((old_rate, bucket))) = (&limits.rate, old) {
                if rate == old_rate {
                    limits.rate = Some((*rate, bucket.clone()));
                }
            }
        }
        *tasks = fresh;
        self.any.store(!tasks.is_empty(), Ordering::Relaxed);
    }

    /// Takes a start of the task's rate: `None` when it may start now,
    /// otherwise how long until it may ask again.
    pub(crate) fn rate_wait(&self, task: &str) -> Option<Duration> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let bucket = {
            let tasks = self.tasks.read().unwrap_or_else(PoisonError::into_inner);
            tasks.get(task)?.rate.as_ref()?.1.clone()
        };
        bucket.take()
    }

    /// Applies the task's time-limit override to its envelope.
    pub(crate) fn override_times(&self, env: &mut Envelope) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        let tasks = self.tasks.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(limits) = tasks.get(&env.task) {
            if limits.soft_ms.is_some() {
                env.soft_time_limit_ms = limits.soft_ms;
            }
            if limits.hard_ms.is_some() {
                env.hard_time_limit_ms = limits.hard_ms;
            }
        }
    }

    /// Every limit, by task name.
    pub(crate) fn list(&self) -> Vec<LimitInfo> {
        let tasks = self.tasks.read().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<LimitInfo> = tasks
            .iter()
            .map(|(task, l)| LimitInfo {
                task: task.clone(),
                rate: l.rate.as_ref().map(|(r, _)| r.to_string()),
                soft_ms: l.soft_ms,
                hard_ms: l.hard_ms,
            })
            .collect();
        list.sort_by(|a, b| a.task.cmp(&b.task));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(task: &str, rate: Option<&str>) -> Command {
        Command::RateLimit {
            task: task.into(),
            rate: rate.map(Into::into),
        }
    }

    #[tokio::test]
    async fn a_rate_spaces_starts_and_can_be_lifted() {
        let limits = Limits::default();
        assert_eq!(limits.rate_wait("t"), None);
        limits.apply(&rate("t", Some("2/s"))).expect("valid");
        assert_eq!(limits.rate_wait("t"), None, "the first start is free");
        let wait = limits.rate_wait("t").expect("the second waits");
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert_eq!(limits.rate_wait("other"), None);
        limits.apply(&rate("t", None)).expect("lifted");
        assert_eq!(limits.rate_wait("t"), None);
        assert!(limits.list().is_empty());
        assert!(limits.apply(&rate("t", Some("fast"))).is_err());
    }

    #[test]
    fn loading_replaces_and_time_limits_override() {
        let limits = Limits::default();
        limits.apply(&rate("gone", Some("1/s"))).expect("valid");
        limits.load(&[Command::TimeLimit {
            task: "t".into(),
            soft_ms: Some(10),
            hard_ms: Some(20),
        }]);
        let tasks: Vec<String> = limits.list().into_iter().map(|l| l.task).collect();
        assert_eq!(tasks, ["t"]);
        let mut env = Envelope::new("t", rmpv::Value::Nil);
        limits.override_times(&mut env);
        assert_eq!(
            (env.soft_time_limit_ms, env.hard_time_limit_ms),
            (Some(10), Some(20))
        );
        limits.load(&[]);
        assert!(limits.list().is_empty());
    }
}

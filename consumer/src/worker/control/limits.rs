//! Run-time limits per task name: a rate (a token bucket, in the store
//! for the whole cluster when it keeps policies, else per worker; see
//! `job::throttle`), per tenant a rate, and time limits that override the
//! task's own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use celeriac_schema::control::{Command, Rate};
use celeriac_schema::Envelope;
use serde::Serialize;

/// The limits of every task that has one.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    /// Whether any limit is set: the common path reads this flag alone.
    any: AtomicBool,
    tasks: RwLock<HashMap<String, TaskLimits>>,
    /// Rates per tenant.
    tenants: RwLock<HashMap<String, Rate>>,
    /// The limits set when the worker was built (flags): the store's
    /// override them, and they come back when the store's are lifted.
    base: RwLock<Base>,
}

#[derive(Debug, Clone, Default)]
struct TaskLimits {
    rate: Option<Rate>,
    soft_ms: Option<u64>,
    hard_ms: Option<u64>,
}

/// The task commands and tenant rates a worker was built with.
type Base = (Vec<Command>, Vec<(String, Rate)>);

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

impl Limits {
    /// Applies a `rate-limit` or `time-limit` command; an error for a bad
    /// rate.
    pub(crate) fn apply(&self, command: &Command) -> Result<(), String> {
        let mut tasks = self.tasks.write().unwrap_or_else(PoisonError::into_inner);
        match command {
            Command::RateLimit { task, rate } => {
                let rate = rate.as_deref().map(str::parse::<Rate>).transpose()?;
                tasks.entry(task.clone()).or_default().rate = rate;
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
        self.refresh_any(&tasks);
        Ok(())
    }

    fn refresh_any(&self, tasks: &HashMap<String, TaskLimits>) {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        self.any
            .store(!tasks.is_empty() || !tenants.is_empty(), Ordering::Relaxed);
    }

    /// Sets the limits a worker starts with (its flags); the store's
    /// limits apply over them.
    pub(crate) fn set_base(&self, commands: Vec<Command>, tenants: Vec<(String, Rate)>) {
        for command in &commands {
            let _ = self.apply(command);
        }
        *self.base.write().unwrap_or_else(PoisonError::into_inner) = (commands, tenants);
        self.load_tenants(&[]);
    }

    /// Replaces the tenant rates with the base ones and `rates` over them.
    pub(crate) fn load_tenants(&self, rates: &[(String, Rate)]) {
        let base = self.base.read().unwrap_or_else(PoisonError::into_inner);
        let fresh: HashMap<String, Rate> = base.1.iter().chain(rates).cloned().collect();
        drop(base);
        *self.tenants.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        let tasks = self.tasks.read().unwrap_or_else(PoisonError::into_inner);
        self.refresh_any(&tasks);
    }

    /// The rate of a task name, if it has one.
    pub(crate) fn task_rate(&self, task: &str) -> Option<Rate> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let tasks = self.tasks.read().unwrap_or_else(PoisonError::into_inner);
        tasks.get(task)?.rate
    }

    /// The rate of a tenant, if it has one.
    pub(crate) fn tenant_rate(&self, tenant: &str) -> Option<Rate> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        tenants.get(tenant).copied()
    }

    /// Replaces every task limit with the base ones and those of the
    /// store's hash over them.
    pub(crate) fn load(&self, commands: &[Command]) {
        let fresh = Limits::default();
        let base = self.base.read().unwrap_or_else(PoisonError::into_inner);
        for command in base.0.iter().chain(commands) {
            let _ = fresh.apply(command);
        }
        drop(base);
        let fresh = fresh
            .tasks
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let mut tasks = self.tasks.write().unwrap_or_else(PoisonError::into_inner);
        *tasks = fresh;
        self.refresh_any(&tasks);
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

    /// Every tenant rate, by tenant: `{tenant: "10/s"}`.
    pub(crate) fn tenant_list(&self) -> std::collections::BTreeMap<String, String> {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        tenants
            .iter()
            .map(|(t, r)| (t.clone(), r.to_string()))
            .collect()
    }

    /// Every limit, by task name.
    pub(crate) fn list(&self) -> Vec<LimitInfo> {
        let tasks = self.tasks.read().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<LimitInfo> = tasks
            .iter()
            .map(|(task, l)| LimitInfo {
                task: task.clone(),
                rate: l.rate.as_ref().map(ToString::to_string),
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

    #[test]
    fn a_rate_is_set_lifted_and_checked() {
        let limits = Limits::default();
        assert_eq!(limits.task_rate("t"), None);
        limits.apply(&rate("t", Some("2/s"))).expect("valid");
        assert_eq!(limits.task_rate("t").map(|r| r.count), Some(2));
        assert_eq!(limits.task_rate("other"), None);
        limits.apply(&rate("t", None)).expect("lifted");
        assert_eq!(limits.task_rate("t"), None);
        assert!(limits.list().is_empty());
        assert!(limits.apply(&rate("t", Some("fast"))).is_err());
    }

    #[test]
    fn base_limits_stay_under_the_stores() {
        let limits = Limits::default();
        let ten: Rate = "10/s".parse().expect("valid");
        limits.set_base(vec![rate("t", Some("5/s"))], vec![("acme".to_owned(), ten)]);
        assert_eq!(limits.task_rate("t").map(|r| r.count), Some(5));
        assert_eq!(limits.tenant_rate("acme"), Some(ten));
        // The store's hash overrides a flag, and its absence restores it.
        limits.load(&[rate("t", Some("7/s"))]);
        limits.load_tenants(&[("acme".to_owned(), "1/s".parse().expect("valid"))]);
        assert_eq!(limits.task_rate("t").map(|r| r.count), Some(7));
        assert_eq!(limits.tenant_rate("acme").map(|r| r.count), Some(1));
        limits.load(&[]);
        limits.load_tenants(&[]);
        assert_eq!(limits.task_rate("t").map(|r| r.count), Some(5));
        assert_eq!(limits.tenant_rate("acme"), Some(ten));
        assert_eq!(limits.tenant_rate("other"), None);
        assert_eq!(
            limits.tenant_list(),
            std::collections::BTreeMap::from([("acme".to_owned(), "10/s".to_owned())])
        );
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

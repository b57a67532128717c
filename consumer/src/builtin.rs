//! Handlers of the built-in tasks of [`celeriac_schema::builtin`].

use std::time::Duration;

use celeriac_schema::builtin::{Echo, Fail, Noop, Panic, Ping, Sleep};

use crate::registry::{Registry, TaskContext};
use crate::task_error::TaskError;

/// Registers `celeriac.ping`, `noop`, `echo`, `sleep`, `fail` and `panic`.
///
/// # Examples
///
/// ```
/// let mut registry = celeriac_consumer::Registry::new();
/// celeriac_consumer::builtin::register(&mut registry);
/// assert!(registry.contains("celeriac.sleep"));
/// ```
pub fn register(registry: &mut Registry) {
    registry
        .register::<Ping, _, _>(|(), _ctx: TaskContext| async { Ok("pong".to_owned()) })
        .register::<Noop, _, _>(|_input, _ctx: TaskContext| async { Ok(()) })
        .register::<Echo, _, _>(|input, _ctx: TaskContext| async { Ok(input) })
        .register::<Sleep, _, _>(|input, _ctx: TaskContext| async move {
            tokio::time::sleep(Duration::from_millis(input.ms)).await;
            Ok(input.ms)
        })
        .register::<Fail, _, _>(|input, _ctx: TaskContext| async move {
            Err(if input.fatal {
                TaskError::fatal("TaskFailed", input.message)
            } else {
                TaskError::new("TaskFailed", input.message)
            })
        })
        .register::<Panic, _, _>(|message, _ctx: TaskContext| async move {
            if message.is_empty() {
                return Ok(());
            }
            panic!("{message}")
        });
}

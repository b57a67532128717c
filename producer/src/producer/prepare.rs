//! Building envelopes: tasks and workflow nodes ready to publish.

use celeriac_schema::topology::validate_name;
use celeriac_schema::workflow::{InputFrom, Node};
use celeriac_schema::{Envelope, Task, TaskId};

use super::{fair, PreparedTask, Producer};
use crate::error::{Error, Result};
use crate::send_options::{duration_ms, to_unix_ms, SendOptions};

impl Producer {
    /// Builds the envelope of a task without sending it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for contradictory options (both ETA and
    /// countdown, a priority above 9); [`Error::Schema`] when the input
    /// cannot be encoded or a name is invalid.
    pub fn prepare<T: Task>(
        &self,
        input: &T::Input,
        options: &SendOptions,
    ) -> Result<PreparedTask> {
        let value = celeriac_schema::to_value(input)?;
        self.prepare_value(T::NAME, value, options)
    }

    /// Like [`Producer::prepare`] for an untyped task name and input value.
    ///
    /// # Errors
    ///
    /// See [`Producer::prepare`].
    pub fn prepare_value(
        &self,
        task: &str,
        input: rmpv::Value,
        options: &SendOptions,
    ) -> Result<PreparedTask> {
        validate_name("task", task)?;
        if options.eta.is_some() && options.countdown.is_some() {
            return Err(Error::InvalidOptions(
                "set either eta or countdown, not both".into(),
            ));
        }
        if options.priority > 9 {
            return Err(Error::InvalidOptions(format!(
                "priority {} is above 9",
                options.priority
            )));
        }
        let queue = options
            .queue
            .clone()
            .unwrap_or_else(|| self.inner.default_queue.clone());
        validate_name("queue", &queue)?;
        let mut envelope = Envelope::new(task, input);
        let now = envelope.created_at;
        if let Some(id) = options.task_id {
            envelope.id = id;
        }
        envelope.eta = match (options.eta, options.countdown) {
            (Some(at), _) => Some(to_unix_ms(at)),
            (_, Some(delay)) => Some(now.saturating_add(duration_ms(delay))),
            _ => None,
        };
        envelope.expires = options
            .expires_in
            .map(|ttl| now.saturating_add(duration_ms(ttl)));
        if let Some(policy) = options.retry {
            envelope.retry = policy;
        }
        options.fill(&mut envelope)?;
        Ok(PreparedTask { queue, envelope })
    }

    /// The envelope of a workflow node, without its input when that comes
    /// from its dependencies.
    pub(super) fn prepare_node(&self, workflow: TaskId, node: &Node) -> Result<PreparedTask> {
        fair::check_node(node)?;
        let queue = node
            .queue
            .clone()
            .unwrap_or_else(|| self.inner.default_queue.clone());
        validate_name("queue", &queue)?;
        // A root's inputs from dependencies are empty.
        let input = match node.input_from {
            InputFrom::ByName => rmpv::Value::Map(Vec::new()),
            InputFrom::InOrder => rmpv::Value::Array(Vec::new()),
            InputFrom::Given | InputFrom::Result => node.input.clone(),
        };
        Ok(PreparedTask {
            queue,
            envelope: node.envelope(workflow, input),
        })
    }
}

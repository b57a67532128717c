//! Declaring the tolerance class queues of deferrable tasks (SPEC.md
//! section 19) once per producer.

use super::{declare, PreparedTask, Producer, Result};

impl Producer {
    /// Declares the queues `tasks` go to, with their tolerance classes
    /// for tasks that have a tolerance.
    pub(super) async fn ensure_queues(&self, tasks: &[PreparedTask]) -> Result<()> {
        let mut queues: Vec<(&str, bool)> = Vec::new();
        for task in tasks {
            let deferrable = task.envelope.tolerance_ms.is_some();
            match queues.iter_mut().find(|(q, _)| *q == task.queue) {
                Some((_, d)) => *d |= deferrable,
                None => queues.push((&task.queue, deferrable)),
            }
        }
        for (queue, deferrable) in queues {
            self.ensure_queue(queue).await?;
            if deferrable {
                self.ensure_tolerance_classes(queue).await?;
            }
        }
        Ok(())
    }

    /// Declares the tolerance class queues of `queue` once per producer
    /// (SPEC.md section 19).
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] for an invalid name, [`Error::Amqp`] when refused.
    pub async fn ensure_tolerance_classes(&self, queue: &str) -> Result<()> {
        let marker = format!("{queue} tolerance");
        if self.lock_declared().contains(&marker) {
            return Ok(());
        }
        let declarations = self.inner.topology.tolerance_declarations(queue)?;
        let channel = self.channel().await?;
        declare(&channel, &declarations).await?;
        self.release(channel);
        self.lock_declared().insert(marker);
        Ok(())
    }
}

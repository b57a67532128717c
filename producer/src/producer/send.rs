//! Sending tasks: admission, enqueue idempotency and the `queued` mark.

use celeriac_schema::store::{Claim, Update};
use celeriac_schema::{Task, TaskId, TaskState};
use tracing::{debug, warn};

use super::{update_for, PreparedTask, Producer};
use crate::error::{Error, Result};
use crate::handle::TaskHandle;
use crate::send_options::SendOptions;

impl Producer {
    /// Sends one typed task and returns its id once the broker confirmed it.
    ///
    /// # Errors
    ///
    /// [`Error::Unroutable`] when no queue takes it, [`Error::Unreachable`]
    /// or [`Error::Amqp`] when the broker is gone, plus the errors of
    /// [`Producer::prepare`].
    pub async fn send<T: Task>(
        &self,
        input: &T::Input,
        options: &SendOptions,
    ) -> Result<TaskHandle<T>> {
        let task = self.prepare::<T>(input, options)?;
        let ids = self
            .send_all_with(std::slice::from_ref(&task), options.admission)
            .await?;
        Ok(self.handle(ids[0]))
    }

    /// Sends one prepared task.
    ///
    /// # Errors
    ///
    /// See [`Producer::send`].
    pub async fn send_prepared(&self, task: &PreparedTask) -> Result<TaskId> {
        let ids = self.send_all(std::slice::from_ref(task)).await?;
        Ok(ids[0])
    }

    /// Sends many typed tasks with the same options, pipelining the
    /// confirms; returns their ids in order.
    ///
    /// # Errors
    ///
    /// See [`Producer::send_all`].
    pub async fn send_batch<T: Task>(
        &self,
        inputs: impl IntoIterator<Item = T::Input>,
        options: &SendOptions,
    ) -> Result<Vec<TaskId>> {
        if options.idempotency_key.is_some() || options.task_id.is_some() {
            return Err(Error::InvalidOptions(
                "a batch cannot share one idempotency key or task id".into(),
            ));
        }
        let tasks = inputs
            .into_iter()
            .map(|input| self.prepare::<T>(&input, options))
            .collect::<Result<Vec<_>>>()?;
        self.send_all_with(&tasks, options.admission).await
    }

    /// Sends prepared tasks on one channel, keeping up to 2048 confirms in
    /// flight; returns once every task is confirmed.
    ///
    /// When an error is returned, tasks before the failing one may have
    /// been delivered: sending the batch again is safe only with
    /// idempotency keys.
    ///
    /// # Errors
    ///
    /// The first error met; see [`Producer::send`].
    pub async fn send_all(&self, tasks: &[PreparedTask]) -> Result<Vec<TaskId>> {
        self.send_all_with(tasks, None).await
    }

    async fn send_all_with(
        &self,
        tasks: &[PreparedTask],
        mode: Option<crate::admission::AdmissionMode>,
    ) -> Result<Vec<TaskId>> {
        if let Some(admission) = &self.inner.admission {
            for task in tasks {
                admission.admit(&task.envelope, mode).await?;
            }
        }
        self.ensure_queues(tasks).await?;
        let Some(store) = self.inner.store.clone() else {
            return self.publish_all(tasks).await;
        };
        // Enqueue idempotency: tasks whose key is already bound are not
        // published; their answer is the first task's id.
        let keyed: Vec<(usize, (String, Update))> = tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let key = t.envelope.idempotency_key.clone()?;
                Some((i, (key, update_for(t, TaskState::Created))))
            })
            .collect();
        let claims: Vec<(String, Update)> = keyed.iter().map(|(_, c)| c.clone()).collect();
        let answers = self.claim(store.as_ref(), &claims).await?;
        let mut ids: Vec<TaskId> = tasks.iter().map(|t| t.envelope.id).collect();
        let mut skip = vec![false; tasks.len()];
        let mut rebound: Vec<PreparedTask> = Vec::new();
        let mut claimed: Vec<(String, TaskId)> = Vec::new();
        for ((i, (key, _)), answer) in keyed.iter().zip(answers) {
            match answer {
                Claim::Claimed => claimed.push((key.clone(), ids[*i])),
                Claim::Existing { task_id, republish } => {
                    debug!(%key, first = %task_id, republish, "idempotency key already used");
                    ids[*i] = task_id;
                    skip[*i] = true;
                    if republish {
                        let mut task = tasks[*i].clone();
                        task.envelope.id = task_id;
                        rebound.push(task);
                    }
                }
            }
        }
        // Usually no key was used before: the tasks go out as they are
        // (a rebound task is always a skipped one).
        let reduced: Vec<PreparedTask>;
        let to_publish: &[PreparedTask] = if skip.contains(&true) {
            reduced = tasks
                .iter()
                .zip(&skip)
                .filter(|(_, skip)| !**skip)
                .map(|(t, _)| t.clone())
                .chain(rebound)
                .collect();
            &reduced
        } else {
            tasks
        };
        if let Err(e) = self.publish_all(to_publish).await {
            // Unbind the keys so that sending again publishes; tasks that
            // did reach the broker keep their ids through the worker's
            // execution keys.
            if let Err(release) = store.unclaim(&claimed).await {
                warn!(error = %release, "could not release idempotency keys after a failed send");
            }
            return Err(e);
        }
        let queued: Vec<Update> = to_publish
            .iter()
            .map(|t| update_for(t, TaskState::Queued))
            .collect();
        if let Err(e) = store.record(&queued).await {
            // The broker holds the tasks: the send succeeded; only the
            // `queued` mark is missing until a worker starts them.
            warn!(error = %e, tasks = queued.len(), "could not record sent tasks as queued");
        }
        Ok(ids)
    }

    /// Claims enqueue keys, again while the store does not answer and the
    /// store budget lasts.
    async fn claim(
        &self,
        store: &dyn celeriac_schema::store::Store,
        claims: &[(String, Update)],
    ) -> Result<Vec<Claim>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut retry = crate::failover::Retry::new(self.inner.store_retry);
        loop {
            match store.claim(claims).await {
                Ok(answers) => return Ok(answers),
                Err(e) => {
                    let e = Error::from(e);
                    if !retry.after_store(&e, claims.len()).await {
                        return Err(e);
                    }
                }
            }
        }
    }
}

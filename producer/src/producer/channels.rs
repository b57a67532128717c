//! Connections, confirm-mode channels and queue declarations.

use std::collections::HashSet;

use lapin::options::ConfirmSelectOptions;
use lapin::Channel;

use super::Producer;
use crate::error::{Error, Result};
use crate::topology::declare;

impl Producer {
    /// Declares a logical queue (and its dead-letter queue) once per
    /// producer.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] for an invalid name, [`Error::Amqp`] when refused.
    pub async fn ensure_queue(&self, queue: &str) -> Result<()> {
        if self.lock_declared().contains(queue) {
            return Ok(());
        }
        let declarations = self.inner.topology.queue_declarations(queue)?;
        let channel = self.channel().await?;
        declare(&channel, &declarations).await?;
        self.release(channel);
        self.lock_declared().insert(queue.to_owned());
        Ok(())
    }

    pub(super) fn lock_declared(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .declared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Channel>> {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pooled connection, within the connect timeout.
    pub(crate) async fn connection(
        &self,
    ) -> Result<deadpool::managed::Object<crate::pool::Manager>> {
        let inner = &self.inner;
        tokio::time::timeout(inner.connect_timeout, inner.pool.get())
            .await
            .map_err(|_| Error::Unreachable {
                url: inner.url.clone(),
                after: inner.connect_timeout,
                reason: "timed out".into(),
            })?
            .map_err(|e| match e {
                // What the connection itself said: a TLS failure or a bad
                // URL names its cause, anything else the broker was not
                // reached.
                deadpool::managed::PoolError::Backend(Error::Amqp { source, .. }) => {
                    Error::Unreachable {
                        url: inner.url.clone(),
                        after: inner.connect_timeout,
                        reason: source.to_string(),
                    }
                }
                deadpool::managed::PoolError::Backend(e) => e,
                other => Error::Unreachable {
                    url: inner.url.clone(),
                    after: inner.connect_timeout,
                    reason: other.to_string(),
                },
            })
    }

    /// A confirm-mode channel: an idle one, or a new one on a pooled
    /// connection.
    pub(super) async fn channel(&self) -> Result<Channel> {
        loop {
            let Some(channel) = self.lock_idle().pop() else {
                break;
            };
            if channel.status().connected() {
                return Ok(channel);
            }
        }
        let connection = self.connection().await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(Error::amqp("opening a channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(Error::amqp("enabling publisher confirms"))?;
        Ok(channel)
    }

    pub(super) fn release(&self, channel: Channel) {
        if channel.status().connected() {
            self.lock_idle().push(channel);
        }
    }
}

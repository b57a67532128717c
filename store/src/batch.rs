//! Coalescing the writes of concurrent runs into shared transactions.
//!
//! A busy worker takes a run lease and writes an outcome for every task it
//! runs, a handful of commands each. Sent one request at a time, each write
//! pays the client's own cost (a trip through the multiplexed connection, a
//! response timer, a reply channel) and every outcome pays Redis a
//! `MULTI`/`EXEC` of its own. The [`Batcher`] instead collects the writes
//! that are waiting whenever a slot is free, sends them as one `MULTI`/`EXEC`
//! in one request, and hands each write the replies of its own commands.
//!
//! Each write's commands stay together and in order, and the whole batch is
//! applied at once, so a write is exactly as atomic as when it was sent
//! alone. A command that fails inside the transaction fails only the write
//! it belongs to; a batch that fails as a whole (Redis unreachable, out of
//! memory) fails every write in it, and each caller handles that as it
//! handled its own failure before.
//!
//! With nothing else waiting, a write goes out at once, alone: batching
//! adds no delay, it only shares the trips that concurrency makes anyway.

use super::sentinel::StoreConnection;
use redis::{Cmd, RedisError, RedisResult, Value};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Batches in flight at once: while they are, writes wait and gather.
const IN_FLIGHT: usize = 2;
/// Writes per batch at most, so one transaction never holds Redis long.
const MAX_WRITES: usize = 256;

/// One write: its commands, applied together, and where its replies go.
struct Write {
    cmds: Vec<Cmd>,
    reply: oneshot::Sender<RedisResult<Vec<Value>>>,
}

/// Sends the writes handed to it in shared transactions (see the module
/// documentation). Dropping it ends its task once the writes queued before
/// have been sent.
pub(super) struct Batcher {
    tx: mpsc::UnboundedSender<Write>,
}

impl Batcher {
    /// Starts the batcher's task on the current Tokio runtime.
    pub(super) fn start(conn: StoreConnection) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(gather(rx, conn));
        Batcher { tx }
    }

    /// Applies `cmds` atomically, in a batch with whatever other writes are
    /// waiting, and returns their replies in order.
    ///
    /// # Errors
    ///
    /// The error of the first of its commands that failed, or the batch's
    /// own error when the transaction as a whole did not run.
    pub(super) async fn write(&self, cmds: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        let (reply, answer) = oneshot::channel();
        let gone = || RedisError::from((redis::ErrorKind::Io, "the store's batch writer stopped"));
        self.tx.send(Write { cmds, reply }).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Takes the writes waiting whenever a batch slot is free and sends them.
async fn gather(mut rx: mpsc::UnboundedReceiver<Write>, conn: StoreConnection) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut writes = Vec::new();
        if rx.recv_many(&mut writes, MAX_WRITES).await == 0 {
            return;
        }
        let mut conn = conn.clone();
        tokio::spawn(async move {
            send(writes, &mut conn).await;
            drop(slot);
        });
    }
}

/// Sends one batch as one transaction and answers each write.
async fn send(writes: Vec<Write>, conn: &mut StoreConnection) {
    let commands: usize = writes.iter().map(|w| w.cmds.len()).sum();
    let mut pipe = redis::Pipeline::with_capacity(commands + 2);
    // Errors inside the transaction belong to single writes: they are
    // sorted out below, not turned into the whole batch's failure.
    pipe.ignore_errors();
    // Nothing is marked ignored (that costs a set insert per command):
    // the replies before EXEC's are all `QUEUED` and dropped below.
    pipe.cmd("MULTI");
    let mut replies = Vec::with_capacity(writes.len());
    for write in writes {
        replies.push((write.cmds.len(), write.reply));
        for cmd in write.cmds {
            pipe.add_command(cmd);
        }
    }
    pipe.cmd("EXEC");
    let answer: RedisResult<Vec<Value>> = pipe.query_async(conn).await;
    // EXEC's own reply: the commands' replies, or the transaction's error
    // (the commands' errors are looked at per write below).
    let exec = answer.map(|mut all| all.pop());
    let values = match exec {
        Ok(Some(Value::Array(values))) => values,
        Ok(Some(Value::ServerError(e))) => return fail_all(replies, &e.into()),
        Ok(other) => {
            let e = RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected reply to EXEC",
                format!("{other:?}"),
            ));
            return fail_all(replies, &e);
        }
        Err(e) => return fail_all(replies, &e),
    };
    let mut values = values.into_iter();
    for (count, reply) in replies {
        let own: Vec<Value> = values.by_ref().take(count).collect();
        let answer = if own.len() < count {
            Err(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "EXEC answered fewer commands than were sent",
            )))
        } else {
            own.into_iter().map(Value::extract_error).collect()
        };
        let _ = reply.send(answer);
    }
}

fn fail_all(replies: Vec<(usize, oneshot::Sender<RedisResult<Vec<Value>>>)>, e: &RedisError) {
    for (_, reply) in replies {
        let _ = reply.send(Err(e.clone()));
    }
}

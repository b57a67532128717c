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
//! A write whose commands need no atomicity (a run lease: a `SET NX` and
//! reads) can go ahead of the transaction instead, in the same trip: Redis
//! then runs it at once instead of queueing it, and answers each command
//! once instead of twice (`QUEUED`, then the reply).
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

/// How a write's commands are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Together, in the batch's transaction.
    Atomic,
    /// Ahead of the batch's transaction, in the same trip: for commands
    /// that need no atomicity with each other (another client may run
    /// commands between them), such as a lease and reads.
    Plain,
}

/// One write: its commands, how they are applied, and where its replies
/// go.
struct Write {
    cmds: Vec<Cmd>,
    mode: Mode,
    reply: oneshot::Sender<RedisResult<Vec<Value>>>,
}

type Reply = (usize, oneshot::Sender<RedisResult<Vec<Value>>>);

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

    /// Applies `cmds` in a batch with whatever other writes are waiting,
    /// in order and as `mode` says, and returns their replies in order.
    ///
    /// # Errors
    ///
    /// The error of the first of its commands that failed, or the batch's
    /// own error when the transaction as a whole did not run.
    pub(super) async fn write(&self, cmds: Vec<Cmd>, mode: Mode) -> RedisResult<Vec<Value>> {
        let (reply, answer) = oneshot::channel();
        let gone = || RedisError::from((redis::ErrorKind::Io, "the store's batch writer stopped"));
        self.tx
            .send(Write { cmds, mode, reply })
            .map_err(|_| gone())?;
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

/// Sends one batch in one trip, the plain writes first and then the
/// others as one transaction, and answers each write.
async fn send(writes: Vec<Write>, conn: &mut StoreConnection) {
    let commands: usize = writes.iter().map(|w| w.cmds.len()).sum();
    let mut pipe = redis::Pipeline::with_capacity(commands + 2);
    // Errors of commands belong to single writes: they are sorted out
    // below, not turned into the whole batch's failure.
    pipe.ignore_errors();
    let (plain, atomic): (Vec<Write>, Vec<Write>) =
        writes.into_iter().partition(|w| w.mode == Mode::Plain);
    let plain = queue(&mut pipe, plain);
    // Nothing is marked ignored (that costs a set insert per command):
    // the replies between MULTI and EXEC are all `QUEUED` and dropped below.
    let in_transaction = !atomic.is_empty();
    if in_transaction {
        pipe.cmd("MULTI");
    }
    let atomic = queue(&mut pipe, atomic);
    if in_transaction {
        pipe.cmd("EXEC");
    }
    let mut all = match pipe.query_async::<Vec<Value>>(conn).await {
        Ok(all) => all.into_iter(),
        Err(e) => {
            fail_all(plain, &e);
            return fail_all(atomic, &e);
        }
    };
    answer(plain, &mut all);
    if !in_transaction {
        return;
    }
    // EXEC's own reply, the last: the commands' replies, or the
    // transaction's error (the commands' errors are looked at per write).
    match all.next_back() {
        Some(Value::Array(values)) => answer(atomic, &mut values.into_iter()),
        Some(Value::ServerError(e)) => fail_all(atomic, &e.into()),
        other => {
            let e = RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected reply to EXEC",
                format!("{other:?}"),
            ));
            fail_all(atomic, &e);
        }
    }
}

/// Adds the writes' commands to `pipe`, in order.
fn queue(pipe: &mut redis::Pipeline, writes: Vec<Write>) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(writes.len());
    for write in writes {
        replies.push((write.cmds.len(), write.reply));
        for cmd in write.cmds {
            pipe.add_command(cmd);
        }
    }
    replies
}

/// Hands each write the next replies, as many as it sent commands.
fn answer(replies: Vec<Reply>, values: &mut impl Iterator<Item = Value>) {
    for (count, reply) in replies {
        let own: Vec<Value> = values.by_ref().take(count).collect();
        let answer = if own.len() < count {
            Err(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "Redis answered fewer commands than were sent",
            )))
        } else {
            own.into_iter().map(Value::extract_error).collect()
        };
        let _ = reply.send(answer);
    }
}

fn fail_all(replies: Vec<Reply>, e: &RedisError) {
    for (_, reply) in replies {
        let _ = reply.send(Err(e.clone()));
    }
}

//! Group commit: concurrent writers share Raft entries.
//!
//! openraft appends (and our log store fsyncs) once per client write, so one
//! command per entry caps throughput at the disk's fsync rate. The proposer
//! queues commands, and whenever no entry of its own is in flight it submits
//! everything queued as one [`Command::Batch`] entry (one flush in progress,
//! everyone else joins the next, as a database's group commit). Each caller
//! still gets its own answer.

use std::time::Duration;

use coditect_consensus::{Command, CommandResponse, MeshRaft, MAX_ENTRY_BYTES};
use coditect_memory::codec;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::env::Env;

/// Commands in one entry, at most.
const MAX_BATCH: usize = 4_096;
/// Encoded bytes of the commands in one entry, at most: the entry, its log
/// id and the batch framing stay within [`MAX_ENTRY_BYTES`].
const MAX_BATCH_BYTES: usize = MAX_ENTRY_BYTES - 4 * 1024;
/// Entries in flight, at most. One: a lone write goes at once, and under
/// load everything queued while an entry commits shares the next. With four
/// in flight, and commits as fast as the call channels make them, a
/// 2,000-task mission took 2.3 times the entries (407-459 instead of
/// 193-226 for 4,000 commands) and the mesh ran 15-20% fewer tasks a second
/// for the fsyncs, RPCs and applies of the extra entries.
const MAX_IN_FLIGHT: usize = 1;

type Reply = oneshot::Sender<Result<CommandResponse, WriteError>>;

/// Why a write did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Nothing was proposed (too large for an entry, or the proposer is
    /// gone): retrying cannot duplicate it.
    #[error("{0}")]
    Refused(String),
    /// It was handed to Raft and its outcome is unknown: it may commit.
    #[error("{0}")]
    Uncertain(String),
}

impl From<WriteError> for String {
    fn from(error: WriteError) -> String {
        error.to_string()
    }
}

/// A queued write: the command, its encoded size, and who waits for it.
type Queued = (Command, usize, Reply);

/// Submits commands to Raft, batching concurrent ones. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Proposer {
    /// Starts the batching task on `env`.
    pub fn start(env: &dyn Env, raft: MeshRaft) -> Proposer {
        let (queue, receiver) = mpsc::unbounded_channel();
        env.spawn("proposer", run(raft, receiver).boxed());
        Proposer { queue }
    }

    /// Commits `command` and returns its answer; fails if this node is not
    /// the leader or Raft stopped, or at once if the command is larger than
    /// one log entry may be (nothing is proposed then).
    pub async fn propose(&self, command: Command) -> Result<CommandResponse, WriteError> {
        let size = entry_size(&command).map_err(WriteError::Refused)?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((command, size, reply))
            .map_err(|_| WriteError::Refused("the proposer stopped".into()))?;
        answer
            .await
            .map_err(|_| WriteError::Uncertain("the proposer stopped".into()))?
    }
}

/// The encoded size of `command`, or why it cannot be one log entry.
pub fn entry_size(command: &Command) -> Result<usize, String> {
    let size = codec::encoded_len(command).map_err(|error| error.to_string())?;
    if size > MAX_BATCH_BYTES {
        return Err(format!(
            "refused: the write is {size} bytes, over the {MAX_BATCH_BYTES}-byte cap of one Raft entry"
        ));
    }
    Ok(size)
}

async fn submit(raft: MeshRaft, batch: Vec<(Command, Reply)>) {
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    let single = commands.len() == 1;
    let entry = if single {
        commands.into_iter().next().expect("one command")
    } else {
        Command::Batch(commands.into())
    };
    match raft.client_write(entry).await {
        Ok(response) => match (single, response.data) {
            (true, answer) => {
                for reply in replies {
                    let _ = reply.send(Ok(answer.clone()));
                }
            }
            (false, CommandResponse::Batch(answers)) if answers.len() == replies.len() => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            (false, other) => {
                for reply in replies {
                    let _ = reply.send(Err(WriteError::Uncertain(format!(
                        "unexpected answer to a batch: {other:?}"
                    ))));
                }
            }
        },
        Err(error) => {
            // openraft refuses on a follower before appending; anything else
            // may have reached the log.
            let refused = error.forward_to_leader().is_some();
            let message = error.to_string();
            for reply in replies {
                let _ = reply.send(Err(if refused {
                    WriteError::Refused(message.clone())
                } else {
                    WriteError::Uncertain(message.clone())
                }));
            }
        }
    }
}

/// Groups queued writes into entries: as many as are waiting, up to
/// [`MAX_BATCH`] commands and [`MAX_BATCH_BYTES`] bytes. `carry` is a write
/// that did not fit the last entry; it opens the next one.
fn next_batch(
    first: Queued,
    carry: &mut Option<Queued>,
    receiver: &mut mpsc::UnboundedReceiver<Queued>,
) -> Vec<(Command, Reply)> {
    let (command, mut bytes, reply) = first;
    let mut batch = vec![(command, reply)];
    while batch.len() < MAX_BATCH {
        let Ok(next) = receiver.try_recv() else { break };
        if bytes + next.1 > MAX_BATCH_BYTES {
            *carry = Some(next);
            break;
        }
        bytes += next.1;
        batch.push((next.0, next.2));
    }
    batch
}

async fn run(raft: MeshRaft, mut receiver: mpsc::UnboundedReceiver<Queued>) {
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    let mut carry: Option<Queued> = None;
    while open || carry.is_some() || !in_flight.is_empty() {
        if in_flight.len() < MAX_IN_FLIGHT {
            if let Some(first) = carry.take() {
                let batch = next_batch(first, &mut carry, &mut receiver);
                in_flight.push(submit(raft.clone(), batch));
                continue;
            }
        }
        tokio::select! {
            first = receiver.recv(), if open && carry.is_none() && in_flight.len() < MAX_IN_FLIGHT => match first {
                None => open = false,
                Some(first) => {
                    let batch = next_batch(first, &mut carry, &mut receiver);
                    in_flight.push(submit(raft.clone(), batch));
                }
            },
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
}

/// How long a write may wait for commit before its caller gives up.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn named(bytes: usize) -> Command {
        Command::SubmitMission {
            max_fix_rounds: None,
            name: "x".repeat(bytes),
            tasks: Vec::new(),
            at_ms: 0,
            assign: Vec::new(),
            staged: None,
            idempotency_key: None,
            origin: None,
        }
    }

    fn queue(commands: Vec<Command>) -> mpsc::UnboundedReceiver<Queued> {
        let (sender, receiver) = mpsc::unbounded_channel();
        for command in commands {
            let size = entry_size(&command).unwrap();
            sender.send((command, size, oneshot::channel().0)).unwrap();
        }
        receiver
    }

    #[test]
    fn a_command_larger_than_an_entry_is_refused_before_proposing() {
        let error = entry_size(&named(MAX_ENTRY_BYTES)).unwrap_err();
        assert!(error.contains("over the"), "{error}");
        assert!(entry_size(&named(1_000)).unwrap() > 1_000);
    }

    #[test]
    fn batches_stay_within_the_byte_cap_and_keep_order() {
        // Ten writes of 300 KiB: an entry takes three, the fourth is carried.
        let mut receiver = queue((0..10).map(|_| named(300 * 1024)).collect());
        let mut carry = None;
        let mut sizes = Vec::new();
        let mut total = 0;
        while let Some(first) = carry.take().or_else(|| receiver.try_recv().ok()) {
            let batch = next_batch(first, &mut carry, &mut receiver);
            let bytes: usize = batch.iter().map(|(c, _)| entry_size(c).unwrap()).sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
            total += batch.len();
            sizes.push(batch.len());
        }
        assert_eq!(total, 10);
        assert_eq!(sizes, vec![3, 3, 3, 1]);
    }

    #[test]
    fn small_writes_share_one_entry() {
        let mut receiver = queue((0..100).map(|_| Command::Noop).collect());
        let first = receiver.try_recv().unwrap();
        let mut carry = None;
        assert_eq!(next_batch(first, &mut carry, &mut receiver).len(), 100);
        assert!(carry.is_none());
    }
}

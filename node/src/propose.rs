//! Group commit: concurrent writers share Raft entries.
//!
//! openraft appends (and our log store fsyncs) once per client write, so one
//! command per entry caps throughput at the disk's fsync rate. The proposer
//! queues commands, and whenever a write slot is free it submits everything
//! queued as one [`Command::Batch`] entry, keeping a few entries in flight
//! so replication pipelines. Each caller still gets its own answer.

use std::time::Duration;

use coditect_consensus::{Command, CommandResponse, MeshRaft};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::env::Env;

/// Commands in one entry, at most.
const MAX_BATCH: usize = 4_096;
/// Entries in flight, at most.
const MAX_IN_FLIGHT: usize = 4;

type Reply = oneshot::Sender<Result<CommandResponse, String>>;

/// Submits commands to Raft, batching concurrent ones. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<(Command, Reply)>,
}

impl Proposer {
    /// Starts the batching task on `env`.
    pub fn start(env: &dyn Env, raft: MeshRaft) -> Proposer {
        let (queue, receiver) = mpsc::unbounded_channel();
        env.spawn("proposer", run(raft, receiver).boxed());
        Proposer { queue }
    }

    /// Commits `command` and returns its answer; fails if this node is not
    /// the leader or Raft stopped.
    pub async fn propose(&self, command: Command) -> Result<CommandResponse, String> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((command, reply))
            .map_err(|_| "the proposer stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the proposer stopped".to_string())?
    }
}

async fn submit(raft: MeshRaft, batch: Vec<(Command, Reply)>) {
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    let single = commands.len() == 1;
    let entry = if single {
        commands.into_iter().next().expect("one command")
    } else {
        Command::Batch(commands)
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
                    let _ = reply.send(Err(format!("unexpected answer to a batch: {other:?}")));
                }
            }
        },
        Err(error) => {
            let message = error.to_string();
            for reply in replies {
                let _ = reply.send(Err(message.clone()));
            }
        }
    }
}

async fn run(raft: MeshRaft, mut receiver: mpsc::UnboundedReceiver<(Command, Reply)>) {
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            first = receiver.recv(), if open && in_flight.len() < MAX_IN_FLIGHT => match first {
                None => open = false,
                Some(first) => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    in_flight.push(submit(raft.clone(), batch));
                }
            },
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
}

/// How long a write may wait for commit before its caller gives up.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

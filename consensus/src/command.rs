//! The Raft type configuration of the mesh and the commands its log
//! carries. Kept apart from `types.rs` (ids and records) so the plain
//! types and `mission.rs` do not import each other: this module uses both.

use serde::{Deserialize, Serialize};

use crate::mission::{TaskResult, TaskSubmission, ViolationRecord};
use crate::types::{Load, MeshNode, NodeId, NodeRecord};

openraft::declare_raft_types!(
    /// The Raft types of the mesh.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = MeshNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot::SnapshotData,
        AsyncRuntime = crate::runtime::MeshRuntime,
);

/// The Raft handle of the mesh.
pub type MeshRaft = openraft::Raft<TypeConfig>;

/// A change to the replicated state. Every variant is deterministic: the
/// leader puts its clock readings into the command, followers never read a clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Does nothing; used to measure commit throughput and to probe leadership.
    Noop,
    /// Adds a node to the registry, or refreshes its addresses, name and capabilities.
    RegisterNode(Box<NodeRecord>),
    /// Heartbeats the leader collected since its last batch.
    Heartbeats {
        /// Leader's clock when the batch was committed.
        at_ms: u64,
        /// Each node's reported load.
        nodes: Vec<(NodeId, Load)>,
    },
    /// A node drained and left on purpose.
    NodeLeft {
        /// The node.
        node_id: NodeId,
        /// Leader's clock.
        at_ms: u64,
    },
    /// Several commands in one log entry (group commit), applied in order.
    /// A batch may hold batches (the proposer groups callers' batches), one level deep.
    /// Shared: an entry is handed out of the log's memory once per follower
    /// and once to the apply, and a round's batch holds hundreds of commands
    /// (encoded as the list itself).
    Batch(std::sync::Arc<Vec<Command>>),
    /// A new mission; its id is the next in sequence (`m1`, `m2`, ...).
    SubmitMission {
        /// Human name.
        name: String,
        /// Its tasks, validated by the leader (ids unique, dependencies known, no cycle).
        tasks: Vec<TaskSubmission>,
        /// Leader's clock.
        at_ms: u64,
        /// The leader's placement of tasks that are ready at once, applied in
        /// the same entry (one Raft round less per mission); each is the
        /// same compare-and-set as [`Command::AssignTask`] at attempt 0.
        assign: Vec<(String, NodeId)>,
        /// A mission too large for one entry: the tasks staged under this id
        /// by [`Command::StageTasks`] come first, then `tasks`.
        staged: Option<String>,
        /// The client's `Idempotency-Key`: a key already used answers with
        /// the mission it created, and nothing else changes.
        idempotency_key: Option<String>,
        /// Fix rounds a failed test may start (`None`: the default).
        #[serde(default)]
        max_fix_rounds: Option<u32>,
        /// The member that received the submission and holds its blobs
        /// (its input files and modules): workers fetch them from it first,
        /// so they do not travel through the leader. `None`: the leader itself.
        #[serde(default)]
        origin: Option<NodeId>,
    },
    /// Part of a mission too large for one log entry, kept aside (invisible
    /// to placement) until the [`Command::SubmitMission`] naming `stage`.
    /// Stages never sealed expire after `STAGE_TTL_MS` (in `state.rs`).
    StageTasks {
        /// The stage, unique per submission (the leader picks it).
        stage: String,
        /// The next tasks, in order.
        tasks: Vec<TaskSubmission>,
        /// Leader's clock.
        at_ms: u64,
    },
    /// Ready -> assigned, if the task is still at `attempt` (compare-and-set).
    AssignTask {
        /// Mission id.
        mission: String,
        /// Task id.
        task: String,
        /// The new owner.
        node: NodeId,
        /// The attempt the leader read.
        attempt: u32,
        /// Leader's clock (retry backoffs are checked against it).
        at_ms: u64,
    },
    /// A queued task moves to an idle node (compare-and-set on owner and attempt).
    StealTask {
        /// Mission id.
        mission: String,
        /// Task id.
        task: String,
        /// Current owner.
        from: NodeId,
        /// New owner.
        to: NodeId,
        /// The attempt the thief read.
        attempt: u32,
    },
    /// The owner starts running its queued task.
    StartTask {
        /// Mission id.
        mission: String,
        /// Task id.
        task: String,
        /// The owner.
        node: NodeId,
        /// Its attempt (fencing token).
        attempt: u32,
    },
    /// The owner's result; refused unless owner and attempt are current.
    CompleteTask {
        /// Mission id.
        mission: String,
        /// Task id.
        task: String,
        /// The result.
        result: TaskResult,
        /// The task's own subtasks (a planner's fragment), see
        /// [`crate::mission::MissionRecord::complete_and_spawn`].
        #[serde(default)]
        spawn: Vec<TaskSubmission>,
    },
    /// A run ended in a violation; retry after a backoff or fail.
    FailTask {
        /// Mission id.
        mission: String,
        /// Task id.
        task: String,
        /// What happened (carries node and attempt, the fencing token).
        violation: ViolationRecord,
        /// `Some(time)`: ready again from then; `None`: failed.
        retry_not_before_ms: Option<u64>,
        /// When failing: why, for the task's `reason` (else the violation's detail).
        fail_reason: Option<String>,
        /// When failing: tasks that take its place (a fix round), see
        /// [`crate::mission::MissionRecord::fail_and_spawn`].
        #[serde(default)]
        spawn: Vec<TaskSubmission>,
    },
    /// Why ready tasks are not placed (placement's reasons), so every node
    /// can show them; applied only to tasks still waiting.
    NoteReasons {
        /// Mission id.
        mission: String,
        /// (task id, reason).
        reasons: Vec<(String, String)>,
    },
    /// A node lost its lease (or drained): its tasks are placed again.
    ReleaseNode {
        /// The node.
        node: NodeId,
        /// Why, for the tasks' history.
        reason: String,
        /// A running task that has now used this many runs fails.
        max_runs: u32,
    },
    /// Cancel a running mission.
    CancelMission {
        /// Mission id.
        mission: String,
    },
    /// Re-run a failed mission's failed and blocked tasks.
    RetryMission {
        /// Mission id.
        mission: String,
    },
    /// Drop the tasks of finished missions past the retention policy,
    /// keeping a summary of each (see `node::scheduler::retention`).
    CompactMissions {
        /// Mission ids; running or already compacted ones are left alone.
        missions: Vec<String>,
    },
    /// A change to who may take part (see [`crate::admission`]).
    Admission(crate::admission::AdmissionCommand),
}

/// What applying a command answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// Applied.
    Ok,
    /// Not applied, with the reason (the state is unchanged).
    Rejected(String),
    /// The answers to a [`Command::Batch`], in order.
    Batch(Vec<CommandResponse>),
    /// The id of a mission just submitted.
    MissionCreated(String),
}

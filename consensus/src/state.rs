//! The replicated state and its pure apply function.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::command::{Command, CommandResponse};
use crate::mission::{MissionRecord, Refusal};
use crate::types::{NodeId, NodeRecord};

/// Everything Raft replicates (besides membership, which openraft keeps).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshState {
    /// The node registry, by Raft node id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Missions by id.
    pub missions: BTreeMap<String, MissionRecord>,
    /// Missions submitted so far (the next id is `m{count + 1}`).
    pub missions_submitted: u64,
    /// A counter giving each task that becomes ready its age rank.
    pub next_ready_seq: u64,
    /// Parts of missions too large for one entry, by stage id, waiting for
    /// the submission that seals them.
    pub staged: BTreeMap<String, StagedTasks>,
    /// Idempotency keys of submissions: key -> (mission id, leader clock).
    /// The oldest are forgotten past [`MAX_IDEMPOTENCY_KEYS`].
    pub submission_keys: BTreeMap<String, (String, u64)>,
    /// The join secret, tokens and allowlist.
    pub admission: crate::admission::Admission,
}

/// Tasks staged for one large submission, in chunks as they were committed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedTasks {
    /// Leader's clock at the first chunk.
    pub started_ms: u64,
    /// The chunks, in order.
    pub chunks: Vec<Vec<crate::mission::TaskSubmission>>,
}

/// A stage not sealed this long after it started (leader clock) is dropped:
/// its leader died mid-submission, and the client resubmits.
pub const STAGE_TTL_MS: u64 = 10 * 60 * 1000;
/// Submission idempotency keys remembered, at most (the oldest go first).
pub const MAX_IDEMPOTENCY_KEYS: usize = 10_000;
/// Longest idempotency key accepted, bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// Stages open at once, at most.
const MAX_STAGES: usize = 64;

/// A key of the state that an apply touched, so storage rewrites only those.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateKey {
    /// A registry entry.
    Node(NodeId),
    /// A mission's header (name, state, submission time).
    Mission(String),
    /// One task of a mission.
    Task(String, String),
    /// The mission and ready counters.
    Counters,
    /// One chunk of a staged submission.
    StageChunk(String, u32),
    /// A submission's idempotency key.
    SubmissionKey(String),
    /// The admission record (secret, tokens, allowlist).
    Admission,
}

impl MeshState {
    /// Applies one command; returns the answer and pushes the keys it changed.
    pub fn apply(&mut self, command: &Command, touched: &mut Vec<StateKey>) -> CommandResponse {
        let from = touched.len();
        let answer = self.apply_at(command, touched, 0);
        // Count changes per mission, so readers (long polls) rebuild a view
        // only for a mission that changed.
        let mut changed: Vec<&str> = touched[from..]
            .iter()
            .filter_map(|key| match key {
                StateKey::Mission(id) | StateKey::Task(id, _) => Some(id.as_str()),
                _ => None,
            })
            .collect();
        changed.sort_unstable();
        changed.dedup();
        for id in changed {
            if let Some(mission) = self.missions.get_mut(id) {
                mission.revision.0 += 1;
            }
        }
        answer
    }

    /// Applies `command` inside `depth` batches: the proposer may group a
    /// caller's batch with other writes, so batches nest one level (deeper
    /// nesting is refused).
    fn apply_at(
        &mut self,
        command: &Command,
        touched: &mut Vec<StateKey>,
        depth: usize,
    ) -> CommandResponse {
        match command {
            Command::Noop => CommandResponse::Ok,
            Command::Batch(_) if depth >= 2 => {
                CommandResponse::Rejected("batches nest at most one level".into())
            }
            Command::Batch(commands) => CommandResponse::Batch(
                commands
                    .iter()
                    .map(|command| self.apply_at(command, touched, depth + 1))
                    .collect(),
            ),
            Command::RegisterNode(record) => {
                if !self.admission.allows(&record.peer_id) {
                    return CommandResponse::Rejected(format!(
                        "peer {} is not admitted to the mesh",
                        record.peer_id
                    ));
                }
                if let Some(existing) = self
                    .nodes
                    .values()
                    .find(|node| node.peer_id == record.peer_id && node.node_id != record.node_id)
                {
                    return CommandResponse::Rejected(format!(
                        "peer {} is already registered as node {}",
                        record.peer_id, existing.node_id
                    ));
                }
                match self.nodes.get_mut(&record.node_id) {
                    Some(existing) if existing.peer_id != record.peer_id => {
                        return CommandResponse::Rejected(format!(
                            "node id {} belongs to peer {}",
                            record.node_id, existing.peer_id
                        ));
                    }
                    Some(existing) => {
                        existing.name.clone_from(&record.name);
                        existing.addrs.clone_from(&record.addrs);
                        existing.capabilities = record.capabilities.clone();
                        existing.last_heartbeat_ms =
                            existing.last_heartbeat_ms.max(record.last_heartbeat_ms);
                        existing.load = record.load;
                        existing.left = false;
                    }
                    None => {
                        let mut record = (**record).clone();
                        record.left = false;
                        self.nodes.insert(record.node_id, record);
                    }
                }
                touched.push(StateKey::Node(record.node_id));
                CommandResponse::Ok
            }
            Command::Heartbeats { at_ms, nodes } => {
                for (node_id, load) in nodes {
                    if let Some(node) = self.nodes.get_mut(node_id) {
                        if !self.admission.allows(&node.peer_id) {
                            continue; // revoked since the leader heard it
                        }
                        node.last_heartbeat_ms = node.last_heartbeat_ms.max(*at_ms);
                        node.load = *load;
                        node.left = false;
                        touched.push(StateKey::Node(*node_id));
                    }
                }
                CommandResponse::Ok
            }
            Command::StageTasks {
                stage,
                tasks,
                at_ms,
            } => {
                self.expire_stages(*at_ms, touched);
                if !self.staged.contains_key(stage) && self.staged.len() >= MAX_STAGES {
                    return CommandResponse::Rejected(format!(
                        "{MAX_STAGES} large submissions are already being staged; try again later"
                    ));
                }
                let staged = self
                    .staged
                    .entry(stage.clone())
                    .or_insert_with(|| StagedTasks {
                        started_ms: *at_ms,
                        chunks: Vec::new(),
                    });
                staged.chunks.push(tasks.clone());
                let chunk = (staged.chunks.len() - 1) as u32;
                touched.push(StateKey::StageChunk(stage.clone(), chunk));
                CommandResponse::Ok
            }
            Command::SubmitMission {
                name,
                tasks,
                at_ms,
                assign,
                staged,
                idempotency_key,
                max_fix_rounds,
                origin,
            } => {
                if let Some(key) = idempotency_key {
                    if let Some((id, _)) = self.submission_keys.get(key) {
                        return CommandResponse::MissionCreated(id.clone());
                    }
                }
                self.expire_stages(*at_ms, touched);
                let tasks = match staged {
                    None => tasks.clone(),
                    Some(stage) => {
                        let Some(staged) = self.staged.remove(stage) else {
                            return CommandResponse::Rejected(format!(
                                "the staged part of this submission ({stage}) is gone; submit it again"
                            ));
                        };
                        for chunk in 0..staged.chunks.len() {
                            touched.push(StateKey::StageChunk(stage.clone(), chunk as u32));
                        }
                        let mut all: Vec<_> = staged.chunks.into_iter().flatten().collect();
                        all.extend(tasks.iter().cloned());
                        all
                    }
                };
                self.missions_submitted += 1;
                let id = format!("m{}", self.missions_submitted);
                if let Some(key) = idempotency_key {
                    self.remember_key(key, &id, *at_ms, touched);
                }
                let mut mission = MissionRecord::new(
                    id.clone(),
                    name.clone(),
                    tasks,
                    *at_ms,
                    &mut self.next_ready_seq,
                );
                mission.max_fix_rounds = *max_fix_rounds;
                mission.origin = *origin;
                for (task, node) in assign {
                    // A refusal (not ready, unknown task) just leaves it to placement.
                    let _ = mission.assign(task, *node, 0, *at_ms);
                }
                self.missions.insert(id.clone(), mission);
                touched.push(StateKey::Mission(id.clone()));
                self.take_dirty(&id, touched);
                touched.push(StateKey::Counters);
                CommandResponse::MissionCreated(id)
            }
            Command::AssignTask {
                mission,
                task,
                node,
                attempt,
                at_ms,
            } => self.on_mission(mission, touched, |m, _| {
                m.assign(task, *node, *attempt, *at_ms)
            }),
            Command::StealTask {
                mission,
                task,
                from,
                to,
                attempt,
            } => self.on_mission(mission, touched, |m, _| m.steal(task, *from, *to, *attempt)),
            Command::StartTask {
                mission,
                task,
                node,
                attempt,
            } => self.on_mission(mission, touched, |m, _| m.start(task, *node, *attempt)),
            Command::CompleteTask {
                mission,
                task,
                result,
                spawn,
            } => self.on_mission(mission, touched, |m, seq| {
                m.complete_and_spawn(task, result.clone(), spawn.clone(), seq)
            }),
            Command::FailTask {
                mission,
                task,
                violation,
                retry_not_before_ms,
                fail_reason,
                spawn,
            } => self.on_mission(mission, touched, |m, seq| {
                m.fail_and_spawn(
                    task,
                    violation.clone(),
                    *retry_not_before_ms,
                    fail_reason.clone(),
                    spawn.clone(),
                    seq,
                )
            }),
            Command::NoteReasons { mission, reasons } => {
                self.on_mission(mission, touched, |m, _| {
                    m.note_reasons(reasons);
                    Ok(())
                })
            }
            Command::ReleaseNode {
                node,
                reason,
                max_runs,
            } => {
                let mut seq = self.next_ready_seq;
                for (id, mission) in self.missions.iter_mut() {
                    if mission.release_node(*node, reason, *max_runs, &mut seq) > 0 {
                        touched.push(StateKey::Mission(id.clone()));
                        for task in mission.take_dirty() {
                            touched.push(StateKey::Task(id.clone(), task));
                        }
                    }
                }
                self.next_ready_seq = seq;
                touched.push(StateKey::Counters);
                CommandResponse::Ok
            }
            Command::CancelMission { mission } => {
                self.on_mission(mission, touched, |m, _| m.cancel())
            }
            Command::RetryMission { mission } => {
                self.on_mission(mission, touched, |m, seq| m.retry(seq).map(|_| ()))
            }
            Command::CompactMissions { missions } => {
                let mut compacted = 0;
                for mission in missions {
                    let answer = self.on_mission(mission, touched, |m, _| m.compact());
                    compacted += usize::from(answer == CommandResponse::Ok);
                }
                if compacted == 0 && !missions.is_empty() {
                    CommandResponse::Rejected("no mission to compact".into())
                } else {
                    CommandResponse::Ok
                }
            }
            Command::Admission(change) => match self.admission.apply(change) {
                Ok(()) => {
                    touched.push(StateKey::Admission);
                    if let crate::admission::AdmissionCommand::RevokePeer { peer } = change {
                        // Its leases end at once: its tasks are placed again.
                        for node in self.nodes.values_mut() {
                            if node.peer_id == *peer && !node.left {
                                node.left = true;
                                touched.push(StateKey::Node(node.node_id));
                            }
                        }
                    }
                    CommandResponse::Ok
                }
                Err(reason) => CommandResponse::Rejected(reason),
            },
            Command::NodeLeft { node_id, at_ms } => match self.nodes.get_mut(node_id) {
                Some(node) => {
                    node.left = true;
                    node.last_heartbeat_ms = node.last_heartbeat_ms.max(*at_ms);
                    touched.push(StateKey::Node(*node_id));
                    CommandResponse::Ok
                }
                None => CommandResponse::Rejected(format!("unknown node {node_id}")),
            },
        }
    }

    /// Moves a mission's changed tasks into `touched`.
    /// Drops stages whose submission never came (their leader died).
    fn expire_stages(&mut self, now_ms: u64, touched: &mut Vec<StateKey>) {
        let expired: Vec<String> = self
            .staged
            .iter()
            .filter(|(_, staged)| now_ms.saturating_sub(staged.started_ms) > STAGE_TTL_MS)
            .map(|(stage, _)| stage.clone())
            .collect();
        for stage in expired {
            if let Some(staged) = self.staged.remove(&stage) {
                for chunk in 0..staged.chunks.len() {
                    touched.push(StateKey::StageChunk(stage.clone(), chunk as u32));
                }
            }
        }
    }

    /// Records `key` as having created mission `id`, forgetting the oldest
    /// keys past the cap (ties broken by key, so every replica agrees).
    fn remember_key(&mut self, key: &str, id: &str, at_ms: u64, touched: &mut Vec<StateKey>) {
        self.submission_keys
            .insert(key.to_string(), (id.to_string(), at_ms));
        touched.push(StateKey::SubmissionKey(key.to_string()));
        while self.submission_keys.len() > MAX_IDEMPOTENCY_KEYS {
            let oldest = self
                .submission_keys
                .iter()
                .min_by(|a, b| (a.1 .1, a.0).cmp(&(b.1 .1, b.0)))
                .map(|(key, _)| key.clone())
                .expect("more keys than the cap");
            self.submission_keys.remove(&oldest);
            touched.push(StateKey::SubmissionKey(oldest));
        }
    }

    fn take_dirty(&mut self, id: &str, touched: &mut Vec<StateKey>) {
        if let Some(mission) = self.missions.get_mut(id) {
            for task in mission.take_dirty() {
                touched.push(StateKey::Task(id.to_string(), task));
            }
        }
    }

    /// Applies a transition to one mission; a refusal leaves it unchanged.
    fn on_mission(
        &mut self,
        id: &str,
        touched: &mut Vec<StateKey>,
        change: impl FnOnce(&mut MissionRecord, &mut u64) -> Result<(), Refusal>,
    ) -> CommandResponse {
        let Some(mission) = self.missions.get_mut(id) else {
            return CommandResponse::Rejected(format!("unknown mission {id}"));
        };
        // Every transition checks before it changes anything, so a refusal
        // leaves the mission as it was (no copy of a large mission needed).
        let mut seq = self.next_ready_seq;
        match change(mission, &mut seq) {
            Ok(()) => {
                self.next_ready_seq = seq;
                touched.push(StateKey::Mission(id.to_string()));
                self.take_dirty(id, touched);
                touched.push(StateKey::Counters);
                CommandResponse::Ok
            }
            Err(refusal) => CommandResponse::Rejected(refusal),
        }
    }

    /// The registry entry of the node with libp2p peer id `peer_id`.
    pub fn node_by_peer(&self, peer_id: &str) -> Option<&NodeRecord> {
        self.nodes.values().find(|node| node.peer_id == peer_id)
    }

    /// A digest of the whole state; equal states give equal digests on any machine.
    pub fn digest(&self) -> String {
        let bytes = coditect_memory::codec::encode(self).expect("mesh state always encodes");
        hex::encode(Sha256::digest(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Capabilities, Load};
    use proptest::prelude::*;

    fn record(node_id: NodeId, peer: &str) -> NodeRecord {
        NodeRecord {
            node_id,
            peer_id: peer.to_string(),
            name: format!("n{node_id}"),
            addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 4000 + node_id)],
            capabilities: Capabilities {
                cores: 2,
                slots: 2,
                wasm: true,
                ..Capabilities::default()
            },
            registered_ms: 10,
            ..NodeRecord::default()
        }
    }

    #[test]
    fn register_then_refresh_keeps_the_first_registration_time() {
        let mut state = MeshState::default();
        let mut touched = Vec::new();
        assert_eq!(
            state.apply(
                &Command::RegisterNode(Box::new(record(1, "a"))),
                &mut touched
            ),
            CommandResponse::Ok
        );
        let mut refreshed = record(1, "a");
        refreshed.registered_ms = 99;
        refreshed.addrs = vec!["/ip4/10.0.0.1/tcp/1".into()];
        state.apply(&Command::RegisterNode(Box::new(refreshed)), &mut touched);
        let node = &state.nodes[&1];
        assert_eq!(node.registered_ms, 10);
        assert_eq!(node.addrs, vec!["/ip4/10.0.0.1/tcp/1".to_string()]);
        assert_eq!(touched, vec![StateKey::Node(1), StateKey::Node(1)]);
    }

    #[test]
    fn a_peer_cannot_take_two_node_ids_nor_an_id_take_two_peers() {
        let mut state = MeshState::default();
        let mut touched = Vec::new();
        state.apply(
            &Command::RegisterNode(Box::new(record(1, "a"))),
            &mut touched,
        );
        assert!(matches!(
            state.apply(
                &Command::RegisterNode(Box::new(record(2, "a"))),
                &mut touched
            ),
            CommandResponse::Rejected(_)
        ));
        assert!(matches!(
            state.apply(
                &Command::RegisterNode(Box::new(record(1, "b"))),
                &mut touched
            ),
            CommandResponse::Rejected(_)
        ));
        assert_eq!(state.nodes.len(), 1);
        assert_eq!(state.nodes[&1].peer_id, "a");
    }

    #[test]
    fn heartbeats_update_known_nodes_and_ignore_unknown_ones() {
        let mut state = MeshState::default();
        let mut touched = Vec::new();
        state.apply(
            &Command::RegisterNode(Box::new(record(1, "a"))),
            &mut touched,
        );
        touched.clear();
        let load = Load {
            running: 1,
            queued: 2,
            slots: 2,
        };
        state.apply(
            &Command::Heartbeats {
                at_ms: 500,
                nodes: vec![(1, load), (7, load)],
            },
            &mut touched,
        );
        assert_eq!(state.nodes[&1].last_heartbeat_ms, 500);
        assert_eq!(state.nodes[&1].load, load);
        assert_eq!(touched, vec![StateKey::Node(1)]);
        // An older batch never moves the clock back.
        state.apply(
            &Command::Heartbeats {
                at_ms: 100,
                nodes: vec![(1, load)],
            },
            &mut touched,
        );
        assert_eq!(state.nodes[&1].last_heartbeat_ms, 500);
    }

    #[test]
    fn leaving_marks_the_node_and_registering_again_clears_it() {
        let mut state = MeshState::default();
        let mut touched = Vec::new();
        state.apply(
            &Command::RegisterNode(Box::new(record(1, "a"))),
            &mut touched,
        );
        state.apply(
            &Command::NodeLeft {
                node_id: 1,
                at_ms: 5,
            },
            &mut touched,
        );
        assert!(state.nodes[&1].left);
        state.apply(
            &Command::RegisterNode(Box::new(record(1, "a"))),
            &mut touched,
        );
        assert!(!state.nodes[&1].left);
        assert!(matches!(
            state.apply(
                &Command::NodeLeft {
                    node_id: 9,
                    at_ms: 5
                },
                &mut touched
            ),
            CommandResponse::Rejected(_)
        ));
    }

    fn submit(
        tasks: Vec<crate::mission::TaskSubmission>,
        staged: Option<&str>,
        key: Option<&str>,
        at_ms: u64,
    ) -> Command {
        Command::SubmitMission {
            name: "big".into(),
            tasks,
            at_ms,
            assign: Vec::new(),
            staged: staged.map(str::to_string),
            idempotency_key: key.map(str::to_string),
            max_fix_rounds: None,
            origin: None,
        }
    }

    #[test]
    fn staged_chunks_join_the_submission_that_seals_them() {
        use crate::mission::test_submission as task;
        let mut state = MeshState::default();
        let mut touched = Vec::new();
        let stage = |tasks, at_ms| Command::StageTasks {
            stage: "s1".into(),
            tasks,
            at_ms,
        };
        assert_eq!(
            state.apply(&stage(vec![task("a", &[])], 1), &mut touched),
            CommandResponse::Ok
        );
        assert_eq!(
            state.apply(&stage(vec![task("b", &["a"])], 2), &mut touched),
            CommandResponse::Ok
        );
        // Staged tasks are invisible until sealed.
        assert!(state.missions.is_empty());
        assert!(touched.contains(&StateKey::StageChunk("s1".into(), 1)));
        let answer = state.apply(
            &submit(vec![task("c", &["b"])], Some("s1"), None, 3),
            &mut touched,
        );
        assert_eq!(answer, CommandResponse::MissionCreated("m1".into()));
        let ids: Vec<&String> = state.missions["m1"].tasks.keys().collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(state.staged.is_empty());
        // A seal whose stage is gone is refused and changes nothing.
        let before = state.clone();
        let answer = state.apply(
            &submit(vec![task("d", &[])], Some("s1"), None, 4),
            &mut touched,
        );
        assert!(matches!(answer, CommandResponse::Rejected(_)), "{answer:?}");
        assert_eq!(state, before);
    }

    #[test]
    fn unsealed_stages_expire() {
        use crate::mission::test_submission as task;
        let mut state = MeshState::default();
        let mut touched = Vec::new();
        let stage = Command::StageTasks {
            stage: "old".into(),
            tasks: vec![task("a", &[])],
            at_ms: 1,
        };
        state.apply(&stage, &mut touched);
        state.apply(
            &submit(vec![task("x", &[])], None, None, 2 + STAGE_TTL_MS),
            &mut touched,
        );
        assert!(state.staged.is_empty());
    }

    #[test]
    fn an_idempotency_key_answers_with_the_mission_it_created() {
        use crate::mission::test_submission as task;
        let mut state = MeshState::default();
        let mut touched = Vec::new();
        let first = state.apply(
            &submit(vec![task("a", &[])], None, Some("k"), 1),
            &mut touched,
        );
        assert_eq!(first, CommandResponse::MissionCreated("m1".into()));
        let before = state.clone();
        let again = state.apply(
            &submit(vec![task("a", &[])], None, Some("k"), 2),
            &mut touched,
        );
        assert_eq!(again, CommandResponse::MissionCreated("m1".into()));
        assert_eq!(state, before, "a repeated key creates nothing");
        let other = state.apply(
            &submit(vec![task("a", &[])], None, Some("k2"), 3),
            &mut touched,
        );
        assert_eq!(other, CommandResponse::MissionCreated("m2".into()));
        let plain = state.apply(&submit(vec![task("a", &[])], None, None, 4), &mut touched);
        assert_eq!(plain, CommandResponse::MissionCreated("m3".into()));
    }

    #[test]
    fn the_oldest_idempotency_keys_are_forgotten_past_the_cap() {
        let mut state = MeshState::default();
        let mut touched = Vec::new();
        for i in 0..(MAX_IDEMPOTENCY_KEYS as u64 + 3) {
            state.remember_key(&format!("k{i}"), "m1", i, &mut touched);
        }
        assert_eq!(state.submission_keys.len(), MAX_IDEMPOTENCY_KEYS);
        assert!(!state.submission_keys.contains_key("k0"));
        assert!(!state.submission_keys.contains_key("k2"));
        assert!(state.submission_keys.contains_key("k3"));
    }

    #[test]
    fn a_submission_can_carry_the_first_placements() {
        use crate::mission::{test_submission, TaskState};
        let mut state = MeshState::default();
        let mut touched = Vec::new();
        let answer = state.apply(
            &Command::SubmitMission {
                name: "m".into(),
                tasks: vec![test_submission("a", &[]), test_submission("b", &["a"])],
                at_ms: 7,
                // `b` is not ready and `ghost` does not exist: both refused.
                assign: vec![("a".into(), 4), ("b".into(), 4), ("ghost".into(), 4)],
                staged: None,
                idempotency_key: None,
                max_fix_rounds: None,
                origin: None,
            },
            &mut touched,
        );
        assert_eq!(answer, CommandResponse::MissionCreated("m1".into()));
        let mission = &state.missions["m1"];
        let a = &mission.tasks["a"];
        assert_eq!(
            (a.state, a.owner, a.attempt),
            (TaskState::Assigned, Some(4), 1)
        );
        let b = &mission.tasks["b"];
        assert_eq!((b.state, b.owner, b.attempt), (TaskState::Pending, None, 0));
        assert!(touched.contains(&StateKey::Task("m1".into(), "a".into())));
    }

    #[test]
    fn a_batch_applies_in_order_and_answers_each_command() {
        let mut state = MeshState::default();
        let mut touched = Vec::new();
        let response = state.apply(
            &Command::Batch(
                vec![
                    Command::RegisterNode(Box::new(record(1, "a"))),
                    Command::NodeLeft {
                        node_id: 1,
                        at_ms: 5,
                    },
                    Command::NodeLeft {
                        node_id: 2,
                        at_ms: 5,
                    },
                    // A caller's batch grouped with other writes by the proposer.
                    Command::Batch(
                        vec![Command::Noop, Command::Batch(vec![Command::Noop].into())].into(),
                    ),
                ]
                .into(),
            ),
            &mut touched,
        );
        match response {
            CommandResponse::Batch(answers) => {
                assert_eq!(answers.len(), 4);
                assert_eq!(answers[0], CommandResponse::Ok);
                assert_eq!(answers[1], CommandResponse::Ok);
                assert!(matches!(answers[2], CommandResponse::Rejected(_)));
                match &answers[3] {
                    CommandResponse::Batch(inner) => {
                        assert_eq!(inner[0], CommandResponse::Ok);
                        assert!(
                            matches!(inner[1], CommandResponse::Rejected(_)),
                            "a third level is refused"
                        );
                    }
                    other => panic!("expected a nested batch answer, got {other:?}"),
                }
            }
            other => panic!("expected a batch answer, got {other:?}"),
        }
        assert!(state.nodes[&1].left, "later commands see earlier ones");
    }

    proptest! {
        /// Replicas that apply the same commands reach the same digest.
        #[test]
        fn apply_is_deterministic(ops in proptest::collection::vec((0u64..5, 0u8..3, 0u64..1000), 0..40)) {
            let commands: Vec<Command> = ops.iter().map(|(id, kind, at)| match kind {
                0 => Command::RegisterNode(Box::new(record(*id, &format!("peer{id}")))),
                1 => Command::Heartbeats { at_ms: *at, nodes: vec![(*id, Load::default())] },
                _ => Command::NodeLeft { node_id: *id, at_ms: *at },
            }).collect();
            let mut first = MeshState::default();
            let mut second = MeshState::default();
            let mut touched = Vec::new();
            for command in &commands {
                let a = first.apply(command, &mut touched);
                let b = second.apply(command, &mut touched);
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(first.digest(), second.digest());
            let decoded: MeshState = coditect_memory::codec::decode(&coditect_memory::codec::encode(&first).unwrap()).unwrap();
            prop_assert_eq!(decoded, first);
        }
    }
}

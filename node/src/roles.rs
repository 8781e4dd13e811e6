//! Pure role decisions: the leader's autopilot (standbys, promotion, voter
//! replacement) and the election gate of a node that restarts on old state.
//! Plain data in, decisions out; no clock, no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use coditect_consensus::NodeId;

/// What the leader knows about one node's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    /// Milliseconds since the leader last heard from it; `None` if never.
    pub silent_ms: Option<u64>,
    /// It drained and left on purpose.
    pub left: bool,
}

impl Health {
    fn is_live(&self, live_ms: u64) -> bool {
        !self.left && self.silent_ms.is_some_and(|ms| ms <= live_ms)
    }

    fn is_gone(&self, grace_ms: u64) -> bool {
        self.left || self.silent_ms.is_none_or(|ms| ms > grace_ms)
    }
}

/// The autopilot's view of the mesh, gathered by the leader.
#[derive(Clone, Debug)]
pub struct AutopilotInput {
    /// The leader itself (always live, never replaced by itself).
    pub leader: NodeId,
    /// Voter target (`--voters`).
    pub target_voters: usize,
    /// Standby learners to keep beside the voters.
    pub target_standbys: usize,
    /// Current voters.
    pub voters: BTreeSet<NodeId>,
    /// Current learners (standbys).
    pub learners: BTreeSet<NodeId>,
    /// Learners whose log is close to the leader's, safe to promote.
    pub caught_up: BTreeSet<NodeId>,
    /// Health of every registered node.
    pub health: BTreeMap<NodeId, Health>,
    /// Voters whose replication made no progress for longer than the grace
    /// period while behind the leader ([`ReplicationWatch`]): a process that
    /// heartbeats but whose Raft is wedged counts as gone.
    pub stalled: BTreeSet<NodeId>,
    /// A node is live if heard from within this many ms.
    pub live_ms: u64,
    /// A voter silent for longer than this is replaced (default 10 s).
    pub grace_ms: u64,
}

/// One membership change; the leader applies at most one per round because
/// Raft serializes membership changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutopilotAction {
    /// Start replicating to these nodes as standby learners.
    AddLearners(BTreeSet<NodeId>),
    /// Make the voter set exactly this.
    SetVoters(BTreeSet<NodeId>),
    /// Stop replicating to these learners.
    RemoveLearners(BTreeSet<NodeId>),
}

impl AutopilotInput {
    fn health_of(&self, node: NodeId) -> Health {
        if node == self.leader {
            return Health {
                silent_ms: Some(0),
                left: false,
            };
        }
        self.health.get(&node).copied().unwrap_or(Health {
            silent_ms: None,
            left: false,
        })
    }

    fn live(&self, node: NodeId) -> bool {
        self.health_of(node).is_live(self.live_ms)
    }

    /// Live, caught-up learners in a stable order (lowest id first).
    fn promotable(&self) -> Vec<NodeId> {
        self.learners
            .iter()
            .copied()
            .filter(|id| self.caught_up.contains(id) && self.live(*id))
            .collect()
    }
}

/// Decides the next membership change, if any.
pub fn autopilot(input: &AutopilotInput) -> Option<AutopilotAction> {
    let target_voters = input.target_voters.max(1);
    let dead_voters: BTreeSet<NodeId> = input
        .voters
        .iter()
        .copied()
        .filter(|id| {
            *id != input.leader
                && (input.health_of(*id).is_gone(input.grace_ms) || input.stalled.contains(id))
        })
        .collect();
    let mut promotable = input.promotable();

    // 1. Replace voters that stayed unreachable past the grace period, with
    //    standbys; if no standby is ready, shrink only below target if the
    //    dead voters would otherwise keep counting toward quorum.
    if !dead_voters.is_empty() && !promotable.is_empty() {
        let mut voters: BTreeSet<NodeId> = input.voters.difference(&dead_voters).copied().collect();
        while voters.len() < target_voters {
            match promotable.first().copied() {
                Some(id) => {
                    promotable.remove(0);
                    voters.insert(id);
                }
                None => break,
            }
        }
        return Some(AutopilotAction::SetVoters(voters));
    }

    // 2. Promote standbys until the voter target is met.
    if input.voters.len() < target_voters && !promotable.is_empty() {
        let mut voters = input.voters.clone();
        for id in promotable {
            if voters.len() >= target_voters {
                break;
            }
            voters.insert(id);
        }
        return Some(AutopilotAction::SetVoters(voters));
    }

    // 3. Demote extra voters (the target was lowered): keep the leader and the
    //    live ones with the lowest ids.
    if input.voters.len() > target_voters && dead_voters.is_empty() {
        let mut voters: BTreeSet<NodeId> = BTreeSet::from([input.leader]);
        for id in &input.voters {
            if voters.len() >= target_voters {
                break;
            }
            voters.insert(*id);
        }
        return Some(AutopilotAction::SetVoters(voters));
    }

    // 4. Drop standbys that are gone.
    let dead_learners: BTreeSet<NodeId> = input
        .learners
        .iter()
        .copied()
        .filter(|id| input.health_of(*id).is_gone(input.grace_ms))
        .collect();
    if !dead_learners.is_empty() {
        return Some(AutopilotAction::RemoveLearners(dead_learners));
    }

    // 5. Keep enough standbys: the voters still missing plus the standby target.
    let missing_voters = target_voters.saturating_sub(input.voters.len() - dead_voters.len());
    let wanted_learners = input.target_standbys + missing_voters;
    if input.learners.len() < wanted_learners {
        let candidates: BTreeSet<NodeId> = input
            .health
            .iter()
            .filter(|(id, health)| {
                !input.voters.contains(id)
                    && !input.learners.contains(id)
                    && health.is_live(input.live_ms)
            })
            .map(|(id, _)| *id)
            .take(wanted_learners - input.learners.len())
            .collect();
        if !candidates.is_empty() {
            return Some(AutopilotAction::AddLearners(candidates));
        }
    }
    None
}

/// The leader's record of each follower's replication progress, so voters
/// are judged by what Raft does, not by heartbeats alone.
///
/// A follower makes progress when its matched log index moves forward or it
/// is within `caught_up_entries` of the leader's last index. One that is
/// behind and has not moved for a while is stalled: its process may answer
/// heartbeats while its log does not advance (a wedged disk, a dead Raft
/// core, a replication stream that keeps failing).
#[derive(Clone, Debug, Default)]
pub struct ReplicationWatch {
    /// Follower -> (matched index last seen, ms when it last made progress).
    progress: BTreeMap<NodeId, (u64, u64)>,
}

impl ReplicationWatch {
    /// Forgets everything (a new term of leadership starts counting afresh).
    pub fn reset(&mut self) {
        self.progress.clear();
    }

    /// Records the leader's replication state at `now_ms`. `matched` maps
    /// every follower the leader replicates to its matched index (0 if none
    /// yet); followers no longer replicated are forgotten.
    pub fn observe(
        &mut self,
        now_ms: u64,
        last_index: u64,
        caught_up_entries: u64,
        matched: &BTreeMap<NodeId, u64>,
    ) {
        self.progress.retain(|id, _| matched.contains_key(id));
        for (id, index) in matched {
            let caught_up = index.saturating_add(caught_up_entries) >= last_index;
            match self.progress.get_mut(id) {
                Some((seen, at)) => {
                    if *index > *seen || caught_up {
                        *at = now_ms;
                    }
                    *seen = (*seen).max(*index);
                }
                None => {
                    self.progress.insert(*id, (*index, now_ms));
                }
            }
        }
    }

    /// Followers that have made no progress for longer than `grace_ms`.
    pub fn stalled(&self, now_ms: u64, grace_ms: u64) -> BTreeSet<NodeId> {
        self.progress
            .iter()
            .filter(|(_, (_, at))| now_ms.saturating_sub(*at) > grace_ms)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// What the gossip says about membership, as the leader announced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnouncedMembership {
    /// The announcing leader's term.
    pub term: u64,
    /// Voters it announced.
    pub voters: BTreeSet<NodeId>,
    /// Learners it announced.
    pub learners: BTreeSet<NodeId>,
}

/// Whether this node may start elections.
///
/// A node restarting on old Raft state may believe it is still a voter after
/// the leader replaced it; if it campaigned, its higher term would depose a
/// healthy leader. So it stays quiet until it hears the current leader list
/// it as a voter, or until no leader has been heard for `quiet_ms` (the whole
/// mesh restarted, and someone must campaign).
pub fn election_allowed(
    me: NodeId,
    local_term: u64,
    locally_voter: bool,
    announced: Option<&AnnouncedMembership>,
    ms_without_leader: u64,
    quiet_ms: u64,
) -> bool {
    if !locally_voter {
        // Not a voter in our own view: openraft would not campaign anyway.
        return false;
    }
    match announced {
        Some(membership) if membership.term >= local_term => membership.voters.contains(&me),
        // We took part in a newer term than the last announcement (an election
        // after the leader died): our own membership is at least as recent.
        Some(_) => true,
        None => ms_without_leader >= quiet_ms,
    }
}

/// What the election gate reads about membership each tick.
#[derive(Clone, Debug)]
pub struct GateInput<'a> {
    /// This node.
    pub me: NodeId,
    /// Its Raft term.
    pub term: u64,
    /// Whether its own (replicated) membership lists it as a voter.
    pub locally_voter: bool,
    /// Whether its Raft knows a leader now.
    pub leader_known: bool,
    /// The membership the leader last announced by gossip.
    pub announced: Option<&'a AnnouncedMembership>,
    /// How long no leader has been heard.
    pub ms_without_leader: u64,
    /// How long a node on old state stays quiet before campaigning anyway.
    pub quiet_ms: u64,
}

/// Whether one node's Raft may campaign, as a small state machine. Two
/// rules close the gate: the membership rule ([`election_allowed`]), and
/// the split-vote pause: openraft draws each node's election timeout once,
/// so two voters whose timeouts expire together split every vote again; a
/// node still a candidate after `candidacy_limit` pauses its own elections
/// for a random while, so the other wins (it votes meanwhile). A node that
/// is leaving never campaigns again. The shell sets Raft's `elect` flag to
/// [`ElectionGate::elect`] whenever a call returns `Some`.
#[derive(Clone, Debug, Default)]
pub struct ElectionGate {
    allowed: bool,
    /// A leader replicated to us while we were a voter: that survives the
    /// leader's death, so we may campaign at once.
    voter_confirmed: bool,
    candidate_since: Option<Duration>,
    paused_until: Option<Duration>,
    leaving: bool,
}

impl ElectionGate {
    /// A gate open or closed at start (closed for a node on old state).
    pub fn new(allowed: bool) -> Self {
        ElectionGate {
            allowed,
            voter_confirmed: false,
            candidate_since: None,
            paused_until: None,
            leaving: false,
        }
    }

    /// Whether Raft may campaign now.
    pub fn elect(&self) -> bool {
        self.allowed && self.paused_until.is_none() && !self.leaving
    }

    /// The membership rule's verdict (what `/api/status` shows).
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// Whether a split-vote pause holds elections back.
    pub fn paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// Whether the node is leaving.
    pub fn leaving(&self) -> bool {
        self.leaving
    }

    /// The node drains and leaves: elections stay off for good.
    pub fn leave(&mut self) -> Option<bool> {
        self.changed(|gate| gate.leaving = true)
    }

    /// Applies the membership rule; returns the new flag if it changed.
    pub fn on_membership(&mut self, input: &GateInput<'_>) -> Option<bool> {
        if input.leader_known {
            self.voter_confirmed = input.locally_voter;
        }
        let allowed = (input.locally_voter && self.voter_confirmed)
            || election_allowed(
                input.me,
                input.term,
                input.locally_voter,
                input.announced,
                input.ms_without_leader,
                input.quiet_ms,
            );
        self.changed(|gate| gate.allowed = allowed)
    }

    /// Watches candidacy at `now`: a pause ends, or one starts (for
    /// `pause()`, drawn only then) when this node has been a candidate for
    /// `candidacy_limit`. Returns the new flag if it changed.
    pub fn on_candidacy(
        &mut self,
        now: Duration,
        candidate: bool,
        candidacy_limit: Duration,
        pause: impl FnOnce() -> Duration,
    ) -> Option<bool> {
        if let Some(until) = self.paused_until {
            if now >= until {
                return self.changed(|gate| gate.paused_until = None);
            }
            return None;
        }
        if !candidate {
            self.candidate_since = None;
            return None;
        }
        let since = *self.candidate_since.get_or_insert(now);
        if self.elect() && now.saturating_sub(since) >= candidacy_limit {
            let until = now + pause();
            self.candidate_since = None;
            return self.changed(|gate| gate.paused_until = Some(until));
        }
        None
    }

    fn changed(&mut self, change: impl FnOnce(&mut Self)) -> Option<bool> {
        let before = self.elect();
        change(self);
        (self.elect() != before).then(|| self.elect())
    }
}

/// A node's role as `/api/status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Raft leader and orchestrator.
    Leader,
    /// Raft voter.
    Voter,
    /// Standby learner receiving the log.
    Learner,
    /// Plain worker outside Raft membership.
    Worker,
}

/// The role of `me` given who leads and the membership.
pub fn role_of(
    me: NodeId,
    leader: Option<NodeId>,
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
) -> Role {
    if leader == Some(me) {
        Role::Leader
    } else if voters.contains(&me) {
        Role::Voter
    } else if learners.contains(&me) {
        Role::Learner
    } else {
        Role::Worker
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn live() -> Health {
        Health {
            silent_ms: Some(100),
            left: false,
        }
    }

    fn silent(ms: u64) -> Health {
        Health {
            silent_ms: Some(ms),
            left: false,
        }
    }

    fn input(
        voters: &[NodeId],
        learners: &[NodeId],
        health: &[(NodeId, Health)],
    ) -> AutopilotInput {
        AutopilotInput {
            leader: 1,
            target_voters: 3,
            target_standbys: 2,
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            caught_up: learners.iter().copied().collect(),
            health: health.iter().copied().collect(),
            stalled: BTreeSet::new(),
            live_ms: 3_000,
            grace_ms: 10_000,
        }
    }

    #[test]
    fn a_lone_leader_adds_a_learner_then_promotes_it() {
        let state = input(&[1], &[], &[(1, live()), (2, live()), (3, live())]);
        assert_eq!(
            autopilot(&state),
            Some(AutopilotAction::AddLearners([2, 3].into()))
        );
        let state = input(&[1], &[2, 3], &[(1, live()), (2, live()), (3, live())]);
        assert_eq!(
            autopilot(&state),
            Some(AutopilotAction::SetVoters([1, 2, 3].into()))
        );
    }

    #[test]
    fn learners_that_lag_are_not_promoted() {
        let mut state = input(&[1], &[2], &[(1, live()), (2, live())]);
        state.caught_up.clear();
        assert_ne!(
            autopilot(&state),
            Some(AutopilotAction::SetVoters([1, 2].into()))
        );
    }

    #[test]
    fn a_voter_silent_past_the_grace_period_is_replaced_by_a_standby() {
        let state = input(
            &[1, 2, 3],
            &[4, 5],
            &[(2, live()), (3, silent(10_001)), (4, live()), (5, live())],
        );
        assert_eq!(
            autopilot(&state),
            Some(AutopilotAction::SetVoters([1, 2, 4].into()))
        );
    }

    #[test]
    fn a_voter_silent_within_the_grace_period_is_kept() {
        let state = input(
            &[1, 2, 3],
            &[4, 5],
            &[(2, live()), (3, silent(9_000)), (4, live()), (5, live())],
        );
        assert_eq!(autopilot(&state), None);
    }

    #[test]
    fn a_voter_whose_replication_stalled_is_replaced_though_it_heartbeats() {
        let mut state = input(
            &[1, 2, 3],
            &[4, 5],
            &[(2, live()), (3, live()), (4, live()), (5, live())],
        );
        state.stalled = [3].into();
        assert_eq!(
            autopilot(&state),
            Some(AutopilotAction::SetVoters([1, 2, 4].into()))
        );
        // The leader itself is never replaced, whatever the watch says.
        state.stalled = [1].into();
        assert_eq!(autopilot(&state), None);
    }

    #[test]
    fn the_watch_tells_a_stalled_follower_from_a_slow_or_idle_one() {
        let mut watch = ReplicationWatch::default();
        let at = |matched: &[(NodeId, u64)]| matched.iter().copied().collect::<BTreeMap<_, _>>();
        // 2 is caught up, 3 is behind and moving, 4 is behind and stuck.
        watch.observe(0, 1_000, 100, &at(&[(2, 1_000), (3, 10), (4, 10)]));
        for step in 1..=30u64 {
            let last = 1_000 + step * 500;
            watch.observe(
                step * 1_000,
                last,
                100,
                &at(&[(2, last), (3, 10 + step * 400), (4, 10)]),
            );
        }
        assert_eq!(watch.stalled(30_000, 10_000), [4].into());
        assert!(watch.stalled(30_000, 40_000).is_empty());
        // An idle leader: a follower at the last index never stalls.
        let mut idle = ReplicationWatch::default();
        for step in 0..60u64 {
            idle.observe(step * 1_000, 77, 100, &at(&[(2, 77)]));
        }
        assert!(idle.stalled(60_000, 10_000).is_empty());
        // Once it moves again, it is no longer stalled; once gone, forgotten.
        watch.observe(31_000, 16_000, 100, &at(&[(4, 11)]));
        assert!(watch.stalled(31_000, 10_000).is_empty());
        watch.observe(50_000, 16_000, 100, &at(&[]));
        assert!(watch.stalled(50_000, 10_000).is_empty());
    }

    #[test]
    fn a_voter_that_left_is_replaced_at_once() {
        let left = Health {
            silent_ms: Some(0),
            left: true,
        };
        let state = input(&[1, 2, 3], &[4], &[(2, live()), (3, left), (4, live())]);
        assert_eq!(
            autopilot(&state),
            Some(AutopilotAction::SetVoters([1, 2, 4].into()))
        );
    }

    #[test]
    fn a_dead_voter_with_no_standby_first_gets_a_standby_added() {
        let state = input(
            &[1, 2, 3],
            &[],
            &[(2, live()), (3, silent(60_000)), (6, live())],
        );
        assert_eq!(
            autopilot(&state),
            Some(AutopilotAction::AddLearners([6].into()))
        );
    }

    #[test]
    fn dead_standbys_are_dropped() {
        let state = input(
            &[1, 2, 3],
            &[4],
            &[(2, live()), (3, live()), (4, silent(20_000))],
        );
        assert_eq!(
            autopilot(&state),
            Some(AutopilotAction::RemoveLearners([4].into()))
        );
    }

    #[test]
    fn a_full_healthy_mesh_needs_nothing() {
        let state = input(
            &[1, 2, 3],
            &[4, 5],
            &[
                (2, live()),
                (3, live()),
                (4, live()),
                (5, live()),
                (6, live()),
            ],
        );
        assert_eq!(autopilot(&state), None);
    }

    #[test]
    fn extra_voters_are_demoted_keeping_the_leader() {
        let mut state = input(
            &[1, 2, 3, 4, 5],
            &[],
            &[
                (1, live()),
                (2, live()),
                (3, live()),
                (4, live()),
                (5, live()),
            ],
        );
        state.leader = 5;
        assert_eq!(
            autopilot(&state),
            Some(AutopilotAction::SetVoters([1, 2, 5].into()))
        );
    }

    #[test]
    fn the_election_gate_keeps_a_removed_voter_quiet() {
        let announced = AnnouncedMembership {
            term: 5,
            voters: [1, 2, 4].into(),
            learners: [].into(),
        };
        // Removed while down: quiet forever, even long after the leader was heard.
        assert!(!election_allowed(
            3,
            4,
            true,
            Some(&announced),
            60_000,
            3_000
        ));
        // Still a voter: may campaign.
        assert!(election_allowed(2, 4, true, Some(&announced), 0, 3_000));
        // No leader heard: campaign after the quiet period only.
        assert!(!election_allowed(3, 4, true, None, 1_000, 3_000));
        assert!(election_allowed(3, 4, true, None, 3_000, 3_000));
        // An announcement older than our own term says nothing: a voter that
        // saw a newer term (a failed election) may keep campaigning at once.
        assert!(election_allowed(3, 9, true, Some(&announced), 0, 3_000));
        assert!(!election_allowed(3, 0, false, None, 60_000, 3_000));
    }

    #[test]
    fn roles_follow_leadership_and_membership() {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let learners: BTreeSet<NodeId> = [4].into();
        assert_eq!(role_of(1, Some(1), &voters, &learners), Role::Leader);
        assert_eq!(role_of(2, Some(1), &voters, &learners), Role::Voter);
        assert_eq!(role_of(4, Some(1), &voters, &learners), Role::Learner);
        assert_eq!(role_of(9, Some(1), &voters, &learners), Role::Worker);
    }

    fn membership(
        locally_voter: bool,
        leader_known: bool,
        without_leader: u64,
    ) -> GateInput<'static> {
        GateInput {
            me: 1,
            term: 3,
            locally_voter,
            leader_known,
            announced: None,
            ms_without_leader: without_leader,
            quiet_ms: 3_000,
        }
    }

    #[test]
    fn a_long_candidacy_pauses_elections_once_then_they_resume() {
        let ms = Duration::from_millis;
        let mut gate = ElectionGate::new(true);
        let limit = ms(600);
        assert_eq!(gate.on_candidacy(ms(0), true, limit, || ms(400)), None);
        assert_eq!(gate.on_candidacy(ms(500), true, limit, || ms(400)), None);
        assert_eq!(
            gate.on_candidacy(ms(600), true, limit, || ms(400)),
            Some(false)
        );
        assert!(gate.paused());
        assert_eq!(
            gate.on_candidacy(ms(900), true, limit, || unreachable!()),
            None
        );
        assert_eq!(
            gate.on_candidacy(ms(1000), true, limit, || unreachable!()),
            Some(true)
        );
        // A fresh candidacy is timed from scratch.
        assert_eq!(gate.on_candidacy(ms(1100), true, limit, || ms(1)), None);
        assert_eq!(gate.on_candidacy(ms(1200), false, limit, || ms(1)), None);
        assert_eq!(gate.on_candidacy(ms(1750), true, limit, || ms(1)), None);
    }

    #[test]
    fn a_leaving_node_stays_out_of_elections_after_a_pause_ends() {
        let ms = Duration::from_millis;
        let mut gate = ElectionGate::new(true);
        gate.on_candidacy(ms(0), true, ms(10), || ms(100));
        assert_eq!(
            gate.on_candidacy(ms(10), true, ms(10), || ms(100)),
            Some(false)
        );
        assert_eq!(gate.leave(), None, "already off");
        assert_eq!(gate.on_candidacy(ms(200), true, ms(10), || ms(100)), None);
        assert!(!gate.elect());
    }

    #[test]
    fn a_voter_a_leader_confirmed_campaigns_at_once_when_the_leader_dies() {
        let mut gate = ElectionGate::new(false);
        assert_eq!(gate.on_membership(&membership(true, true, 0)), Some(true));
        // The leader died: no announcement is fresher, no quiet period needed.
        assert_eq!(gate.on_membership(&membership(true, false, 10)), None);
        assert!(gate.elect());
        // Without that confirmation, a restarted node on old state waits.
        let mut restarted = ElectionGate::new(false);
        assert_eq!(restarted.on_membership(&membership(true, false, 10)), None);
        assert_eq!(
            restarted.on_membership(&membership(true, false, 3_000)),
            Some(true)
        );
    }

    proptest! {
        /// Whatever the mesh looks like, the autopilot never drops the leader
        /// from the voters, never proposes an empty voter set, never grows
        /// voters past the target, and only promotes live caught-up learners.
        #[test]
        fn autopilot_decisions_are_safe(
            voters in proptest::collection::btree_set(1u64..12, 1..6),
            learners in proptest::collection::btree_set(1u64..12, 0..5),
            silences in proptest::collection::btree_map(1u64..12, proptest::option::of(0u64..30_000), 0..12),
            target in 1usize..6,
            stalled in proptest::collection::btree_set(1u64..12, 0..4),
        ) {
            let leader = *voters.iter().next().unwrap();
            let learners: BTreeSet<NodeId> = learners.difference(&voters).copied().collect();
            let health = silences.iter().map(|(id, silent_ms)| (*id, Health { silent_ms: *silent_ms, left: false })).collect();
            let state = AutopilotInput {
                leader,
                target_voters: target,
                target_standbys: 2,
                voters: voters.clone(),
                learners: learners.clone(),
                caught_up: learners.clone(),
                health,
                stalled: stalled.difference(&learners).copied().collect(),
                live_ms: 3_000,
                grace_ms: 10_000,
            };
            match autopilot(&state) {
                Some(AutopilotAction::SetVoters(new_voters)) => {
                    prop_assert!(new_voters.contains(&leader));
                    prop_assert!(!new_voters.is_empty());
                    prop_assert!(new_voters.len() <= target.max(voters.len()));
                    for id in new_voters.difference(&voters) {
                        prop_assert!(learners.contains(id));
                        prop_assert!(state.live(*id));
                    }
                    // A stalled voter (other than the leader) is never kept.
                    for id in &state.stalled {
                        if *id != leader {
                            prop_assert!(!new_voters.contains(id));
                        }
                    }
                }
                Some(AutopilotAction::AddLearners(ids)) => {
                    prop_assert!(!ids.is_empty());
                    for id in ids {
                        prop_assert!(!voters.contains(&id) && !learners.contains(&id));
                        prop_assert!(state.live(id));
                    }
                    prop_assert!(learners.len() < 2 + target);
                }
                Some(AutopilotAction::RemoveLearners(ids)) => {
                    prop_assert!(ids.is_subset(&learners));
                }
                None => {}
            }
        }
    }

    #[derive(Clone, Debug)]
    enum GateStep {
        Membership(bool, bool, u64),
        Candidacy(u64, bool, u64),
        Leave,
    }

    fn gate_step() -> impl Strategy<Value = GateStep> {
        prop_oneof![
            (any::<bool>(), any::<bool>(), 0u64..6_000)
                .prop_map(|(v, l, w)| GateStep::Membership(v, l, w)),
            (0u64..800, any::<bool>(), 1u64..2_000)
                .prop_map(|(d, c, p)| GateStep::Candidacy(d, c, p)),
            Just(GateStep::Leave),
        ]
    }

    proptest! {
        /// The flag the shell keeps (starting from the gate's and changed
        /// only when a call returns `Some`) always equals the gate's own
        /// verdict; a pause never outlasts its length by more than one
        /// call; a node that left never campaigns again.
        #[test]
        fn the_shells_flag_follows_the_gate(start in any::<bool>(), steps in prop::collection::vec(gate_step(), 1..80)) {
            let mut gate = ElectionGate::new(start);
            let mut flag = gate.elect();
            let mut now = Duration::ZERO;
            let mut pause_end: Option<Duration> = None;
            let mut left = false;
            for step in steps {
                let change = match step {
                    GateStep::Membership(voter, leader, without) => gate.on_membership(&membership(voter, leader, without)),
                    GateStep::Candidacy(advance, candidate, pause) => {
                        now += Duration::from_millis(advance);
                        let was_paused = gate.paused();
                        let change = gate.on_candidacy(now, candidate, Duration::from_millis(600), || Duration::from_millis(pause));
                        if !was_paused && gate.paused() {
                            pause_end = Some(now + Duration::from_millis(pause));
                        }
                        if let Some(end) = pause_end {
                            if now >= end {
                                prop_assert!(!gate.paused(), "paused past its end");
                                pause_end = None;
                            }
                        }
                        change
                    }
                    GateStep::Leave => { left = true; gate.leave() }
                };
                if let Some(value) = change {
                    prop_assert_ne!(value, flag, "a change that changes nothing");
                    flag = value;
                }
                prop_assert_eq!(flag, gate.elect());
                if left {
                    prop_assert!(!flag);
                }
            }
        }
    }
}

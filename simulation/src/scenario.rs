//! Scenarios and the seeded nemesis: every fault of a run is drawn from the
//! seed before the run starts, printed, and applied at its virtual time.
//! Faults only happen in the first four fifths of the run; the last fifth
//! heals everything and restarts every crashed node, so liveness is checked
//! in every run.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::disk::DiskModel;

/// What a run exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// The leader is killed again and again (and comes back later).
    Failover,
    /// Partitions: the leader isolated, minority/majority splits, one-way cuts.
    Partition,
    /// Nodes crash, restart, join and leave.
    Churn,
    /// Tasks proportional to nodes, few faults.
    Scale,
    /// A skewed load: one node runs every task eight times slower.
    Steal,
    /// Large task outputs on slow disks: some nodes' disks are slow for the
    /// whole run, disks stall, and members' disks refuse writes for a while.
    Disk,
    /// A third of the nodes offer a modelled language model that answers
    /// slowly, rate-limits now and then and goes down for seconds at a
    /// time; half the tasks require `llm`; the leader is killed now and then.
    Llm,
}

impl Scenario {
    /// Every scenario, in `--help` order.
    pub const ALL: [Scenario; 7] = [
        Scenario::Failover,
        Scenario::Partition,
        Scenario::Churn,
        Scenario::Scale,
        Scenario::Steal,
        Scenario::Disk,
        Scenario::Llm,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Failover => "failover",
            Scenario::Partition => "partition",
            Scenario::Churn => "churn",
            Scenario::Scale => "scale",
            Scenario::Steal => "steal",
            Scenario::Disk => "disk",
            Scenario::Llm => "llm",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "unknown scenario {text:?} (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// One fault. Node indices refer to the harness's node slots; "the leader"
/// is resolved when the fault fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Kill the current leader; restart it after `down_ms`.
    KillLeader {
        /// How long it stays down.
        down_ms: u64,
    },
    /// Kill a node; restart it after `down_ms`.
    Kill {
        /// Which node.
        node: usize,
        /// How long it stays down.
        down_ms: u64,
    },
    /// Cut the leader off from everyone, both ways, for `ms`.
    IsolateLeader {
        /// How long.
        ms: u64,
    },
    /// Split the given minority from the rest, both ways, for `ms`.
    Split {
        /// One side.
        minority: Vec<usize>,
        /// How long.
        ms: u64,
    },
    /// Drop messages from one node to another only, for `ms`.
    OneWay {
        /// Sender whose messages are lost.
        from: usize,
        /// Receiver.
        to: usize,
        /// How long.
        ms: u64,
    },
    /// Add latency to every message to or from a node, for `ms`.
    SlowLinks {
        /// Which node.
        node: usize,
        /// Extra one-way latency.
        extra_ms: u64,
        /// How long.
        ms: u64,
    },
    /// A new node joins the mesh.
    Join,
    /// A node drains and leaves on purpose (SIGTERM), then comes back after `down_ms`.
    Leave {
        /// Which node.
        node: usize,
        /// How long until it starts again.
        down_ms: u64,
    },
    /// A disk refuses every write (full, or failing) for `ms`, then works
    /// again; its node's Raft core stops, the node exits and its supervisor
    /// restarts it, again and again while the disk refuses.
    FailDisk {
        /// Whose disk.
        target: DiskTarget,
        /// How long.
        ms: u64,
    },
    /// Every flush of a disk takes `extra_ms` longer, for `ms`.
    StallDisk {
        /// Whose disk.
        target: DiskTarget,
        /// Extra time per flush.
        extra_ms: u64,
        /// How long.
        ms: u64,
    },
}

/// Whose disk a disk fault hits, resolved when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskTarget {
    /// The leader's.
    Leader,
    /// A Raft member other than the leader: the `n`-th of them (modulo
    /// their number) in node order. Only members write to their disks.
    Follower(usize),
    /// A node's, by index.
    Node(usize),
}

impl fmt::Display for DiskTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskTarget::Leader => write!(f, "the leader's disk"),
            DiskTarget::Follower(n) => write!(f, "follower #{n}'s disk"),
            DiskTarget::Node(node) => write!(f, "node {node}'s disk"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillLeader { down_ms } => write!(f, "kill the leader for {down_ms} ms"),
            Fault::Kill { node, down_ms } => write!(f, "kill node {node} for {down_ms} ms"),
            Fault::IsolateLeader { ms } => write!(f, "isolate the leader for {ms} ms"),
            Fault::Split { minority, ms } => {
                write!(f, "split {minority:?} from the rest for {ms} ms")
            }
            Fault::OneWay { from, to, ms } => write!(f, "drop {from} -> {to} for {ms} ms"),
            Fault::SlowLinks { node, extra_ms, ms } => {
                write!(f, "slow node {node}'s links by {extra_ms} ms for {ms} ms")
            }
            Fault::Join => write!(f, "a new node joins"),
            Fault::Leave { node, down_ms } => {
                write!(f, "node {node} drains and leaves, back after {down_ms} ms")
            }
            Fault::FailDisk { target, ms } => write!(f, "{target} refuses writes for {ms} ms"),
            Fault::StallDisk {
                target,
                extra_ms,
                ms,
            } => write!(f, "{target} flushes {extra_ms} ms slower for {ms} ms"),
        }
    }
}

/// The faults of a run, with their virtual times (ms), in order.
pub fn schedule(scenario: Scenario, seed: u64, nodes: usize, virtual_ms: u64) -> Vec<(u64, Fault)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300);
    // Faults start once the mesh had time to form and stop at four fifths.
    let start = 5_000.min(virtual_ms / 5);
    let stop = virtual_ms * 4 / 5;
    let mut faults = Vec::new();
    let mut at = start;
    let nodes = nodes.max(1);
    let gap = |rng: &mut ChaCha8Rng, low: u64, high: u64| rng.gen_range(low..=high);
    loop {
        let (fault, next) = match scenario {
            Scenario::Failover => (
                Fault::KillLeader {
                    down_ms: gap(&mut rng, 1_000, 4_000),
                },
                gap(&mut rng, 4_000, 9_000),
            ),
            Scenario::Partition => {
                let ms = gap(&mut rng, 1_500, 4_000);
                let fault = match rng.gen_range(0..4) {
                    0 => Fault::IsolateLeader { ms },
                    1 if nodes >= 3 => {
                        let size = rng.gen_range(1..=(nodes - 1) / 2);
                        let mut minority: Vec<usize> = Vec::new();
                        while minority.len() < size {
                            let node = rng.gen_range(0..nodes);
                            if !minority.contains(&node) {
                                minority.push(node);
                            }
                        }
                        minority.sort_unstable();
                        Fault::Split { minority, ms }
                    }
                    2 if nodes >= 2 => {
                        let from = rng.gen_range(0..nodes);
                        let to = (from + rng.gen_range(1..nodes)) % nodes;
                        Fault::OneWay { from, to, ms }
                    }
                    _ => Fault::SlowLinks {
                        node: rng.gen_range(0..nodes),
                        extra_ms: gap(&mut rng, 50, 400),
                        ms,
                    },
                };
                (fault, gap(&mut rng, 4_000, 8_000))
            }
            Scenario::Churn => {
                let fault = match rng.gen_range(0..4) {
                    0 => Fault::Join,
                    1 => Fault::Leave {
                        node: rng.gen_range(0..nodes),
                        down_ms: gap(&mut rng, 2_000, 6_000),
                    },
                    2 => Fault::KillLeader {
                        down_ms: gap(&mut rng, 1_000, 4_000),
                    },
                    _ => Fault::Kill {
                        node: rng.gen_range(0..nodes),
                        down_ms: gap(&mut rng, 1_000, 5_000),
                    },
                };
                (fault, gap(&mut rng, 2_000, 5_000))
            }
            Scenario::Disk => {
                let ms = gap(&mut rng, 2_000, 5_000);
                let fault = match rng.gen_range(0..4) {
                    0 => Fault::FailDisk {
                        target: DiskTarget::Leader,
                        ms,
                    },
                    1 => Fault::FailDisk {
                        target: DiskTarget::Follower(rng.gen_range(0..8)),
                        ms,
                    },
                    2 => Fault::StallDisk {
                        target: DiskTarget::Leader,
                        extra_ms: gap(&mut rng, 50, 250),
                        ms,
                    },
                    _ => Fault::StallDisk {
                        target: DiskTarget::Node(rng.gen_range(0..nodes)),
                        extra_ms: gap(&mut rng, 100, 400),
                        ms,
                    },
                };
                (fault, gap(&mut rng, 3_000, 7_000))
            }
            Scenario::Scale | Scenario::Steal | Scenario::Llm => (
                Fault::KillLeader {
                    down_ms: gap(&mut rng, 1_000, 3_000),
                },
                gap(&mut rng, 15_000, 30_000),
            ),
        };
        if at >= stop {
            break;
        }
        faults.push((at, fault));
        at += next;
    }
    faults
}

/// How fast node `index`'s disk is for the whole run: instant except in
/// `disk`, where every disk takes time (a good SSD: a flush of 0.5-2.5 ms,
/// 200 MB/s) and every third node's is slow (which third comes from the
/// seed, so one of the first three nodes, the first voters, always is): a
/// flush of 10-40 ms plus up to 30 ms jitter, 20-60 MB/s, so a large entry
/// takes a slow member tens of milliseconds to make durable.
pub fn disk_model(scenario: Scenario, seed: u64, index: usize) -> DiskModel {
    if scenario != Scenario::Disk {
        return DiskModel::default();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x6469_736b ^ index as u64,
    );
    if (index as u64).wrapping_add(seed).is_multiple_of(3) {
        DiskModel {
            flush_us: rng.gen_range(10_000..=40_000),
            jitter_us: rng.gen_range(0..=30_000),
            bytes_per_ms: rng.gen_range(20_000..=60_000),
        }
    } else {
        DiskModel {
            flush_us: 500,
            jitter_us: 2_000,
            bytes_per_ms: 200_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_come_from_the_seed_and_stop_at_four_fifths() {
        for scenario in Scenario::ALL {
            let one = schedule(scenario, 7, 10, 60_000);
            assert_eq!(one, schedule(scenario, 7, 10, 60_000));
            assert!(!one.is_empty(), "{scenario} has faults");
            assert!(
                one.iter().all(|(at, _)| *at < 48_000),
                "{scenario}: {one:?}"
            );
            assert!(one.windows(2).all(|w| w[0].0 < w[1].0));
        }
        assert_ne!(
            schedule(Scenario::Partition, 1, 10, 60_000),
            schedule(Scenario::Partition, 2, 10, 60_000)
        );
        assert_eq!("churn".parse::<Scenario>(), Ok(Scenario::Churn));
        assert_eq!("disk".parse::<Scenario>(), Ok(Scenario::Disk));
        assert!("chaos"
            .parse::<Scenario>()
            .unwrap_err()
            .contains("failover"));
    }

    #[test]
    fn only_the_disk_scenario_has_slow_disks_and_disk_faults() {
        let mut failing = Vec::new();
        for seed in 0..8 {
            let models: Vec<DiskModel> = (0..7)
                .map(|i| disk_model(Scenario::Disk, seed, i))
                .collect();
            assert!(models.iter().all(|m| !m.is_instant()), "{models:?}");
            let slow = models.iter().filter(|m| m.flush_us >= 10_000).count();
            assert!((2..=3).contains(&slow), "seed {seed}: {models:?}");
            assert!(models[..3].iter().any(|m| m.flush_us >= 10_000));
            for (_, fault) in schedule(Scenario::Disk, seed, 7, 40_000) {
                match fault {
                    Fault::FailDisk { target, .. } => failing.push(target),
                    Fault::StallDisk { .. } => {}
                    other => panic!("not a disk fault: {other}"),
                }
            }
        }
        assert!(failing.contains(&DiskTarget::Leader), "{failing:?}");
        assert!(failing
            .iter()
            .any(|target| matches!(target, DiskTarget::Follower(_))));
        assert!(disk_model(Scenario::Churn, 1, 0).is_instant());
    }
}

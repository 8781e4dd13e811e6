//! The queue window: how many tasks beyond its slots a node asks the
//! leader to hold against it, so its slots never wait for the dispatch
//! round trip.
//!
//! In the spirit of a TCP receive window, the receiver measures and
//! advertises: the node knows how long a task occupies a slot (the service
//! time `S`) and how long it takes from sending outcomes to the leader until
//! fresh assignments arrive (the refill time `R`: the leader commits the
//! results, runs a placement round, commits the assignments and sends
//! them). While one refill is under way each slot finishes `R / S` more
//! tasks, and by Little's law those are exactly the tasks the leader counts
//! against the node without them running: reported but not yet committed,
//! or assigned and still on the wire. So the window is `slots * R / S` with
//! a margin, within `[min, max]`.
//!
//! A refill also has a cost of its own, about the same whatever it
//! carries: the outcomes committed, a placement round, the assignments
//! committed, each a Raft entry written on every voter. When refills are
//! quick the window above stays shallow, refills stay small and frequent,
//! and the mesh spends its CPU on entries rather than tasks (a fresh mesh
//! settled at 90-190 entries for 2,000 no-op tasks, a warm one, whose
//! windows had grown, at 36-62, and ran a third faster). So the window also
//! holds at least [`MIN_QUEUED_WORK`] of the slots' work, `slots *
//! MIN_QUEUED_WORK / S`: at most one task per slot for tasks of that
//! length or longer, 134 for no-op tasks of 0.3 ms on 2 slots.
//!
//! Short tasks get deep windows (a no-op task of 0.3 ms behind a 10 ms
//! round trip wants about a hundred per node), long ones the minimum (a
//! task of a second needs one queued task per slot at most, and a shallow
//! queue leaves work for idle peers to take). Both estimates are smoothed
//! like TCP's SRTT (gain 1/8), and a refill that takes longer than
//! [`MAX_REFILL`] (the leader had nothing to place, or was gone) is not a
//! sample.
//!
//! Pure: the caller passes the time in.

use std::time::Duration;

/// Longest refill taken as a sample; a longer wait means the leader had
/// nothing to give, not that the pipeline is slow.
pub const MAX_REFILL: Duration = Duration::from_secs(2);

/// The least work, per slot, a node's window holds once measured: a
/// refill is worth its Raft entries only if it carries about this much.
pub const MIN_QUEUED_WORK: Duration = Duration::from_millis(20);

/// The most tasks beyond its slots the leader holds against any node,
/// whatever it advertises (a fixed `--queue-depth` up to this is honoured).
pub const MAX_ADVERTISED: u32 = 4096;

/// Bounds of the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    /// Fewest tasks beyond slots (also the depth before any measurement).
    pub min: u32,
    /// Most tasks beyond slots (also the cap the leader applies to what a
    /// node advertises).
    pub max: u32,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig { min: 2, max: 256 }
    }
}

impl WindowConfig {
    /// What the leader uses for a node's advertised window: never beyond
    /// the bounds, whatever the node sent.
    pub fn bound(&self, advertised: u32) -> u32 {
        advertised.clamp(self.min, self.max.max(self.min))
    }
}

/// A node's measurements and the window they give.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueWindow {
    /// Smoothed slot time per task, µs.
    service_us: Option<u64>,
    /// Smoothed refill time, µs.
    refill_us: Option<u64>,
    /// When the outcomes not yet followed by fresh assignments were sent.
    waiting_since: Option<Duration>,
}

fn smooth(old: Option<u64>, sample: u64) -> u64 {
    match old {
        // old + (sample - old) / 8, in integers.
        Some(old) => (old.saturating_mul(7).saturating_add(sample)) / 8,
        None => sample,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl QueueWindow {
    /// A task left its slot after `took`.
    pub fn task_finished(&mut self, took: Duration) {
        self.service_us = Some(smooth(self.service_us, micros(took).max(1)));
    }

    /// Outcomes were sent to the leader at `now`; the refill clock starts
    /// unless one is already running.
    pub fn reports_sent(&mut self, now: Duration) {
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
    }

    /// Assignments arrived at `now`: the refill under way (if any) ends.
    pub fn assignments_arrived(&mut self, now: Duration) {
        if let Some(since) = self.waiting_since.take() {
            let took = now.saturating_sub(since);
            if took <= MAX_REFILL {
                self.refill_us = Some(smooth(self.refill_us, micros(took)));
            }
        }
    }

    /// The smoothed service and refill times, once both were measured.
    pub fn estimates(&self) -> Option<(Duration, Duration)> {
        Some((
            Duration::from_micros(self.service_us?),
            Duration::from_micros(self.refill_us?),
        ))
    }

    /// Tasks beyond `slots` to ask for; `None` until both times are known
    /// (the leader then uses its default depth).
    pub fn window(&self, slots: u32, config: &WindowConfig) -> Option<u32> {
        let service = u128::from(self.service_us?.max(1));
        let refill = u128::from(self.refill_us?);
        // slots * R / S, plus half again for jitter, rounded up; at least
        // slots * MIN_QUEUED_WORK / S.
        let covering = (u128::from(slots) * refill * 3).div_ceil(service * 2);
        let worth = (u128::from(slots) * MIN_QUEUED_WORK.as_micros()).div_ceil(service);
        let wanted = u32::try_from(covering.max(worth)).unwrap_or(u32::MAX);
        Some(config.bound(wanted))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn measured(service: Duration, refill: Duration, rounds: usize) -> QueueWindow {
        let mut window = QueueWindow::default();
        let mut now = Duration::from_secs(1);
        for _ in 0..rounds {
            window.task_finished(service);
            window.reports_sent(now);
            now += refill;
            window.assignments_arrived(now);
            now += Duration::from_millis(1);
        }
        window
    }

    #[test]
    fn no_window_before_both_times_are_measured() {
        let config = WindowConfig::default();
        let mut window = QueueWindow::default();
        assert_eq!(window.window(2, &config), None);
        window.task_finished(Duration::from_millis(1));
        assert_eq!(window.window(2, &config), None);
        window.assignments_arrived(Duration::from_secs(1));
        assert_eq!(
            window.window(2, &config),
            None,
            "an arrival with no send is no sample"
        );
        window.reports_sent(Duration::from_secs(1));
        window.assignments_arrived(Duration::from_millis(1010));
        assert_eq!(window.estimates().unwrap().1, Duration::from_millis(10));
        assert!(window.window(2, &config).is_some());
    }

    #[test]
    fn short_tasks_behind_a_round_trip_get_a_deep_window_long_ones_the_minimum() {
        let config = WindowConfig::default();
        let noop = measured(Duration::from_micros(300), Duration::from_millis(30), 20);
        // 1 slot * 30 ms / 0.3 ms * 1.5 = 150 covers the round trip (more
        // than the 67 tasks of 20 ms of work).
        assert_eq!(noop.window(1, &config), Some(150));
        let long = measured(Duration::from_secs(1), Duration::from_millis(10), 20);
        assert_eq!(long.window(2, &config), Some(config.min));
        let tiny = measured(Duration::from_micros(1), Duration::from_millis(50), 20);
        assert_eq!(tiny.window(8, &config), Some(config.max));
    }

    #[test]
    fn quick_refills_still_bring_enough_work_to_be_worth_their_entries() {
        let config = WindowConfig::default();
        // 2 * 1 ms / 0.3 ms * 1.5 = 10 would cover the round trip; 20 ms of
        // two slots' work is 2 * 20 ms / 0.3 ms = 133.3, rounded up.
        let quick = measured(Duration::from_micros(300), Duration::from_millis(1), 20);
        assert_eq!(quick.window(2, &config), Some(134));
        // 2 * 10 ms / 0.3 ms * 1.5 = 100 covers it; the floor is higher.
        let noop = measured(Duration::from_micros(300), Duration::from_millis(10), 20);
        assert_eq!(noop.window(2, &config), Some(134));
        // Tasks of 5 ms: 2 * 20 / 5 = 8 tasks beyond the slots.
        let short = measured(Duration::from_millis(5), Duration::from_millis(1), 20);
        assert_eq!(short.window(2, &config), Some(8));
        // Tasks of MIN_QUEUED_WORK or longer: no more than the minimum.
        let long = measured(MIN_QUEUED_WORK, Duration::from_millis(1), 20);
        assert_eq!(long.window(2, &config), Some(config.min));
    }

    #[test]
    fn a_refill_past_the_limit_is_not_a_sample() {
        let mut window = measured(Duration::from_millis(1), Duration::from_millis(10), 5);
        let before = window.estimates();
        window.reports_sent(Duration::from_secs(100));
        window
            .assignments_arrived(Duration::from_secs(100) + MAX_REFILL + Duration::from_millis(1));
        assert_eq!(window.estimates(), before);
        // The clock was consumed: the next arrival is no sample either.
        window.assignments_arrived(Duration::from_secs(200));
        assert_eq!(window.estimates(), before);
    }

    #[test]
    fn the_refill_clock_runs_from_the_first_unanswered_send() {
        let mut window = QueueWindow::default();
        window.task_finished(Duration::from_millis(1));
        window.reports_sent(Duration::from_millis(100));
        window.reports_sent(Duration::from_millis(105));
        window.assignments_arrived(Duration::from_millis(120));
        assert_eq!(window.estimates().unwrap().1, Duration::from_millis(20));
    }

    proptest! {
        #[test]
        fn the_window_stays_within_bounds_and_grows_with_the_round_trip(
            slots in 1u32..64,
            service_us in 1u64..5_000_000,
            refill_us in 0u64..2_000_000,
            extra_us in 0u64..1_000_000,
            min in 0u32..8,
            span in 0u32..1024,
        ) {
            let config = WindowConfig { min, max: min + span };
            let service = Duration::from_micros(service_us);
            let short = measured(service, Duration::from_micros(refill_us), 1);
            let long = measured(service, Duration::from_micros((refill_us + extra_us).min(2_000_000)), 1);
            let a = short.window(slots, &config).unwrap();
            let b = long.window(slots, &config).unwrap();
            prop_assert!(a >= config.min && a <= config.max);
            prop_assert!(b >= a, "a longer round trip never asks for less");
            let floor = (u128::from(slots) * MIN_QUEUED_WORK.as_micros()).div_ceil(u128::from(service_us));
            prop_assert!(u128::from(a) >= floor.min(u128::from(config.max)), "at least MIN_QUEUED_WORK of work, within the bounds");
            prop_assert!(config.bound(u32::MAX) == config.max && config.bound(0) == config.min);
        }

        #[test]
        fn smoothing_stays_between_the_samples(samples in proptest::collection::vec(1u64..10_000_000, 1..40)) {
            let mut window = QueueWindow::default();
            for &s in &samples {
                window.task_finished(Duration::from_micros(s));
            }
            let service = window.service_us.unwrap();
            prop_assert!(service >= *samples.iter().min().unwrap() - 1);
            prop_assert!(service <= *samples.iter().max().unwrap());
        }
    }
}

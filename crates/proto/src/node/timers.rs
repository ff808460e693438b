//! The node core's own timers. The core never polls: it keeps the next
//! time each periodic duty is due, adds what its parts need (a gap to
//! confirm, a late snapshot chunk, a resend, a lease to renew), and asks
//! the shell for one wake-up at the earliest (`Output::Wake`). An idle
//! follower therefore wakes only for its heartbeat and metrics.

use std::collections::BTreeMap;
use std::time::Duration;

/// The node's periodic duties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Raft's logical clock (voters and learners).
    Raft,
    /// This node's heartbeat on gossip.
    Heartbeat,
    /// This node's capacity on gossip, and a new measurement of it.
    Metrics,
    /// The master's plan tick.
    Plan,
    /// A node without a cluster looks for one, or founds one.
    Discovery,
    /// A node whose disk failed tries it again.
    Storage,
    /// The master gossips the commits it held (`publish`).
    Publish,
}

#[derive(Debug, Default)]
pub struct Timers {
    at: BTreeMap<Timer, Duration>,
}

impl Timers {
    /// Sets (or moves) a timer.
    pub fn set(&mut self, timer: Timer, at: Duration) {
        self.at.insert(timer, at);
    }

    pub fn cancel(&mut self, timer: Timer) {
        self.at.remove(&timer);
    }

    pub fn get(&self, timer: Timer) -> Option<Duration> {
        self.at.get(&timer).copied()
    }

    /// Takes the timers due at `now`, in a fixed order. A periodic duty
    /// sets itself again when it runs.
    pub fn take_due(&mut self, now: Duration) -> Vec<Timer> {
        let due: Vec<Timer> = self
            .at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in &due {
            self.at.remove(t);
        }
        due
    }

    /// The earliest timer.
    pub fn next(&self) -> Option<Duration> {
        self.at.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn due_timers_are_taken_once_and_the_earliest_is_next() {
        let mut t = Timers::default();
        t.set(Timer::Heartbeat, ms(300));
        t.set(Timer::Raft, ms(100));
        t.set(Timer::Plan, ms(100));
        assert_eq!(t.next(), Some(ms(100)));
        assert!(t.take_due(ms(99)).is_empty());
        assert_eq!(t.take_due(ms(100)), vec![Timer::Raft, Timer::Plan]);
        assert!(t.take_due(ms(100)).is_empty());
        assert_eq!(t.next(), Some(ms(300)));
        t.set(Timer::Heartbeat, ms(600));
        t.cancel(Timer::Raft);
        assert_eq!(t.next(), Some(ms(600)), "moved, not added");
        assert_eq!(t.get(Timer::Heartbeat), Some(ms(600)));
    }
}

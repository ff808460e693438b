//! The master's committed gossip, paced. Every follower receives each
//! gossip message from several mesh peers, checks it, and relays it: its
//! cost is per message far more than per byte. Under a steady stream of
//! writes the master therefore publishes what it committed at most once
//! per `every`, gathering the commits in between into one message; the
//! first commit after a quiet spell goes out at once. A follower applies a
//! write at most `every` later than it would otherwise; the write itself
//! commits on the voters as before, and the other Raft members are told
//! each commit one-to-one at once (`Direct::Committed`).

use shoal_model::LogEntry;
use std::time::Duration;

#[derive(Debug)]
pub(super) struct Paced {
    every: Duration,
    last: Option<Duration>,
    held: Vec<LogEntry>,
}

/// What `Paced::release` gives.
#[derive(Debug, PartialEq)]
pub(super) enum Release {
    /// Nothing is held.
    Nothing,
    /// Publish these now.
    Now(Vec<LogEntry>),
    /// Held until then.
    At(Duration),
}

impl Paced {
    pub fn new(every: Duration) -> Self {
        Paced {
            every,
            last: None,
            held: Vec::new(),
        }
    }

    pub fn hold(&mut self, entries: &[LogEntry]) {
        self.held.extend_from_slice(entries);
    }

    /// What is held goes out now if the last message went out at least
    /// `every` ago (or `force`: this node stops leading), else it waits.
    pub fn release(&mut self, now: Duration, force: bool) -> Release {
        if self.held.is_empty() {
            return Release::Nothing;
        }
        match self.last.map(|t| t + self.every) {
            Some(due) if now < due && !force => Release::At(due),
            _ => {
                self.last = Some(now);
                Release::Now(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::entry;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn idxs(r: Release) -> Vec<u64> {
        match r {
            Release::Now(es) => es.iter().map(|e| e.idx.0).collect(),
            other => panic!("expected entries, got {other:?}"),
        }
    }

    #[test]
    fn the_first_commit_goes_at_once_and_the_next_ones_together() {
        let mut p = Paced::new(ms(20));
        assert_eq!(p.release(ms(0), false), Release::Nothing);
        p.hold(&[entry(1)]);
        assert_eq!(idxs(p.release(ms(100), false)), [1]);
        p.hold(&[entry(2)]);
        assert_eq!(p.release(ms(105), false), Release::At(ms(120)));
        p.hold(&[entry(3), entry(4)]);
        assert_eq!(p.release(ms(110), false), Release::At(ms(120)));
        assert_eq!(idxs(p.release(ms(120), false)), [2, 3, 4]);
        // Quiet for longer than `every`: at once again.
        p.hold(&[entry(5)]);
        assert_eq!(idxs(p.release(ms(200), false)), [5]);
    }

    #[test]
    fn a_master_that_steps_down_publishes_what_it_held() {
        let mut p = Paced::new(ms(20));
        p.hold(&[entry(1)]);
        assert_eq!(idxs(p.release(ms(0), false)), [1]);
        p.hold(&[entry(2)]);
        assert_eq!(idxs(p.release(ms(1), true)), [2]);
        assert_eq!(p.release(ms(2), true), Release::Nothing);
    }
}

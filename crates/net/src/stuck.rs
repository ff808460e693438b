//! Peers whose gossip stays blocked, to be reconnected.
//!
//! gossipsub reports a peer whose send queue is full (`SlowPeer`) at each
//! of its heartbeats while messages to it are dropped. A peer that reads
//! slowly for a moment drains its queue and the reports stop; reports that
//! go on without a pause mean nothing is read at all. One way this happens:
//! gossipsub's handler for a connection gives up for good after a few
//! substream attempts (each one counts, the ones a busy host let time out
//! too) and from then on drops all gossip to that peer while the
//! connection itself stays up. A new connection gets a new handler, so
//! such a peer is disconnected and redialled. Pure: the actor passes the
//! time.

use std::collections::BTreeMap;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A pause in the reports longer than this ends a run of them.
pub const STUCK_GAP: Duration = Duration::from_secs(2);
/// Reports this long without a pause mark a peer stuck.
pub const STUCK_FOR: Duration = Duration::from_secs(15);

/// Runs of `SlowPeer` reports per peer `P`, on the caller's clock `T`,
/// and the peers whose gossip handler refused ours.
#[derive(Debug)]
pub struct Stuck<P, T> {
    /// Peer -> (first, last) report of its current run.
    runs: BTreeMap<P, (T, T)>,
    /// Peer -> when it was last reconnected for refusing gossip.
    refused: BTreeMap<P, T>,
}

impl<P, T> Default for Stuck<P, T> {
    fn default() -> Self {
        Stuck {
            runs: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }
}

impl<P, T> Stuck<P, T>
where
    P: Ord + Copy,
    T: Copy + Ord + Add<Duration, Output = T> + Sub<T, Output = Duration>,
{
    /// A report that gossip to `peer` was dropped, at `now`: whether its
    /// run has lasted `STUCK_FOR` (then the run starts over, so that a
    /// peer is reconnected at most once in that time).
    pub fn report(&mut self, peer: P, now: T) -> bool {
        // Runs that ended are forgotten: the map holds only peers
        // reported within the gap.
        self.runs.retain(|_, (_, last)| now < *last + STUCK_GAP);
        let (first, last) = self.runs.entry(peer).or_insert((now, now));
        *last = now;
        if now - *first < STUCK_FOR {
            return false;
        }
        self.runs.remove(&peer);
        true
    }

    /// `peer` refused gossip on a connection (gossipsub's
    /// `GossipsubNotSupported`): every shoal node speaks it, so its
    /// handler gave up. Whether to reconnect it: at most once per
    /// `STUCK_FOR`, so that a peer that truly does not speak it is not
    /// dialled in a loop.
    pub fn refused(&mut self, peer: P, now: T) -> bool {
        self.refused.retain(|_, at| now < *at + STUCK_FOR);
        if self.refused.contains_key(&peer) {
            return false;
        }
        self.refused.insert(peer, now);
        true
    }

    /// Forgets `peer`'s run: it disconnected.
    pub fn forget(&mut self, peer: &P) {
        self.runs.remove(peer);
    }

    /// Peers held now (in a run, or refused within `STUCK_FOR`).
    pub fn held(&self) -> usize {
        self.runs.len() + self.refused.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(100);
    const BEAT: Duration = Duration::from_millis(200);

    /// Reports for `peer` every gossip heartbeat from `from` for `span`;
    /// the times a reconnect was asked.
    fn reports(
        s: &mut Stuck<u8, Duration>,
        peer: u8,
        from: Duration,
        span: Duration,
    ) -> Vec<Duration> {
        let mut asked = Vec::new();
        let mut t = from;
        while t <= from + span {
            if s.report(peer, t) {
                asked.push(t);
            }
            t += BEAT;
        }
        asked
    }

    #[test]
    fn a_peer_reported_without_a_pause_is_stuck_once_per_span() {
        let mut s = Stuck::default();
        let asked = reports(&mut s, 1, T0, Duration::from_secs(31));
        // The run starts over with the report after the one that ended it.
        assert_eq!(asked, [T0 + STUCK_FOR, T0 + STUCK_FOR + BEAT + STUCK_FOR]);
    }

    #[test]
    fn a_pause_longer_than_the_gap_starts_the_run_over() {
        let mut s = Stuck::default();
        let first = STUCK_FOR - Duration::from_secs(1);
        assert!(reports(&mut s, 1, T0, first).is_empty());
        let again = T0 + first + STUCK_GAP + BEAT;
        assert!(reports(&mut s, 1, again, first).is_empty());
        // A shorter pause keeps the run.
        let mut s = Stuck::default();
        assert!(reports(&mut s, 1, T0, first).is_empty());
        let soon = T0 + first + STUCK_GAP - BEAT;
        assert_eq!(reports(&mut s, 1, soon, first), [soon]);
    }

    #[test]
    fn peers_run_apart_and_ended_runs_are_forgotten() {
        let mut s = Stuck::default();
        assert!(!s.report(1, T0));
        assert!(!s.report(2, T0 + Duration::from_secs(10)));
        // Peer 1's run ended; only peer 2 is held.
        assert_eq!(s.held(), 1);
        assert!(!s.report(2, T0 + Duration::from_secs(11)));
        s.forget(&2);
        assert_eq!(s.held(), 0);
        // Forgotten, peer 2 starts over.
        let asked = reports(&mut s, 2, T0 + Duration::from_secs(12), STUCK_FOR);
        assert_eq!(asked, [T0 + Duration::from_secs(12) + STUCK_FOR]);
    }

    #[test]
    fn a_peer_that_refuses_gossip_is_reconnected_once_per_span() {
        let mut s = Stuck::default();
        assert!(s.refused(1, T0));
        assert!(!s.refused(1, T0 + BEAT));
        assert!(s.refused(2, T0 + BEAT), "another peer is apart");
        assert!(!s.refused(1, T0 + STUCK_FOR - BEAT));
        assert!(s.refused(1, T0 + STUCK_FOR));
        assert!(s.refused(2, T0 + BEAT + STUCK_FOR));
        // Marks that ran out are let go: two peers, two marks.
        assert_eq!(s.held(), 2);
    }
}

//! Detects two live processes with one identity (a copied data directory).
//!
//! To libp2p both processes are one peer, so gossip and requests meant for
//! one may reach the other. What does reach the right process is the reply
//! to a request it sent itself: it travels back on the stream the request
//! came on. So every node greets the peers it is connected to in turn,
//! at most `GREET_PER_ROUND` of them a second (each peer every second in a
//! small cluster, every ⌈N/8⌉ s among N peers), with its incarnation (a
//! nonce drawn at start) and its start time, and the peer answers each
//! greeting with a verdict. What a node spends on greetings, sent and
//! answered, so stays flat as the cluster grows, and a copy is still
//! found well within `FORGET_AFTER`.
//!
//! Two incarnations of one peer are both live when each was heard after
//! the other was first heard. A restart does not look like that: the old
//! process is never heard again once the new one speaks. Of two live
//! incarnations, the one started later (ties: the larger nonce) is told to
//! stop; every observer reaches the same verdict because it compares the
//! same declared values. The verdict carries the other incarnation's
//! latest greeting as evidence (`E`, a signed greeting on a real node), so
//! the process told to stop can check it was not lied to.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// What a node declares about its own process in each greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incarnation {
    pub nonce: u64,
    pub started_ms: u64,
}

impl Incarnation {
    /// The later of two processes; it is the one to refuse.
    pub fn is_later_than(&self, other: &Incarnation) -> bool {
        (self.started_ms, self.nonce) > (other.started_ms, other.nonce)
    }
}

/// The reply to a greeting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<E> {
    Ok,
    /// Another live process has this identity and started first; this is
    /// its latest greeting.
    Duplicate {
        evidence: E,
    },
}

#[derive(Clone, Debug)]
struct Heard<T, E> {
    first: T,
    last: T,
    /// Its latest greeting.
    evidence: E,
}

/// Incarnations remembered per peer at most.
pub const MAX_INCARNATIONS: usize = 8;

/// Forgotten after this long unheard; bounds memory to the live peers.
pub const FORGET_AFTER: Duration = Duration::from_secs(30);

/// Peers greeted per round (a round a second) at most.
pub const GREET_PER_ROUND: usize = 8;

/// The peers to greet this round: the `most` that follow `after` in
/// order, wrapping around, each at most once. Every peer is greeted
/// once in every ⌈N / most⌉ rounds, whoever joins or leaves meanwhile.
pub fn greeting_round<P: Ord + Clone>(peers: &[P], after: Option<&P>, most: usize) -> Vec<P> {
    let mut sorted: Vec<&P> = peers.iter().collect();
    sorted.sort();
    let start = after.map_or(0, |a| sorted.partition_point(|p| *p <= a));
    let n = sorted.len();
    (0..n.min(most))
        .map(|i| sorted[(start + i) % n].clone())
        .collect()
}

/// Per peer, the incarnations heard recently. `T` is the caller's clock,
/// `E` what a greeting carries as evidence.
#[derive(Debug)]
pub struct IdentityWatch<P, T, E> {
    heard: HashMap<P, Incarnations<T, E>>,
}

/// What was heard of one peer: each incarnation, when, and its greeting.
type Incarnations<T, E> = Vec<(Incarnation, Heard<T, E>)>;

impl<P, T, E> Default for IdentityWatch<P, T, E> {
    fn default() -> Self {
        IdentityWatch {
            heard: HashMap::new(),
        }
    }
}

impl<P, T, E> IdentityWatch<P, T, E>
where
    P: Eq + Hash + Clone,
    T: Copy + Ord + std::ops::Sub<Output = Duration>,
    E: Clone,
{
    /// Records a greeting from `peer` and returns the verdict for it.
    pub fn greet(&mut self, peer: &P, inc: Incarnation, evidence: E, now: T) -> Verdict<E> {
        let list = self.heard.entry(peer.clone()).or_default();
        list.retain(|(_, h)| now - h.last < FORGET_AFTER);
        let (first, last) = match list.iter().position(|(i, _)| *i == inc) {
            Some(p) => {
                list[p].1.last = now;
                list[p].1.evidence = evidence;
                (list[p].1.first, now)
            }
            None => {
                if list.len() >= MAX_INCARNATIONS {
                    // A peer inventing incarnations does not grow this:
                    // the one heard longest ago goes.
                    if let Some(old) = (0..list.len()).min_by_key(|i| list[*i].1.last) {
                        list.swap_remove(old);
                    }
                }
                let h = Heard {
                    first: now,
                    last: now,
                    evidence,
                };
                list.push((inc, h));
                (now, now)
            }
        };
        for (other, h) in list.iter() {
            let both_live = *other != inc && h.last > first && last > h.first;
            if both_live && inc.is_later_than(other) {
                return Verdict::Duplicate {
                    evidence: h.evidence.clone(),
                };
            }
        }
        Verdict::Ok
    }

    /// Drops what was heard of a peer no longer connected at all.
    pub fn forget_stale(&mut self, now: T) {
        self.heard.retain(|_, list| {
            list.retain(|(_, h)| now - h.last < FORGET_AFTER);
            !list.is_empty()
        });
    }

    pub fn peers(&self) -> usize {
        self.heard.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Ms(u64);
    impl std::ops::Sub for Ms {
        type Output = Duration;
        fn sub(self, o: Ms) -> Duration {
            Duration::from_millis(self.0.saturating_sub(o.0))
        }
    }

    const A: Incarnation = Incarnation {
        nonce: 7,
        started_ms: 1_000,
    };
    const B: Incarnation = Incarnation {
        nonce: 3,
        started_ms: 2_000,
    };

    #[test]
    fn greeting_rounds_take_every_peer_in_turn() {
        let peers: Vec<u32> = (0..20).collect();
        let mut after = None;
        let mut greeted = vec![0; 20];
        // Three rounds of 8 cover 20 peers once, and 4 of them twice.
        for _ in 0..3 {
            let round = greeting_round(&peers, after.as_ref(), 8);
            assert_eq!(round.len(), 8);
            for p in &round {
                greeted[*p as usize] += 1;
            }
            after = round.last().copied();
        }
        assert!(greeted.iter().all(|g| *g >= 1), "{greeted:?}");
        assert_eq!(greeted.iter().sum::<i32>(), 24);
        // Few peers: each once a round.
        assert_eq!(greeting_round(&[5, 1, 3], Some(&3), 8), vec![5, 1, 3]);
        assert_eq!(greeting_round::<u32>(&[], Some(&3), 8), Vec::<u32>::new());
        // The peer last greeted left: the round goes on from where it was.
        assert_eq!(greeting_round(&[1, 2, 6, 9], Some(&4), 2), vec![6, 9]);
        assert_eq!(greeting_round(&[1, 2, 6, 9], Some(&9), 2), vec![1, 2]);
    }

    #[test]
    fn a_restart_is_not_a_duplicate() {
        let mut w: IdentityWatch<&str, Ms, Incarnation> = IdentityWatch::default();
        for t in 0..5 {
            assert_eq!(w.greet(&"x", A, A, Ms(t * 1000)), Verdict::Ok);
        }
        // The old process is never heard again once the new one speaks.
        for t in 5..10 {
            assert_eq!(w.greet(&"x", B, B, Ms(t * 1000 + 300)), Verdict::Ok);
        }
    }

    #[test]
    fn two_live_processes_refuse_the_later_one_only() {
        let mut w: IdentityWatch<&str, Ms, Incarnation> = IdentityWatch::default();
        assert_eq!(w.greet(&"x", A, A, Ms(0)), Verdict::Ok);
        // The copy's first greeting: the original has not been heard since.
        assert_eq!(w.greet(&"x", B, B, Ms(100)), Verdict::Ok);
        // The original speaks again: both are live now. It stays.
        assert_eq!(w.greet(&"x", A, A, Ms(1000)), Verdict::Ok);
        assert_eq!(
            w.greet(&"x", B, B, Ms(1100)),
            Verdict::Duplicate { evidence: A }
        );
        assert_eq!(w.greet(&"x", A, A, Ms(2000)), Verdict::Ok);
    }

    #[test]
    fn the_verdict_does_not_depend_on_who_was_heard_first() {
        let mut w: IdentityWatch<&str, Ms, Incarnation> = IdentityWatch::default();
        // The later-started process happens to be heard first here.
        w.greet(&"x", B, B, Ms(0));
        w.greet(&"x", A, A, Ms(100));
        assert_eq!(w.greet(&"x", A, A, Ms(1100)), Verdict::Ok);
        assert_eq!(
            w.greet(&"x", B, B, Ms(1000)),
            Verdict::Duplicate { evidence: A }
        );
    }

    #[test]
    fn a_start_time_tie_is_broken_by_the_nonce() {
        let twin = Incarnation {
            nonce: 9,
            started_ms: A.started_ms,
        };
        let mut w: IdentityWatch<&str, Ms, Incarnation> = IdentityWatch::default();
        w.greet(&"x", A, A, Ms(0));
        w.greet(&"x", twin, twin, Ms(10));
        w.greet(&"x", A, A, Ms(20));
        assert_eq!(
            w.greet(&"x", twin, twin, Ms(30)),
            Verdict::Duplicate { evidence: A }
        );
        assert_eq!(w.greet(&"x", A, A, Ms(40)), Verdict::Ok);
    }

    #[test]
    fn a_peer_cannot_grow_its_list_without_bound() {
        let mut w: IdentityWatch<&str, Ms, Incarnation> = IdentityWatch::default();
        for n in 0..100u64 {
            let inc = Incarnation {
                nonce: n,
                started_ms: n,
            };
            w.greet(&"x", inc, inc, Ms(n));
        }
        assert_eq!(w.heard[&"x"].len(), MAX_INCARNATIONS);
    }

    #[test]
    fn peers_are_independent_and_forgotten_when_silent() {
        let mut w: IdentityWatch<&str, Ms, Incarnation> = IdentityWatch::default();
        w.greet(&"x", A, A, Ms(0));
        w.greet(&"y", B, B, Ms(10));
        w.greet(&"x", A, A, Ms(20));
        assert_eq!(w.greet(&"y", B, B, Ms(30)), Verdict::Ok);
        assert_eq!(w.peers(), 2);
        w.forget_stale(Ms(31_000));
        assert_eq!(w.peers(), 0);
        // A long-gone incarnation does not make a newcomer a duplicate.
        w.greet(&"x", A, A, Ms(40_000));
        assert_eq!(w.greet(&"x", B, B, Ms(100_000)), Verdict::Ok);
    }
}

//! Which addresses to dial now. Every address learnt (explicit peers,
//! mDNS, identify, members in State) is dialled until its peer is
//! connected, then again whenever that peer drops, with a backoff that
//! doubles from `REDIAL_MIN` to `REDIAL_MAX` and starts over once the peer
//! is connected. Pure: the actor passes the time, who is connected and
//! to whom a dial is still pending.
//!
//! A pair of peers should hold one connection: gossipsub spreads a peer's
//! messages over all of its connections, and each costs its own
//! keep-alives and buffers (at fifty hosts, two to six connections a pair
//! carried a third of a follower's bytes; `bench/README.md`). So a peer
//! with a dial pending is not dialled again, a peer's address learnt once
//! more does not make it due again, and of two peers that know each other
//! the smaller id dials first: the larger waits `ANSWER_WAIT` for the
//! connection to come to it (`first_dial_wait`). A frame for a peer not
//! connected still makes its own dial (libp2p-stream's, request-response's)
//! at once, which may cross the peer's.
//!
//! The schedule is written here rather than taken from a crate: `backoff`
//! is unmaintained (RUSTSEC-2025-0012), and `backon` and `tokio-retry`
//! retry one future each on tokio's clock, where this keeps a schedule per
//! address in a map on the caller's clock, so that it is tested without
//! sockets or sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::Add;
use std::time::Duration;

pub const REDIAL_MIN: Duration = Duration::from_millis(500);
/// Kept short: a LAN has few hosts, and a host back from a cut link or a
/// partition is redialled within a second (chaos runs measured 5 s
/// median convergence after an 8 s partition with a 15 s cap, 2.7 s with
/// 3 s).
pub const REDIAL_MAX: Duration = Duration::from_secs(1);
/// Addresses kept at most; a LAN cluster needs far fewer.
pub const MAX_ADDRESSES: usize = 4096;
/// How long the larger of two peers that know each other waits for the
/// smaller one's dial before it dials itself: the bound on a connection's
/// setup (`transport::CONNECT_TIMEOUT`), so that a dial of the smaller
/// that is on its way is not crossed.
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// How long after its peer is learnt or lost an address is first dialled,
/// from this node's id and the peer's: at once by the smaller, after
/// `ANSWER_WAIT` by the larger (a dial answered by a connection already
/// made is not made). A peer whose id is not known yet is dialled at once.
pub fn first_dial_wait<P: Ord>(local: &P, peer: Option<&P>) -> Duration {
    match peer {
        Some(p) if p < local => ANSWER_WAIT,
        _ => Duration::ZERO,
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    next: T,
    backoff: Duration,
    /// `first_dial_wait` for this address.
    wait: Duration,
}

/// Addresses `A` to keep dialled, on the caller's clock `T`.
#[derive(Debug)]
pub struct Redials<A, T> {
    entries: HashMap<A, Entry<T>>,
}

impl<A, T> Default for Redials<A, T> {
    fn default() -> Self {
        Redials {
            entries: HashMap::new(),
        }
    }
}

impl<A: Eq + Hash + Clone, T: Copy + Ord + Add<Duration, Output = T>> Redials<A, T> {
    /// Dials `addr` from now on: after `wait` (`first_dial_wait`) if it
    /// is new, else on its schedule.
    pub fn add(&mut self, addr: A, now: T, wait: Duration) {
        if self.entries.len() >= MAX_ADDRESSES && !self.entries.contains_key(&addr) {
            return;
        }
        self.entries.entry(addr).or_insert(Entry {
            next: now + wait,
            backoff: REDIAL_MIN,
            wait,
        });
    }

    /// Replaces every address for which `same_peer` holds with `addr`: a
    /// peer's newest address is the one to dial. An address already held
    /// keeps its schedule: learning it again is no reason to dial.
    pub fn replace(&mut self, addr: A, now: T, wait: Duration, same_peer: impl Fn(&A) -> bool) {
        self.entries.retain(|a, _| *a == addr || !same_peer(a));
        self.add(addr, now, wait);
    }

    /// Dials every address for which `same_peer` holds at once, from the
    /// shortest backoff: its peer fell silent, and its connection was
    /// dropped to be made afresh.
    pub fn retry_now(&mut self, now: T, same_peer: impl Fn(&A) -> bool) {
        for (a, e) in self.entries.iter_mut() {
            if same_peer(a) {
                e.next = now;
                e.backoff = REDIAL_MIN;
            }
        }
    }

    pub fn remove(&mut self, addr: &A) {
        self.entries.remove(addr);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The addresses to dial now. `connected` says whether an address's
    /// peer is connected: its backoff then starts over, and once it drops
    /// it is dialled after its `wait`. `dialing` says whether a dial to
    /// its peer is pending: it is not dialled again until that ends (a
    /// connection's setup is bounded), and then at once if it is due.
    pub fn due(
        &mut self,
        now: T,
        connected: impl Fn(&A) -> bool,
        dialing: impl Fn(&A) -> bool,
    ) -> Vec<A> {
        let mut out = Vec::new();
        for (addr, e) in self.entries.iter_mut() {
            if connected(addr) {
                e.backoff = REDIAL_MIN;
                e.next = now + e.wait;
                continue;
            }
            if e.next <= now && !dialing(addr) {
                e.next = now + e.backoff;
                e.backoff = (e.backoff * 2).min(REDIAL_MAX);
                out.push(addr.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const NOW: Duration = Duration::ZERO;

    /// The addresses due at `t` with nothing connected and no dial pending.
    fn due(r: &mut Redials<&'static str, Duration>, t: u64) -> Vec<&'static str> {
        let mut d = r.due(ms(t), |_| false, |_| false);
        d.sort();
        d
    }

    #[test]
    fn an_unreachable_address_is_dialled_with_a_doubling_backoff_to_the_cap() {
        let mut r = Redials::default();
        r.add("a", NOW, NOW);
        let mut dialled_at = Vec::new();
        for t in (0..=12_000).step_by(250) {
            if !due(&mut r, t).is_empty() {
                dialled_at.push(t);
            }
        }
        assert_eq!(&dialled_at[..5], [0, 500, 1500, 2500, 3500]);
        assert_eq!(dialled_at[5] - dialled_at[4], 1000, "capped");
    }

    #[test]
    fn a_connection_resets_the_backoff_and_a_drop_is_redialled_soon() {
        let mut r = Redials::default();
        r.add("a", NOW, NOW);
        for t in [0, 500, 1500] {
            assert_eq!(due(&mut r, t), ["a"]);
        }
        assert!(r.due(ms(4000), |_| true, |_| false).is_empty(), "connected");
        // It drops: redialled at once, then from the minimum.
        assert_eq!(due(&mut r, 4000), ["a"]);
        assert!(due(&mut r, 4400).is_empty());
        assert_eq!(due(&mut r, 4500), ["a"]);
    }

    #[test]
    fn a_peers_newest_address_replaces_the_old_ones() {
        let mut r = Redials::default();
        r.add("p@1", NOW, NOW);
        r.add("p@2", NOW, NOW);
        r.add("q@1", NOW, NOW);
        r.replace("p@3", ms(10), NOW, |a| a.starts_with("p@"));
        assert_eq!(due(&mut r, 10), ["p@3", "q@1"]);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn an_address_learnt_again_keeps_its_schedule() {
        let mut r = Redials::default();
        r.add("p@1", NOW, NOW);
        r.add("p@2", NOW, NOW);
        assert_eq!(due(&mut r, 0), ["p@1", "p@2"]);
        // mDNS or identify tells of p@1 again while its dial is pending.
        r.replace("p@1", ms(100), NOW, |a| a.starts_with("p@"));
        assert!(due(&mut r, 100).is_empty(), "not due again at once");
        assert_eq!(due(&mut r, 500), ["p@1"], "on its schedule");
        assert_eq!(r.len(), 1, "the peer's other address is gone");
        r.add("p@1", ms(600), NOW);
        assert!(due(&mut r, 600).is_empty());
    }

    #[test]
    fn a_peer_with_a_dial_pending_is_not_dialled_again_until_it_ends() {
        let mut r = Redials::default();
        r.add("a", NOW, NOW);
        assert_eq!(due(&mut r, 0), ["a"]);
        // The dial is pending for two seconds (a busy host's handshake).
        for t in [500, 1000, 1500, 2000] {
            assert!(r.due(ms(t), |_| false, |_| true).is_empty(), "at {t}");
        }
        // It failed: the address is dialled at once, on the backoff it had.
        assert_eq!(due(&mut r, 2250), ["a"]);
        assert!(due(&mut r, 2500).is_empty());
        assert_eq!(due(&mut r, 3250), ["a"]);
    }

    #[test]
    fn of_two_peers_the_smaller_id_dials_first_and_the_larger_waits() {
        assert_eq!(first_dial_wait(&2, Some(&7)), Duration::ZERO);
        assert_eq!(first_dial_wait(&7, Some(&2)), ANSWER_WAIT);
        assert_eq!(first_dial_wait(&7, None), Duration::ZERO, "id unknown");
        // The larger side: not dialled at once, nor at once after a drop.
        let wait = first_dial_wait(&7, Some(&2));
        let mut r = Redials::default();
        r.add("2@a", NOW, wait);
        assert!(due(&mut r, 0).is_empty());
        assert!(r.due(ms(1000), |_| true, |_| false).is_empty(), "it came");
        assert!(due(&mut r, 1250).is_empty(), "dropped: waits again");
        let waited = ms(1000) + ANSWER_WAIT;
        assert_eq!(due(&mut r, waited.as_millis() as u64), ["2@a"]);
    }

    #[test]
    fn a_silent_peer_is_redialled_at_once_from_the_shortest_backoff() {
        let mut r = Redials::default();
        r.add("p@1", NOW, NOW);
        r.add("q@1", NOW, NOW);
        for t in [0, 500, 1500] {
            due(&mut r, t);
        }
        assert!(due(&mut r, 1600).is_empty());
        r.retry_now(ms(1600), |a| a.starts_with("p@"));
        assert_eq!(due(&mut r, 1600), ["p@1"]);
        assert_eq!(due(&mut r, 2100), ["p@1"], "then 500 ms later");
    }
}

//! Which addresses to dial now. The addresses of members (the node asks)
//! and explicit peers are dialled until their peer is connected, then
//! again whenever that peer drops, with a backoff that doubles from
//! `REDIAL_MIN` to `REDIAL_MAX` and starts over once the peer is connected.
//!
//! Peers found by mDNS or identify are not all kept connected: that is N
//! squared connections in a cluster of N. A node dials them only while it
//! has fewer than `WANT_PEERS` connections, a few at a time, each with a
//! backoff capped at `DISCOVERED_MAX`: enough to hear the cluster's
//! gossip (and to find a cluster before it has one); every other
//! connection is made when a message is sent. A member keeps every node
//! connected (it hears all of them); a follower, the members and a few
//! more. Pure: the actor passes the time and who is connected.

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
/// Connections a node keeps at least, from the peers discovery found.
pub const WANT_PEERS: usize = 8;
/// A discovered peer whose dials keep failing is tried this seldom.
pub const DISCOVERED_MAX: Duration = Duration::from_secs(30);
/// Addresses kept at most; a LAN cluster needs far fewer.
pub const MAX_ADDRESSES: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    next: T,
    backoff: Duration,
}

/// Addresses `A` to keep dialled, on the caller's clock `T`.
#[derive(Debug)]
pub struct Redials<A, T> {
    entries: HashMap<A, Entry<T>>,
    cap: Duration,
}

impl<A, T> Default for Redials<A, T> {
    fn default() -> Self {
        Redials::with_cap(REDIAL_MAX)
    }
}

impl<A, T> Redials<A, T> {
    /// Backoffs double up to `cap`.
    pub fn with_cap(cap: Duration) -> Self {
        Redials {
            entries: HashMap::new(),
            cap,
        }
    }
}

impl<A: Eq + Hash + Clone, T: Copy + Ord + Add<Duration, Output = T>> Redials<A, T> {
    /// Dials `addr` from now on (at once, if it is new).
    pub fn add(&mut self, addr: A, now: T) {
        if self.entries.len() >= MAX_ADDRESSES && !self.entries.contains_key(&addr) {
            return;
        }
        self.entries.entry(addr).or_insert(Entry {
            next: now,
            backoff: REDIAL_MIN,
        });
    }

    /// Replaces every address for which `same_peer` holds with `addr`: a
    /// peer's newest address is the one to dial.
    pub fn replace(&mut self, addr: A, now: T, same_peer: impl Fn(&A) -> bool) {
        self.entries.retain(|a, _| !same_peer(a));
        self.entries.insert(
            addr,
            Entry {
                next: now,
                backoff: REDIAL_MIN,
            },
        );
    }

    /// Dials every address for which `same_peer` holds at once, from the
    /// shortest backoff: its peer fell silent, and its connection was
    /// dropped to be made afresh.
    pub fn retry_now(&mut self, now: T, same_peer: impl Fn(&A) -> bool) {
        for (a, e) in self.entries.iter_mut() {
            if same_peer(a) {
                *e = Entry {
                    next: now,
                    backoff: REDIAL_MIN,
                };
            }
        }
    }

    pub fn remove(&mut self, addr: &A) {
        self.entries.remove(addr);
    }

    /// Whether an address for which `same_peer` holds is here.
    pub fn has(&self, same_peer: impl Fn(&A) -> bool) -> bool {
        self.entries.keys().any(same_peer)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The addresses to dial now; `connected` says whether an address's
    /// peer is connected (its backoff then starts over).
    pub fn due(&mut self, now: T, connected: impl Fn(&A) -> bool) -> Vec<A> {
        self.due_at_most(now, usize::MAX, connected)
    }

    /// As `due`, at most `limit` of them; the others keep their turn.
    pub fn due_at_most(&mut self, now: T, limit: usize, connected: impl Fn(&A) -> bool) -> Vec<A> {
        let mut out = Vec::new();
        for (addr, e) in self.entries.iter_mut() {
            if connected(addr) {
                e.backoff = REDIAL_MIN;
                continue;
            }
            if e.next <= now && out.len() < limit {
                e.next = now + e.backoff;
                e.backoff = (e.backoff * 2).min(self.cap);
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

    #[test]
    fn an_unreachable_address_is_dialled_with_a_doubling_backoff_to_the_cap() {
        let mut r: Redials<&str, Duration> = Redials::default();
        r.add("a", ms(0));
        let mut dialled_at = Vec::new();
        let mut now = ms(0);
        while now <= ms(12_000) {
            if !r.due(now, |_| false).is_empty() {
                dialled_at.push(now.as_millis());
            }
            now += ms(250);
        }
        assert_eq!(&dialled_at[..5], [0, 500, 1500, 2500, 3500]);
        assert_eq!(dialled_at[5] - dialled_at[4], 1000, "capped");
    }

    #[test]
    fn a_connection_resets_the_backoff_and_a_drop_is_redialled_soon() {
        let mut r: Redials<&str, Duration> = Redials::default();
        r.add("a", ms(0));
        for t in [0, 500, 1500] {
            assert_eq!(r.due(ms(t), |_| false), ["a"]);
        }
        assert!(r.due(ms(4000), |_| true).is_empty(), "connected");
        // It drops: redialled at its last schedule, then from the minimum.
        assert_eq!(r.due(ms(4000), |_| false), ["a"]);
        assert!(r.due(ms(4400), |_| false).is_empty());
        assert_eq!(r.due(ms(4500), |_| false), ["a"]);
    }

    #[test]
    fn a_peers_newest_address_replaces_the_old_ones() {
        let mut r: Redials<&str, Duration> = Redials::default();
        r.add("p@1", ms(0));
        r.add("p@2", ms(0));
        r.add("q@1", ms(0));
        r.replace("p@3", ms(10), |a| a.starts_with("p@"));
        let mut due = r.due(ms(10), |_| false);
        due.sort();
        assert_eq!(due, ["p@3", "q@1"]);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn discovered_peers_are_dialled_a_few_at_a_time_and_ever_more_seldom() {
        let mut r: Redials<u32, Duration> = Redials::with_cap(DISCOVERED_MAX);
        for a in 0..20 {
            r.add(a, ms(0));
        }
        let first = r.due_at_most(ms(0), 8, |_| false);
        assert_eq!(first.len(), 8);
        // The other twelve keep their turn: dialled next.
        let second = r.due_at_most(ms(0), 8, |_| false);
        assert_eq!(second.len(), 8);
        assert!(second.iter().all(|a| !first.contains(a)));
        // Connected peers are not dialled, and reset their backoff.
        let up = |a: &u32| first.contains(a);
        assert_eq!(r.due_at_most(ms(0), 20, up).len(), 4);
        // One never answers: its dials spread out to the cap.
        let mut dialled_at = Vec::new();
        let mut r: Redials<u32, Duration> = Redials::with_cap(DISCOVERED_MAX);
        r.add(7, ms(0));
        for t in (0..=120_000).step_by(250) {
            if !r.due_at_most(ms(t), 1, |_| false).is_empty() {
                dialled_at.push(t);
            }
        }
        let gaps: Vec<u64> = dialled_at.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&gaps[..6], [500, 1000, 2000, 4000, 8000, 16000]);
        assert!(gaps[6..].iter().all(|g| *g == 30_000), "{gaps:?}");
    }

    #[test]
    fn a_silent_peer_is_redialled_at_once_from_the_shortest_backoff() {
        let mut r: Redials<&str, Duration> = Redials::default();
        r.add("p@1", ms(0));
        r.add("q@1", ms(0));
        for t in [0, 500, 1500] {
            r.due(ms(t), |_| false);
        }
        assert!(r.due(ms(1600), |_| false).is_empty());
        r.retry_now(ms(1600), |a| a.starts_with("p@"));
        assert_eq!(r.due(ms(1600), |_| false), ["p@1"]);
        assert_eq!(r.due(ms(2100), |_| false), ["p@1"], "then 500 ms later");
    }
}

//! Which addresses to dial now. Every address learnt (explicit peers,
//! mDNS, identify, members in State) is dialled until its peer is
//! connected, then again whenever that peer drops, with a backoff that
//! doubles from `REDIAL_MIN` to `REDIAL_MAX` and starts over once the peer
//! is connected. Pure: the actor passes the time and who is connected.
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

#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    next: T,
    backoff: Duration,
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

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The addresses to dial now; `connected` says whether an address's
    /// peer is connected (its backoff then starts over).
    pub fn due(&mut self, now: T, connected: impl Fn(&A) -> bool) -> Vec<A> {
        let mut out = Vec::new();
        for (addr, e) in self.entries.iter_mut() {
            if connected(addr) {
                e.backoff = REDIAL_MIN;
                continue;
            }
            if e.next <= now {
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

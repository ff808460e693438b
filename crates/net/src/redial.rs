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
//! A node keeps connections to the peers it was asked to (explicit peers,
//! members in State: a follower talks to those) and to a few of the others
//! it found (mDNS, identify, a frame's addressee): the `FOUND_PICKS` that
//! rank first by a hash of the pair both ends compute alike (`rank`),
//! passing over those its dials fail to reach. The picks do not depend on
//! the order peers were found in, so no peer draws everyone's dials for
//! having started first. At fifty hosts mDNS finds every host, and a
//! connection to each cost every follower sockets, keep-alives and
//! crossed duplicate connections that grew with the cluster; a gossip mesh
//! needs six peers (`bench/README.md`). A connection this node made that
//! it has no reason to keep is closed once idle (`to_close`).
//!
//! The schedule is written here rather than taken from a crate: `backoff`
//! is unmaintained (RUSTSEC-2025-0012), and `backon` and `tokio-retry`
//! retry one future each on tokio's clock, where this keeps a schedule per
//! address in a map on the caller's clock, so that it is tested without
//! sockets or sleeping.

use std::collections::{HashMap, HashSet};
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
/// Found peers a node keeps dialled. With the peers that pick it and its
/// members, a follower holds about a dozen: enough for a gossip mesh (six)
/// and its lazy peers.
pub const FOUND_PICKS: usize = 6;

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

/// Where a found peer stands among those a node may dial: a hash of the
/// pair, the same from either end, so that the peers one ranks first tend
/// to rank it first too.
pub fn rank(a: &[u8], b: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let d = Sha256::new().chain_update(lo).chain_update(hi).finalize();
    u64::from_be_bytes(d[..8].try_into().expect("eight bytes"))
}

/// A connection this node made is closed, if it has no reason to be
/// kept, once no frame went to its peer for this long: longer than a
/// lane's writer waits before it closes its lane (60 s), so that no lane
/// of ours is cut.
pub const IDLE_FOR: Duration = Duration::from_secs(90);

/// Of the connections this node made, `(connection, peer)`, which to
/// close now. A peer sent a frame within `idle_for` (`IDLE_FOR` unless a
/// test says otherwise; `last_sent`) keeps them all. Of the rest, a
/// connection to a peer reached over another as well (`open` counts a
/// peer's connections) is closed, and so is the
/// last one to a peer not `kept` (asked for, picked, or in the gossip
/// mesh). Without this, every replica that answered a joiner, every peer
/// a frame ever went to, and every peer once picked would stay connected
/// for good: gossipsub's streams keep every connection busy.
pub fn to_close<C: Copy, P: Eq + Hash + Clone, T: Copy + Ord + Add<Duration, Output = T>>(
    made: &[(C, P)],
    kept: impl Fn(&P) -> bool,
    last_sent: impl Fn(&P) -> Option<T>,
    open: impl Fn(&P) -> usize,
    now: T,
    idle_for: Duration,
) -> Vec<C> {
    let mut left: HashMap<P, usize> = HashMap::new();
    let mut close = Vec::new();
    for (c, p) in made {
        if last_sent(p).is_some_and(|t| now < t + idle_for) {
            continue;
        }
        let n = left.entry(p.clone()).or_insert_with(|| open(p));
        if *n > 1 || (*n == 1 && !kept(p)) {
            *n -= 1;
            close.push(*c);
        }
    }
    close
}

/// A connection older than this when the peer opens another is taken
/// for one the peer lost: two dials that crossed both end within the
/// transport's connect timeout (2 s).
pub const SUPERSEDED_AFTER: Duration = Duration::from_secs(5);

/// A peer opened a connection while this node holds `older` ones to it,
/// `(connection, established)`: which to close. A peer dials only when it
/// holds no connection to this node (one per pair is made at dial time),
/// so one that dials again has lost the ones before, though this node may
/// not know: the peer's close never arrived across a partition or a cut
/// link. Kept, such a half-open connection would carry this node's lane
/// and gossip into a socket that TCP retries at growing intervals, for
/// seconds after the heal. Those established `after` or more before `now`
/// are closed; younger ones are dials that crossed, left to `to_close`.
pub fn superseded<C: Copy, T: Copy + Ord + Add<Duration, Output = T>>(
    older: &[(C, T)],
    now: T,
    after: Duration,
) -> Vec<C> {
    older
        .iter()
        .filter(|(_, at)| *at + after <= now)
        .map(|(c, _)| *c)
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    next: T,
    backoff: Duration,
    /// `first_dial_wait` for this address.
    wait: Duration,
    /// `None`: asked for, dialled until connected. `Some(rank)`: found,
    /// dialled while picked (`Redials::picked`).
    found: Option<u64>,
    /// Dialled, and not connected since.
    tried: bool,
    /// A dial ended without a connection since the peer last connected.
    failed: bool,
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
    /// is new, else on its schedule. `found`: `None` if asked for (kept
    /// so once asked), else its `rank`.
    pub fn add(&mut self, addr: A, now: T, wait: Duration, found: Option<u64>) {
        if self.entries.len() >= MAX_ADDRESSES && !self.entries.contains_key(&addr) {
            return;
        }
        let e = self.entries.entry(addr).or_insert(Entry {
            next: now + wait,
            backoff: REDIAL_MIN,
            wait,
            found,
            tried: false,
            failed: false,
        });
        if found.is_none() {
            e.found = None;
        }
    }

    /// Replaces every address for which `same_peer` holds with `addr`: a
    /// peer's newest address is the one to dial. An address already held
    /// keeps its schedule: learning it again is no reason to dial. A peer
    /// asked for stays asked for under its new address.
    pub fn replace(
        &mut self,
        addr: A,
        now: T,
        wait: Duration,
        found: Option<u64>,
        same_peer: impl Fn(&A) -> bool,
    ) {
        let mut asked = found.is_none();
        self.entries.retain(|a, e| {
            let keep = *a == addr || !same_peer(a);
            asked |= !keep && e.found.is_none();
            keep
        });
        self.add(addr, now, wait, found.filter(|_| !asked));
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

    /// Every address for which `same_peer` holds is kept from now on only
    /// as a found one, at `rank`.
    pub fn demote(&mut self, same_peer: impl Fn(&A) -> bool, rank: u64) {
        for (a, e) in self.entries.iter_mut() {
            if same_peer(a) {
                e.found = Some(rank);
            }
        }
    }

    /// Stops dialling `addr`; whether it was dialled.
    pub fn remove(&mut self, addr: &A) -> bool {
        self.entries.remove(addr).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The found addresses this node keeps: the `picks` that rank first,
    /// and the `picks` that rank first of those whose dials have not
    /// failed since they last connected. So an unreachable peer does not
    /// hold a place, and is still dialled, to take it back once it answers.
    pub fn picked(&self, picks: usize) -> HashSet<&A> {
        let mut found: Vec<_> = self
            .entries
            .iter()
            .filter_map(|(a, e)| e.found.map(|rank| (rank, e.failed, a)))
            .collect();
        found.sort_unstable_by_key(|(rank, _, _)| *rank);
        let best = found.iter().take(picks);
        let reached = found.iter().filter(|(_, failed, _)| !failed).take(picks);
        best.chain(reached).map(|(_, _, a)| *a).collect()
    }

    /// The addresses to dial now: those asked for and those picked (of
    /// `picks`, `picked`). `connected` says whether an address's peer is
    /// connected: its backoff then starts over, and once it drops it is
    /// dialled after its `wait`. `dialing` says whether a dial to its peer
    /// is pending: it is not dialled again until that ends (a connection's
    /// setup is bounded), and then at once if it is due.
    pub fn due(
        &mut self,
        now: T,
        connected: impl Fn(&A) -> bool,
        dialing: impl Fn(&A) -> bool,
        picks: usize,
    ) -> Vec<A> {
        for (addr, e) in self.entries.iter_mut() {
            if connected(addr) {
                e.backoff = REDIAL_MIN;
                e.next = now + e.wait;
                (e.tried, e.failed) = (false, false);
            } else if e.tried && !dialing(addr) {
                (e.tried, e.failed) = (false, true);
            }
        }
        let picked: HashSet<A> = self.picked(picks).into_iter().cloned().collect();
        let mut out = Vec::new();
        for (addr, e) in self.entries.iter_mut() {
            let wanted = e.found.is_none() || picked.contains(addr);
            if wanted && e.next <= now && !connected(addr) && !dialing(addr) {
                e.next = now + e.backoff;
                e.backoff = (e.backoff * 2).min(REDIAL_MAX);
                e.tried = true;
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

    #[test]
    fn a_peer_dialling_again_supersedes_its_older_connections_not_a_crossing_dial() {
        let older = [("lost", ms(1_000)), ("crossed", ms(9_000))];
        assert_eq!(superseded(&older, ms(10_000), SUPERSEDED_AFTER), ["lost"]);
        assert!(superseded(&older, ms(5_999), SUPERSEDED_AFTER).is_empty());
        assert_eq!(
            superseded(&older, ms(14_000), SUPERSEDED_AFTER),
            ["lost", "crossed"]
        );
    }

    /// The addresses due at `t` with nothing connected and no dial pending.
    fn due(r: &mut Redials<&'static str, Duration>, t: u64) -> Vec<&'static str> {
        let mut d = r.due(ms(t), |_| false, |_| false, usize::MAX);
        d.sort();
        d
    }

    #[test]
    fn an_unreachable_address_is_dialled_with_a_doubling_backoff_to_the_cap() {
        let mut r = Redials::default();
        r.add("a", NOW, NOW, None);
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
        r.add("a", NOW, NOW, None);
        for t in [0, 500, 1500] {
            assert_eq!(due(&mut r, t), ["a"]);
        }
        assert!(
            r.due(ms(4000), |_| true, |_| false, 0).is_empty(),
            "connected"
        );
        // It drops: redialled at once, then from the minimum.
        assert_eq!(due(&mut r, 4000), ["a"]);
        assert!(due(&mut r, 4400).is_empty());
        assert_eq!(due(&mut r, 4500), ["a"]);
    }

    #[test]
    fn a_peers_newest_address_replaces_the_old_ones() {
        let mut r = Redials::default();
        r.add("p@1", NOW, NOW, None);
        r.add("p@2", NOW, NOW, None);
        r.add("q@1", NOW, NOW, None);
        r.replace("p@3", ms(10), NOW, None, |a| a.starts_with("p@"));
        assert_eq!(due(&mut r, 10), ["p@3", "q@1"]);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn an_address_learnt_again_keeps_its_schedule() {
        let mut r = Redials::default();
        r.add("p@1", NOW, NOW, None);
        r.add("p@2", NOW, NOW, None);
        assert_eq!(due(&mut r, 0), ["p@1", "p@2"]);
        // mDNS or identify tells of p@1 again while its dial is pending.
        r.replace("p@1", ms(100), NOW, None, |a| a.starts_with("p@"));
        assert!(due(&mut r, 100).is_empty(), "not due again at once");
        assert_eq!(due(&mut r, 500), ["p@1"], "on its schedule");
        assert_eq!(r.len(), 1, "the peer's other address is gone");
        r.add("p@1", ms(600), NOW, None);
        assert!(due(&mut r, 600).is_empty());
    }

    #[test]
    fn a_peer_with_a_dial_pending_is_not_dialled_again_until_it_ends() {
        let mut r = Redials::default();
        r.add("a", NOW, NOW, None);
        assert_eq!(due(&mut r, 0), ["a"]);
        // The dial is pending for two seconds (a busy host's handshake).
        for t in [500, 1000, 1500, 2000] {
            assert!(r.due(ms(t), |_| false, |_| true, 0).is_empty(), "at {t}");
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
        r.add("2@a", NOW, wait, None);
        assert!(due(&mut r, 0).is_empty());
        assert!(
            r.due(ms(1000), |_| true, |_| false, 0).is_empty(),
            "it came"
        );
        assert!(due(&mut r, 1250).is_empty(), "dropped: waits again");
        let waited = ms(1000) + ANSWER_WAIT;
        assert_eq!(due(&mut r, waited.as_millis() as u64), ["2@a"]);
    }

    #[test]
    fn the_found_peers_that_rank_first_are_dialled_whenever_they_were_found() {
        let mut r = Redials::default();
        r.add("m", NOW, NOW, None);
        r.add("f3", NOW, NOW, Some(3));
        r.add("f4", NOW, NOW, Some(4));
        // Two picks: the member asked for, and the two best found so far.
        let mut d = r.due(NOW, |_| false, |_| false, 2);
        d.sort();
        assert_eq!(d, ["f3", "f4", "m"]);
        let up = |a: &&str| ["f3", "f4", "m"].contains(a);
        assert!(r.due(ms(100), up, |_| false, 2).is_empty());
        // Better ranked peers found later take the picks: dialled, and
        // the ones they displace are no longer picked (see `to_close`).
        r.add("f1", ms(200), NOW, Some(1));
        r.add("f2", ms(200), NOW, Some(2));
        let mut d = r.due(ms(200), up, |_| false, 2);
        d.sort();
        assert_eq!(d, ["f1", "f2"]);
        let mut picked: Vec<_> = r.picked(2).into_iter().copied().collect();
        picked.sort();
        assert_eq!(picked, ["f1", "f2"]);
        // A displaced peer that drops is not dialled again; a member is.
        let gone = |a: &&str| ["f1", "f2"].contains(a);
        assert_eq!(r.due(ms(300), gone, |_| false, 2), ["m"]);
    }

    #[test]
    fn an_unreachable_found_peer_does_not_hold_a_place_and_takes_it_back() {
        let mut r = Redials::default();
        r.add("f1", NOW, NOW, Some(1));
        r.add("f2", NOW, NOW, Some(2));
        assert_eq!(r.due(NOW, |_| false, |_| false, 1), ["f1"]);
        // While its dial is pending, f1 keeps its place.
        assert!(r.due(ms(500), |_| false, |_| true, 1).is_empty());
        // It failed: f2 is picked as well, and f1 still dialled.
        let mut d = r.due(ms(2000), |_| false, |_| false, 1);
        d.sort();
        assert_eq!(d, ["f1", "f2"]);
        let f2_up = |a: &&str| *a == "f2";
        assert_eq!(r.due(ms(3000), f2_up, |_| false, 1), ["f1"]);
        // f1 answers again: f2 is no longer picked.
        assert!(r.due(ms(4000), |_| true, |_| false, 1).is_empty());
        assert_eq!(r.picked(1).into_iter().collect::<Vec<_>>(), [&"f1"]);
    }

    #[test]
    fn a_peer_asked_for_stays_so_whatever_finds_it_until_it_is_demoted() {
        let mut r = Redials::default();
        // A member in State, then mDNS tells of it at another address.
        r.add("m@1", NOW, NOW, None);
        r.replace("m@2", NOW, NOW, Some(9), |a| a.starts_with("m@"));
        // Found first, asked for later.
        r.add("n@1", NOW, NOW, Some(8));
        r.add("n@1", NOW, NOW, None);
        r.add("f@1", NOW, NOW, Some(1));
        let mut d = r.due(NOW, |_| false, |_| false, 0);
        d.sort();
        assert_eq!(d, ["m@2", "n@1"], "no picks: only those asked for");
        // n is no longer a member: kept only while picked.
        r.demote(|a| a.starts_with("n@"), 8);
        assert_eq!(r.due(ms(5000), |_| false, |_| false, 0), ["m@2"]);
        let mut d = r.due(ms(7000), |_| false, |_| false, 1);
        d.sort();
        assert_eq!(d, ["f@1", "m@2"]);
    }

    #[test]
    fn a_connection_this_node_made_is_closed_once_idle_unless_kept() {
        // (connection, peer): k is kept (asked for, picked, or in the
        // mesh), a was sent a frame 10 s ago, b 100 s ago, c never.
        let made = [(1, "k"), (2, "a"), (3, "b"), (4, "c")];
        let sent = |p: &&str| match *p {
            "a" => Some(ms(90_000)),
            "b" | "k" => Some(NOW),
            _ => None,
        };
        let one = |_: &&str| 1;
        let kept = |p: &&str| *p == "k";
        let now = ms(100_000);
        assert_eq!(to_close(&made, kept, sent, one, now, IDLE_FOR), [3, 4]);
        // A frame IDLE_FOR ago: idle.
        let t = ms(90_000) + IDLE_FOR;
        assert_eq!(to_close(&made, kept, sent, one, t, IDLE_FOR), [2, 3, 4]);
        assert!(to_close(&made, |_| true, sent, one, t, IDLE_FOR).is_empty());
    }

    #[test]
    fn an_idle_second_connection_is_closed_even_to_a_kept_peer() {
        // This node made connections 1 and 2 to b, which holds three, and
        // 3 to c, which holds two.
        let made = [(1, "b"), (2, "b"), (3, "c")];
        let open = |p: &&str| if *p == "b" { 3 } else { 2 };
        let close = to_close(&made, |_| true, |_| None, open, NOW, IDLE_FOR);
        assert_eq!(close, [1, 2, 3]);
        // Both of a peer's connections made here: one stays if kept.
        let two = |_: &&str| 2;
        assert_eq!(
            to_close(&made[..2], |_| true, |_| None, two, NOW, IDLE_FOR),
            [1]
        );
        assert_eq!(
            to_close(&made[..2], |_| false, |_| None, two, NOW, IDLE_FOR),
            [1, 2]
        );
        let busy = |_: &&str| Some(NOW);
        assert!(to_close(&made, |_| false, busy, open, NOW, IDLE_FOR).is_empty());
    }

    #[test]
    fn both_ends_of_a_pair_rank_it_alike_and_pairs_differ() {
        assert_eq!(rank(b"a", b"b"), rank(b"b", b"a"));
        assert_ne!(rank(b"a", b"b"), rank(b"a", b"c"));
    }

    #[test]
    fn a_silent_peer_is_redialled_at_once_from_the_shortest_backoff() {
        let mut r = Redials::default();
        r.add("p@1", NOW, NOW, None);
        r.add("q@1", NOW, NOW, None);
        for t in [0, 500, 1500] {
            due(&mut r, t);
        }
        assert!(due(&mut r, 1600).is_empty());
        r.retry_now(ms(1600), |a| a.starts_with("p@"));
        assert_eq!(due(&mut r, 1600), ["p@1"]);
        assert_eq!(due(&mut r, 2100), ["p@1"], "then 500 ms later");
    }
}

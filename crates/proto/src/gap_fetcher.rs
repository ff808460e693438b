//! The gap fetcher (NACK): when the ordered buffer has a hole, ask a replica
//! that holds the range for it, one-to-one.
//!
//! A new hole waits one short backoff first, since gossip may simply have
//! reordered it. Once confirmed, ranges are requested as soon as a slot is
//! free (several in flight, each bounded in entries, and the server bounds
//! the reply in bytes), so a long tail streams at full speed. A request
//! that times out doubles the backoff up to a cap; progress resets it. Its
//! answer is still taken if it comes late (`LATE_KEPT`): a loaded replica,
//! or a loaded asker, sees answers after the timeout, and throwing them
//! away would fetch every range again, as late, without end.

use shoal_model::{EventIdx, NodeId};
use std::collections::VecDeque;
use std::time::Duration;

/// Requests that timed out whose answer is still taken: the last this many.
const LATE_KEPT: usize = 16;

#[derive(Clone, Copy, Debug)]
pub struct GapConfig {
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub max_in_flight: usize,
    pub range_entries: u64,
    pub request_timeout: Duration,
    /// How long a hole must find no holder before a snapshot is asked for:
    /// a node that just started has not heard every peer's heartbeat yet.
    pub snapshot_patience: Duration,
}

impl Default for GapConfig {
    fn default() -> Self {
        GapConfig {
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            max_in_flight: 4,
            range_entries: 8192,
            request_timeout: Duration::from_secs(2),
            snapshot_patience: Duration::from_secs(1),
        }
    }
}

/// What this node knows of a peer's log, from its heartbeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLog {
    pub node: NodeId,
    /// Lowest index it can serve.
    pub floor: EventIdx,
    /// Highest index it has applied.
    pub applied: EventIdx,
    /// Asked only for what no other peer holds, one range at a time: the
    /// master, whose every range read and send delays the writes it
    /// commits.
    pub spared: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GapAction {
    Fetch {
        peer: NodeId,
        from: EventIdx,
        to: EventIdx,
    },
    /// The hole starts below every holder's log: load a snapshot.
    NeedSnapshot,
}

#[derive(Clone, Debug)]
struct InFlight {
    peer: NodeId,
    from: EventIdx,
    to: EventIdx,
    deadline: Duration,
}

#[derive(Debug)]
pub struct GapFetcher {
    cfg: GapConfig,
    backoff: Duration,
    /// When the current hole was first seen.
    gap_since: Option<Duration>,
    /// No new request before this (after a timeout).
    retry_at: Option<Duration>,
    in_flight: Vec<InFlight>,
    /// Requests that timed out, as (peer, from), newest last.
    timed_out: VecDeque<(NodeId, EventIdx)>,
    rr: usize,
}

impl GapFetcher {
    pub fn new(cfg: GapConfig) -> Self {
        GapFetcher {
            cfg,
            backoff: cfg.base_backoff,
            gap_since: None,
            retry_at: None,
            in_flight: Vec::new(),
            timed_out: VecDeque::new(),
            rr: 0,
        }
    }

    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When `plan` next has something to do that no new input brings: a
    /// hole to confirm, a backoff that ends, a request that times out.
    /// Only times after `now`: a hole whose time passed is waiting for a
    /// holder, which a heartbeat (an input) brings.
    pub fn next_wake(&self, now: Duration) -> Option<Duration> {
        let mut times: Vec<Duration> = self.in_flight.iter().map(|f| f.deadline).collect();
        if let Some(since) = self.gap_since {
            times.push(since + self.cfg.base_backoff);
            times.push(since + self.cfg.snapshot_patience);
            times.extend(self.retry_at);
        }
        times.into_iter().filter(|t| *t > now).min()
    }

    /// The buffer's next index moved forward.
    pub fn on_progress(&mut self) {
        self.backoff = self.cfg.base_backoff;
        self.retry_at = None;
    }

    /// A reply (or refusal) arrived for the range starting at `from`.
    /// Returns whether that range was asked of that peer (and not yet
    /// answered): only such a reply is to be believed.
    pub fn on_reply(&mut self, peer: &NodeId, from: EventIdx) -> bool {
        let before = self.in_flight.len();
        self.in_flight
            .retain(|f| !(f.from == from && &f.peer == peer));
        if self.in_flight.len() < before {
            return true;
        }
        let late = self
            .timed_out
            .iter()
            .position(|(p, f)| *f == from && p == peer);
        late.and_then(|i| self.timed_out.remove(i)).is_some()
    }

    /// Forgets everything in flight (after a snapshot replaced the log).
    pub fn reset(&mut self) {
        self.in_flight.clear();
        self.timed_out.clear();
        self.gap_since = None;
        self.retry_at = None;
        self.backoff = self.cfg.base_backoff;
    }

    /// Decides which ranges to request now. `gaps` are the buffer's holes
    /// in order; `peers` what is known of the other replicas' logs.
    pub fn plan(
        &mut self,
        now: Duration,
        gaps: &[(EventIdx, EventIdx)],
        peers: &[PeerLog],
    ) -> Vec<GapAction> {
        let before = self.in_flight.len();
        for f in self.in_flight.iter().filter(|f| f.deadline <= now) {
            if self.timed_out.len() == LATE_KEPT {
                self.timed_out.pop_front();
            }
            self.timed_out.push_back((f.peer.clone(), f.from));
        }
        self.in_flight.retain(|f| f.deadline > now);
        if self.in_flight.len() < before {
            self.backoff = (self.backoff * 2).min(self.cfg.max_backoff);
            self.retry_at = Some(now + self.backoff);
        }
        if gaps.is_empty() {
            self.gap_since = None;
            return Vec::new();
        }
        let since = *self.gap_since.get_or_insert(now);
        if now < since + self.cfg.base_backoff || self.retry_at.is_some_and(|r| now < r) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for &(gap_from, gap_to) in gaps {
            let mut from = gap_from;
            while from <= gap_to && self.in_flight.len() < self.cfg.max_in_flight {
                let to = EventIdx((from.0 + self.cfg.range_entries - 1).min(gap_to.0));
                if let Some(f) = self.in_flight.iter().find(|f| f.from <= to && f.to >= from) {
                    from = f.to.next();
                    continue;
                }
                let mut holders: Vec<&PeerLog> = peers
                    .iter()
                    .filter(|p| p.floor <= from && p.applied >= from)
                    .collect();
                if holders.iter().any(|p| !p.spared) {
                    holders.retain(|p| !p.spared);
                } else if !holders.is_empty() && self.asks_spared(peers) {
                    return out;
                }
                if holders.is_empty() {
                    let patient = now >= since + self.cfg.snapshot_patience;
                    if out.is_empty() && patient && peers.iter().any(|p| p.applied >= from) {
                        return vec![GapAction::NeedSnapshot];
                    }
                    return out;
                }
                let peer = holders[self.rr % holders.len()].node.clone();
                self.rr = self.rr.wrapping_add(1);
                self.in_flight.push(InFlight {
                    peer: peer.clone(),
                    from,
                    to,
                    deadline: now + self.cfg.request_timeout,
                });
                out.push(GapAction::Fetch { peer, from, to });
                from = to.next();
            }
        }
        out
    }

    /// Whether a range is in flight at a spared peer.
    fn asks_spared(&self, peers: &[PeerLog]) -> bool {
        let spared = |n: &NodeId| peers.iter().any(|p| p.spared && &p.node == n);
        self.in_flight.iter().any(|f| spared(&f.peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn peer(n: &str, floor: u64, applied: u64) -> PeerLog {
        PeerLog {
            node: NodeId::from(n),
            floor: EventIdx(floor),
            applied: EventIdx(applied),
            spared: false,
        }
    }

    fn gap(a: u64, b: u64) -> (EventIdx, EventIdx) {
        (EventIdx(a), EventIdx(b))
    }

    #[test]
    fn a_new_gap_waits_one_backoff_then_fetches_in_bounded_ranges() {
        let mut g = GapFetcher::new(GapConfig {
            range_entries: 100,
            max_in_flight: 3,
            ..Default::default()
        });
        let peers = [peer("a", 1, 1000), peer("b", 1, 1000)];
        assert!(g.plan(ms(0), &[gap(10, 1000)], &peers).is_empty());
        assert!(g.plan(ms(49), &[gap(10, 1000)], &peers).is_empty());
        let acts = g.plan(ms(50), &[gap(10, 1000)], &peers);
        assert_eq!(acts.len(), 3, "several in flight, no more than the cap");
        let GapAction::Fetch { from, to, .. } = &acts[0] else {
            panic!()
        };
        assert_eq!((*from, *to), (EventIdx(10), EventIdx(109)));
        let peers_used: std::collections::BTreeSet<_> = acts
            .iter()
            .map(|a| match a {
                GapAction::Fetch { peer, .. } => peer.clone(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(peers_used.len(), 2, "load spread over holders");
        // A reply frees a slot, refilled at once: the gap is confirmed.
        g.on_reply(&NodeId::from("a"), EventIdx(10));
        g.on_progress();
        let more = g.plan(ms(51), &[gap(110, 1000)], &peers);
        assert_eq!(more.len(), 1);
        assert!(matches!(&more[0], GapAction::Fetch { from, .. } if *from == EventIdx(310)));
    }

    #[test]
    fn timeouts_back_off_exponentially_to_the_cap_and_progress_resets() {
        let cfg = GapConfig {
            request_timeout: ms(100),
            max_in_flight: 1,
            ..Default::default()
        };
        let mut g = GapFetcher::new(cfg);
        let peers = [peer("a", 1, 100)];
        g.plan(ms(0), &[gap(5, 6)], &peers);
        let mut now = ms(50);
        assert_eq!(g.plan(now, &[gap(5, 6)], &peers).len(), 1);
        let mut backoffs = Vec::new();
        for _ in 0..8 {
            now += ms(100);
            assert!(
                g.plan(now, &[gap(5, 6)], &peers).is_empty(),
                "timed out: waits the backoff"
            );
            backoffs.push(g.backoff());
            now += g.backoff();
            assert_eq!(g.plan(now, &[gap(5, 6)], &peers).len(), 1);
        }
        assert_eq!(backoffs[0], ms(100));
        assert_eq!(backoffs[1], ms(200));
        assert_eq!(*backoffs.last().unwrap(), Duration::from_secs(1));
        g.on_progress();
        assert_eq!(g.backoff(), ms(50));
    }

    #[test]
    fn an_answer_that_comes_after_the_timeout_is_still_taken_once() {
        let cfg = GapConfig {
            request_timeout: ms(100),
            ..Default::default()
        };
        let mut g = GapFetcher::new(cfg);
        let peers = [peer("a", 1, 100)];
        g.plan(ms(0), &[gap(5, 6)], &peers);
        let asked = g.plan(ms(50), &[gap(5, 6)], &peers);
        assert_eq!(asked.len(), 1);
        // Timed out: no longer in flight, asked again after the backoff.
        assert!(g.plan(ms(150), &[gap(5, 6)], &peers).is_empty());
        assert_eq!(g.in_flight(), 0);
        let a = NodeId::from("a");
        assert!(!g.on_reply(&NodeId::from("b"), EventIdx(5)), "never asked");
        assert!(!g.on_reply(&a, EventIdx(6)), "no range starts there");
        assert!(g.on_reply(&a, EventIdx(5)), "late, but asked");
        assert!(!g.on_reply(&a, EventIdx(5)), "taken once");
        // Only the last LATE_KEPT timeouts are remembered.
        let mut now = ms(150);
        for _ in 0..=LATE_KEPT {
            now += g.backoff();
            assert_eq!(g.plan(now, &[gap(5, 6)], &peers).len(), 1);
            now += ms(100);
            g.plan(now, &[gap(5, 6)], &peers);
        }
        assert!(g.on_reply(&a, EventIdx(5)));
        let taken = (0..LATE_KEPT + 1)
            .filter(|_| g.on_reply(&a, EventIdx(5)))
            .count();
        assert_eq!(taken, LATE_KEPT - 1);
    }

    #[test]
    fn the_spared_peer_serves_only_what_no_other_holds_one_range_at_a_time() {
        let mut g = GapFetcher::new(GapConfig {
            range_entries: 100,
            max_in_flight: 8,
            ..Default::default()
        });
        let master = PeerLog {
            spared: true,
            ..peer("m", 1, 2000)
        };
        // Alone, the master is asked one range, and the next once it answered.
        let alone = [master.clone()];
        g.plan(ms(0), &[gap(10, 1000)], &alone);
        let first = g.plan(ms(50), &[gap(10, 1000)], &alone);
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(g.plan(ms(60), &[gap(10, 1000)], &alone).is_empty());
        g.on_reply(&NodeId::from("m"), EventIdx(10));
        g.on_progress();
        assert_eq!(g.plan(ms(70), &[gap(110, 1000)], &alone).len(), 1);
        // Once a voter holds the entries the master is asked nothing more;
        // what only the master holds (past the voter's 500) it is asked
        // one range of, and no second while that one is out.
        let both = [master, peer("v", 1, 500)];
        g.on_reply(&NodeId::from("m"), EventIdx(110));
        g.on_progress();
        let acts = g.plan(ms(80), &[gap(210, 1000)], &both);
        let asked: Vec<(&str, u64)> = acts
            .iter()
            .map(|a| match a {
                GapAction::Fetch { peer, from, .. } => (peer.0.as_str(), from.0),
                _ => panic!(),
            })
            .collect();
        assert_eq!(asked, [("v", 210), ("v", 310), ("v", 410), ("m", 510)]);
    }

    #[test]
    fn a_gap_below_every_log_asks_for_a_snapshot() {
        let mut g = GapFetcher::new(GapConfig::default());
        let peers = [peer("a", 500, 1000), peer("b", 800, 900)];
        g.plan(ms(0), &[gap(10, 1000)], &peers);
        let early = g.plan(ms(60), &[gap(10, 1000)], &peers);
        assert!(early.is_empty(), "patient: more peers may yet be heard");
        let later = g.plan(ms(1000), &[gap(10, 1000)], &peers);
        assert_eq!(later, vec![GapAction::NeedSnapshot]);
        // Nobody has it yet: wait.
        let mut g = GapFetcher::new(GapConfig::default());
        g.plan(ms(0), &[gap(2000, 2001)], &peers);
        assert!(g.plan(ms(60), &[gap(2000, 2001)], &peers).is_empty());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_peers() -> impl Strategy<Value = Vec<PeerLog>> {
        prop::collection::vec((0u64..300, 0u64..1200, any::<bool>()), 1..5).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (floor, applied, spared))| PeerLog {
                    node: NodeId(format!("p{i}")),
                    floor: EventIdx(floor + 1),
                    applied: EventIdx(applied),
                    spared,
                })
                .collect()
        })
    }

    proptest! {
        /// Whatever the gaps, peers and timing: requests stay within the
        /// gaps, never overlap, never exceed the in-flight cap, and go to
        /// a peer that holds their start; to a spared one only if no
        /// other holds it, and one at a time.
        #[test]
        fn requests_are_bounded_and_well_aimed(
            peers in arb_peers(),
            steps in prop::collection::vec((1u64..200, 0u64..1000, 1u64..300, any::<bool>()), 1..60),
        ) {
            let cfg = GapConfig { range_entries: 64, max_in_flight: 3, ..GapConfig::default() };
            let mut g = GapFetcher::new(cfg);
            let mut now = Duration::ZERO;
            let mut outstanding: Vec<(NodeId, EventIdx, EventIdx)> = Vec::new();
            for (dt, start, len, reply) in steps {
                now += Duration::from_millis(dt);
                let gaps = vec![(EventIdx(start + 1), EventIdx(start + len))];
                if reply {
                    if let Some((p, f, _)) = outstanding.pop() {
                        g.on_reply(&p, f);
                        g.on_progress();
                    }
                }
                for a in g.plan(now, &gaps, &peers) {
                    if let GapAction::Fetch { peer, from, to } = a {
                        prop_assert!(from >= gaps[0].0 && to <= gaps[0].1 && from <= to);
                        prop_assert!(to.0 - from.0 < 64);
                        let p = peers.iter().find(|p| p.node == peer).unwrap();
                        prop_assert!(p.floor <= from && p.applied >= from);
                        let other = |q: &&PeerLog| !q.spared && q.floor <= from && q.applied >= from;
                        prop_assert!(!p.spared || !peers.iter().any(|q| other(&q)));
                        outstanding.push((peer, from, to));
                    }
                }
                prop_assert!(g.in_flight() <= 3);
                let spared = |n: &NodeId| peers.iter().any(|p| p.spared && &p.node == n);
                prop_assert!(g.in_flight.iter().filter(|f| spared(&f.peer)).count() <= 1);
                prop_assert!(g.backoff() <= Duration::from_secs(1));
            }
        }
    }
}

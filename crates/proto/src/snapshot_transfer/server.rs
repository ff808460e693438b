//! The serving side: offers of a cached encoded snapshot, and its chunks.

use super::EncodedSnapshot;
use crate::wire::{SnapshotChunk, SnapshotOffer, SnapshotRequest};
use shoal_model::{EventIdx, NodeId};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeAction {
    Offer {
        to: NodeId,
        offer: SnapshotOffer,
    },
    Send {
        to: NodeId,
        chunk: SnapshotChunk,
    },
    Refuse {
        to: NodeId,
        session: u64,
        reason: String,
    },
    /// Encode State at this node's snapshot point off the loop and report
    /// back with `on_built`.
    Build,
}

/// Requests waiting for a build, at most this many.
const MAX_WAITING: usize = 64;
/// A transfer counts as under way while its receiver asked for a chunk
/// within this.
const BUSY_WINDOW: Duration = Duration::from_secs(2);
/// A held snapshot counts as in use while a chunk of it was asked for
/// within this: a joiner short of CPU in a storm may ask once in many
/// seconds, and a snapshot evicted under it starts its transfer over.
const IN_USE_WINDOW: Duration = Duration::from_secs(30);
/// Transfers tracked for `busy`, at most.
const MAX_TRACKED: usize = 256;
/// A held snapshot at an earlier snapshot point is offered while it is at
/// most this many points behind the current one.
const POINTS_BEHIND: u64 = 4;
/// ... or this many while it is in flight (offered or served within
/// `IN_USE_WINDOW`): a join storm shares the one snapshot already in
/// flight rather than make every member build anew each time the point
/// moves (a large transfer under load outlasts many points).
const POINTS_BEHIND_IN_FLIGHT: u64 = 16;
/// Snapshots held at once (each may be in memory: a 1M-key State encodes
/// to ~76 MB).
const MAX_HELD: usize = 2;

/// Where a member builds the snapshots it serves: the snapshot point
/// `index`, on a grid of `every` events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    pub index: EventIdx,
    pub every: u64,
}

impl Point {
    /// Whether a held snapshot at `index` may be offered for this point:
    /// at or past it, or at an earlier point of the grid a few points
    /// back (so that writes going on do not make every request a new
    /// build). Any other older one is not: how much its tail would hold is
    /// unknown (one event may carry a thousand keys).
    fn accepts(&self, index: EventIdx, in_flight: bool) -> bool {
        let every = self.every.max(1);
        let behind = if in_flight {
            POINTS_BEHIND_IN_FLIGHT
        } else {
            POINTS_BEHIND
        };
        index >= self.index
            || (index.0 > 0
                && index.0.is_multiple_of(every)
                && index.0 + every * behind >= self.index.0)
    }
}

/// A snapshot this node can serve, when it last sent a chunk of it and
/// when it last offered it.
#[derive(Debug)]
struct Held {
    snap: EncodedSnapshot,
    served_at: Option<Duration>,
    offered_at: Option<Duration>,
}

impl Held {
    fn in_use(&self, now: Duration) -> bool {
        lately(self.served_at, now)
    }

    /// Served or offered lately. An offer counts: the master vouches for
    /// the snapshots its joiners load but is spared the sending while
    /// others serve, so chunks alone would never mark its snapshot in
    /// flight; it would build anew a few points on and vouch for bytes
    /// no other member holds, leaving itself the only source.
    fn in_flight(&self, now: Duration) -> bool {
        self.in_use(now) || lately(self.offered_at, now)
    }
}

fn lately(at: Option<Duration>, now: Duration) -> bool {
    at.is_some_and(|at| now.saturating_sub(at) < IN_USE_WINDOW)
}

#[derive(Debug, Default)]
pub struct SnapshotServer {
    /// At most `MAX_HELD`. A new build evicts one no transfer is using
    /// (the oldest such), so transfers under way finish.
    held: Vec<Held>,
    building: bool,
    /// Offers owed once the build lands: who asked, their session, what
    /// they have.
    waiting: Vec<(NodeId, u64, EventIdx)>,
    /// Transfers served lately, by receiver and session: when they last
    /// asked for a chunk.
    serving: BTreeMap<(NodeId, u64), Duration>,
}

impl SnapshotServer {
    /// Transfers under way now.
    pub fn busy(&mut self, now: Duration) -> u32 {
        self.serving
            .retain(|_, at| now.saturating_sub(*at) < BUSY_WINDOW);
        self.serving.len() as u32
    }

    /// Where in `held` the newest snapshot past `have` is that `point`
    /// accepts (any, without a point).
    fn held_past(&self, have: EventIdx, point: Option<Point>, now: Duration) -> Option<usize> {
        let fits = |h: &Held| {
            h.snap.index > have && point.is_none_or(|p| p.accepts(h.snap.index, h.in_flight(now)))
        };
        let held = self.held.iter().enumerate().filter(|(_, h)| fits(h));
        held.max_by_key(|(_, h)| h.snap.index).map(|(i, _)| i)
    }

    /// An offer of `held[i]`, noted as made.
    fn offer(
        &mut self,
        i: usize,
        to: NodeId,
        session: u64,
        busy: u32,
        now: Duration,
    ) -> ServeAction {
        let h = &mut self.held[i];
        h.offered_at = Some(now);
        ServeAction::Offer {
            to,
            offer: h.snap.offer(session, busy),
        }
    }

    /// A replica wants a snapshot past `have`. `point` is where this node
    /// would build, if it builds for others at all (a Raft member does; a
    /// follower offers only what it holds). The snapshot at `resume`, whose
    /// transfer the asker holds part of, is offered if held, however far
    /// the point moved: the asker goes on where it stopped rather than
    /// start over. Else a held snapshot the point accepts (a few points
    /// back; more while it is being served) is offered at once; else one
    /// is built at the point and offered when done (so at most one build
    /// per point; `resume` never makes one). With nothing to offer,
    /// nothing is said.
    pub fn on_wanted(
        &mut self,
        from: NodeId,
        session: u64,
        have: EventIdx,
        resume: Option<EventIdx>,
        point: Option<Point>,
        now: Duration,
    ) -> Vec<ServeAction> {
        let busy = self.busy(now);
        let resumed = resume.and_then(|r| {
            let i = self.held.iter().position(|h| h.snap.index == r)?;
            (r > have).then_some(i)
        });
        if let Some(i) = resumed {
            return vec![self.offer(i, from, session, busy, now)];
        }
        // With every snapshot held in use, a build would evict one that a
        // transfer still pulls: the newest is offered instead, however far
        // the point moved; the asker fetches the longer tail by range.
        let crowded = self.held.len() >= MAX_HELD && self.held.iter().all(|h| h.in_use(now));
        let held = self
            .held_past(have, point, now)
            .or_else(|| crowded.then(|| self.held_past(have, None, now)).flatten());
        if let Some(i) = held {
            return vec![self.offer(i, from, session, busy, now)];
        }
        if point.is_none_or(|p| p.index <= have) || self.waiting.len() >= MAX_WAITING {
            return vec![];
        }
        self.waiting.retain(|(n, _, _)| *n != from);
        self.waiting.push((from, session, have));
        if self.building {
            return vec![];
        }
        self.building = true;
        vec![ServeAction::Build]
    }

    /// A build finished: hold it (in place of the oldest one not being
    /// served, if as many are held as may be) and make the offers owed.
    pub fn on_built(&mut self, snap: EncodedSnapshot, now: Duration) -> Vec<ServeAction> {
        self.building = false;
        let index = snap.index;
        match self.held.iter_mut().find(|h| h.snap.index == index) {
            Some(h) => h.snap = snap,
            None => {
                if self.held.len() >= MAX_HELD {
                    let evict = (0..self.held.len())
                        .min_by_key(|&i| (self.held[i].in_use(now), self.held[i].snap.index));
                    if let Some(i) = evict {
                        self.held.swap_remove(i);
                    }
                }
                self.held.push(Held {
                    snap,
                    served_at: None,
                    offered_at: None,
                });
            }
        }
        let busy = self.busy(now);
        let waiting = std::mem::take(&mut self.waiting);
        waiting
            .into_iter()
            .filter_map(|(to, session, have)| {
                let i = self.held_past(have, None, now)?;
                Some(self.offer(i, to, session, busy, now))
            })
            .collect()
    }

    /// A chunk of a held snapshot. A snapshot held in its file costs one
    /// read of at most a chunk here, from the page cache while the file is
    /// fresh. A read that fails refuses the request with why.
    pub fn on_request(&mut self, to: NodeId, req: SnapshotRequest, now: Duration) -> ServeAction {
        let refuse = |to, reason| ServeAction::Refuse {
            to,
            session: req.session,
            reason,
        };
        let Some(held) = self.held.iter_mut().find(|h| h.snap.index == req.index) else {
            return refuse(to, format!("snapshot {} is no longer held", req.index));
        };
        let s = &held.snap;
        let start = u64::from(req.chunk) * u64::from(s.chunk_bytes);
        let total = s.bytes.len();
        if start >= total {
            return refuse(to, format!("chunk {} is past the end", req.chunk));
        }
        let len = (total - start).min(u64::from(s.chunk_bytes)) as usize;
        let data = match s.bytes.read_at(start, len) {
            Ok(data) => data,
            Err(e) => return refuse(to, format!("cannot read snapshot {}: {e}", s.index)),
        };
        let index = s.index;
        held.served_at = Some(now);
        if self.serving.len() >= MAX_TRACKED {
            self.busy(now);
        }
        if self.serving.len() < MAX_TRACKED {
            self.serving.insert((to.clone(), req.session), now);
        }
        ServeAction::Send {
            to,
            chunk: SnapshotChunk {
                session: req.session,
                index,
                chunk: req.chunk,
                data,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_accepts_itself_later_ones_and_a_few_grid_points_back_only() {
        let p = Point {
            index: EventIdx(5120),
            every: 1024,
        };
        assert!(p.accepts(EventIdx(5120), false));
        assert!(p.accepts(EventIdx(5200), false), "later");
        assert!(p.accepts(EventIdx(1024), false), "four points back");
        assert!(!p.accepts(EventIdx(0), false));
        // Off the grid: a snapshot installed on joining, however recent.
        assert!(!p.accepts(EventIdx(5000), false));
        // A young cluster's point is the present: nothing older serves.
        let young = Point {
            index: EventIdx(308),
            every: 1024,
        };
        assert!(!young.accepts(EventIdx(2), false));
        // In flight, sixteen points back still serve; more do not.
        let far = Point {
            index: EventIdx(17 * 1024),
            every: 1024,
        };
        assert!(!far.accepts(EventIdx(1024), false));
        assert!(far.accepts(EventIdx(1024), true));
        let farther = Point {
            index: EventIdx(18 * 1024),
            every: 1024,
        };
        assert!(!farther.accepts(EventIdx(1024), true));
    }
}

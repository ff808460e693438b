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
/// Transfers tracked for `busy`, at most.
const MAX_TRACKED: usize = 256;
/// A held snapshot at an earlier snapshot point is offered while it is at
/// most this many points behind the current one.
const POINTS_BEHIND: u64 = 4;

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
    fn accepts(&self, index: EventIdx) -> bool {
        let every = self.every.max(1);
        index >= self.index
            || (index.0 > 0
                && index.0.is_multiple_of(every)
                && index.0 + every * POINTS_BEHIND >= self.index.0)
    }
}

#[derive(Debug, Default)]
pub struct SnapshotServer {
    cache: Option<EncodedSnapshot>,
    /// The one before, kept so that transfers under way when a newer
    /// snapshot is built can finish.
    previous: Option<EncodedSnapshot>,
    building: bool,
    /// Offers owed once the build lands: who asked, their session, what
    /// they have.
    waiting: Vec<(NodeId, u64, EventIdx)>,
    /// Transfers served lately, by receiver and session: when they last
    /// asked for a chunk.
    serving: BTreeMap<(NodeId, u64), Duration>,
}

impl SnapshotServer {
    pub fn cached(&self) -> Option<&EncodedSnapshot> {
        self.cache.as_ref()
    }

    /// Transfers under way now.
    pub fn busy(&mut self, now: Duration) -> u32 {
        self.serving
            .retain(|_, at| now.saturating_sub(*at) < BUSY_WINDOW);
        self.serving.len() as u32
    }

    /// The newest snapshot held past `have`.
    fn held_past(&self, have: EventIdx) -> Option<&EncodedSnapshot> {
        [&self.cache, &self.previous]
            .into_iter()
            .flatten()
            .filter(|s| s.index > have)
            .max_by_key(|s| s.index)
    }

    /// A replica wants a snapshot past `have`. `point` is where this node
    /// would build, if it builds for others at all (a Raft member does; a
    /// follower offers only what it holds). A held snapshot the point
    /// accepts is offered at once; else one is built at the point and
    /// offered when done (so at most one build per point). With nothing to
    /// offer, nothing is said.
    pub fn on_wanted(
        &mut self,
        from: NodeId,
        session: u64,
        have: EventIdx,
        point: Option<Point>,
        now: Duration,
    ) -> Vec<ServeAction> {
        let busy = self.busy(now);
        if let Some(s) = self.held_past(have) {
            if point.is_none_or(|p| p.accepts(s.index)) {
                return vec![ServeAction::Offer {
                    to: from,
                    offer: s.offer(session, busy),
                }];
            }
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

    /// A build finished: cache it and make the offers owed.
    pub fn on_built(&mut self, snap: EncodedSnapshot, now: Duration) -> Vec<ServeAction> {
        self.building = false;
        if self.cache.as_ref().is_none_or(|c| c.index != snap.index) {
            self.previous = self.cache.take();
        }
        self.cache = Some(snap);
        let busy = self.busy(now);
        let waiting = std::mem::take(&mut self.waiting);
        waiting
            .into_iter()
            .filter_map(|(to, session, have)| {
                let s = self.held_past(have)?;
                Some(ServeAction::Offer {
                    to,
                    offer: s.offer(session, busy),
                })
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
        let held = [&self.cache, &self.previous]
            .into_iter()
            .flatten()
            .find(|s| s.index == req.index);
        let Some(s) = held else {
            return refuse(to, format!("snapshot {} is no longer held", req.index));
        };
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
        assert!(p.accepts(EventIdx(5120)));
        assert!(p.accepts(EventIdx(5200)), "later");
        assert!(p.accepts(EventIdx(1024)), "four points back");
        assert!(!p.accepts(EventIdx(0)));
        // Off the grid: a snapshot installed on joining, however recent.
        assert!(!p.accepts(EventIdx(5000)));
        // A young cluster's point is the present: nothing older serves.
        let young = Point {
            index: EventIdx(308),
            every: 1024,
        };
        assert!(!young.accepts(EventIdx(2)));
    }
}

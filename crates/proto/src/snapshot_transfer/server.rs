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

    /// A replica wants a snapshot past `have`. `point` is the index this
    /// node would build at, if it builds for others at all (a Raft member
    /// does; a follower offers only what it holds). A held snapshot at or
    /// past the point is offered at once; else one is built at the point
    /// and offered when done (so at most one build per point). An older
    /// held one is not offered: how much its tail would hold is unknown
    /// (one event may carry a thousand keys). With nothing to offer,
    /// nothing is said.
    pub fn on_wanted(
        &mut self,
        from: NodeId,
        session: u64,
        have: EventIdx,
        point: Option<EventIdx>,
        now: Duration,
    ) -> Vec<ServeAction> {
        let busy = self.busy(now);
        if let Some(s) = self.held_past(have) {
            if point.is_none_or(|p| s.index >= p) {
                return vec![ServeAction::Offer {
                    to: from,
                    offer: s.offer(session, busy),
                }];
            }
        }
        if point.is_none_or(|p| p <= have) || self.waiting.len() >= MAX_WAITING {
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

//! The serving side: offers of a cached encoded snapshot, and its chunks.

use super::EncodedSnapshot;
use crate::wire::{Direct, SnapshotChunk, SnapshotOffer, SnapshotRequest};
use shoal_log::SnapshotBytes;
use shoal_model::{EventIdx, NodeId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeAction {
    Offer {
        to: NodeId,
        offer: SnapshotOffer,
    },
    /// Read this chunk and send it (`ChunkRead::reply`).
    Send {
        to: NodeId,
        read: ChunkRead,
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
/// A held snapshot older than the point is offered while the entries
/// after it, which its receiver fetches by range, take at most this share
/// of its bytes (1/16): a receiver fetches at most a sixteenth more than
/// from a new build, and nobody builds. Replicas with the same log agree on it, so they go on
/// offering the same snapshot while writes go on, and build anew at the
/// same point once its tail grew too long.
const TAIL_SHARE: u64 = 16;
/// Snapshots held at once (each may be in memory: a 1M-key State encodes
/// to ~76 MB).
const MAX_HELD: usize = 2;

/// Where a member builds the snapshots it serves (its snapshot point),
/// and what its log holds after a given index: the bytes of the entries
/// after it, `None` once some of them are compacted.
pub struct Point<'a> {
    pub index: EventIdx,
    pub tail_bytes: Box<dyn Fn(EventIdx) -> Option<u64> + 'a>,
}

impl Point<'_> {
    /// Whether a held snapshot may be offered for this point: at or past
    /// it, or older with a short tail (`TAIL_SHARE`) that this node's log
    /// still holds. How many events the tail has says nothing of its
    /// bytes (one event may carry a thousand keys); the log knows them.
    fn accepts(&self, snap: &EncodedSnapshot) -> bool {
        snap.index >= self.index
            || (self.tail_bytes)(snap.index)
                .is_some_and(|tail| tail.saturating_mul(TAIL_SHARE) <= snap.bytes.len())
    }
}

impl std::fmt::Debug for Point<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Point").field("index", &self.index).finish()
    }
}

/// A snapshot this node can serve, and when it last sent a chunk of it.
#[derive(Debug)]
struct Held {
    snap: EncodedSnapshot,
    served_at: Option<Duration>,
}

impl Held {
    /// A chunk of it was asked for lately.
    fn in_use(&self, now: Duration) -> bool {
        self.served_at
            .is_some_and(|at| now.saturating_sub(at) < IN_USE_WINDOW)
    }
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
    fn held_past(&self, have: EventIdx, point: Option<&Point>) -> Option<usize> {
        let fits = |h: &Held| h.snap.index > have && point.is_none_or(|p| p.accepts(&h.snap));
        let held = self.held.iter().enumerate().filter(|(_, h)| fits(h));
        held.max_by_key(|(_, h)| h.snap.index).map(|(i, _)| i)
    }

    /// An offer of `held[i]`.
    fn offer(&self, i: usize, to: NodeId, session: u64, busy: u32) -> ServeAction {
        ServeAction::Offer {
            to,
            offer: self.held[i].snap.offer(session, busy),
        }
    }

    /// A replica wants a snapshot past `have`. `point` is where this node
    /// would build, if it builds for others at all (a Raft member does; a
    /// follower offers only what it holds). The snapshot at `resume`, whose
    /// transfer the asker holds part of, is offered if held, however far
    /// the point moved: the asker goes on where it stopped rather than
    /// start over. Else a held snapshot the point accepts (at or past it,
    /// or older with a short tail in the log) is offered at once; else one
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
            return vec![self.offer(i, from, session, busy)];
        }
        // With every snapshot held in use, a build would evict one that a
        // transfer still pulls: the newest is offered instead, however far
        // the point moved; the asker fetches the longer tail by range.
        let crowded = self.held.len() >= MAX_HELD && self.held.iter().all(|h| h.in_use(now));
        let held = self
            .held_past(have, point.as_ref())
            .or_else(|| crowded.then(|| self.held_past(have, None)).flatten());
        if let Some(i) = held {
            return vec![self.offer(i, from, session, busy)];
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
                });
            }
        }
        let busy = self.busy(now);
        let waiting = std::mem::take(&mut self.waiting);
        waiting
            .into_iter()
            .filter_map(|(to, session, have)| {
                let i = self.held_past(have, None)?;
                Some(self.offer(i, to, session, busy))
            })
            .collect()
    }

    /// Holds a snapshot this node had before it started (its newest
    /// local snapshot), to offer as if built: other members that took
    /// theirs at the same index hold the same bytes. Offers owed and a
    /// build under way are left as they are; with as many held as may
    /// be, it is not held.
    pub fn hold(&mut self, snap: EncodedSnapshot) {
        let known = self.held.iter().any(|h| h.snap.index == snap.index);
        if !known && self.held.len() < MAX_HELD {
            self.held.push(Held {
                snap,
                served_at: None,
            });
        }
    }

    /// A chunk of a held snapshot, to be read by whoever sends it
    /// (`ChunkRead`): a snapshot held in its file costs one read of at
    /// most a chunk, from the page cache while the file is fresh.
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
        let read = ChunkRead {
            session: req.session,
            index: s.index,
            chunk: req.chunk,
            bytes: s.bytes.clone(),
            start,
            len,
        };
        held.served_at = Some(now);
        if self.serving.len() >= MAX_TRACKED {
            self.busy(now);
        }
        if self.serving.len() < MAX_TRACKED {
            self.serving.insert((to.clone(), req.session), now);
        }
        ServeAction::Send { to, read }
    }
}

/// A snapshot chunk read where blocking is allowed, not on the event
/// loop (`Output::SendChunk`): a chunk of a megabyte read from its file
/// and encoded held a member's loop for most of a millisecond, in a join
/// storm some ten times a second, and every write met those stretches.
#[derive(Clone, Debug)]
pub struct ChunkRead {
    session: u64,
    index: EventIdx,
    chunk: u32,
    bytes: Arc<dyn SnapshotBytes>,
    start: u64,
    len: usize,
}

/// Two reads are the same where they read the same span of the same
/// snapshot bytes, for the same session.
impl PartialEq for ChunkRead {
    fn eq(&self, other: &Self) -> bool {
        let same_bytes = std::ptr::addr_eq(Arc::as_ptr(&self.bytes), Arc::as_ptr(&other.bytes));
        same_bytes
            && (self.session, self.index, self.chunk, self.start, self.len)
                == (
                    other.session,
                    other.index,
                    other.chunk,
                    other.start,
                    other.len,
                )
    }
}

impl Eq for ChunkRead {}

impl ChunkRead {
    /// The chunk's size in bytes.
    pub fn size(&self) -> usize {
        self.len
    }

    /// The chunk, or a refusal that says why it cannot be read: blocks
    /// on the snapshot's file.
    pub fn reply(self) -> Direct {
        match self.bytes.read_at(self.start, self.len) {
            Ok(data) => Direct::SnapshotChunk(SnapshotChunk {
                session: self.session,
                index: self.index,
                chunk: self.chunk,
                data,
            }),
            Err(e) => Direct::SnapshotRefused {
                session: self.session,
                reason: format!("cannot read snapshot {}: {e}", self.index),
            },
        }
    }
}

//! The serving side: chunks cut from a cached encoded snapshot.

use super::EncodedSnapshot;
use crate::wire::{SnapshotChunk, SnapshotRequest, SNAPSHOT_CHUNK_BYTES};
use shoal_model::{EventIdx, NodeId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeAction {
    Send {
        to: NodeId,
        chunk: SnapshotChunk,
    },
    Refuse {
        to: NodeId,
        session: u64,
        reason: String,
    },
    /// Encode this State off the loop and report back with `on_built`.
    Build,
}

/// Requests waiting for a build, at most this many.
const MAX_WAITING: usize = 64;

#[derive(Debug, Default)]
pub struct SnapshotServer {
    cache: Option<EncodedSnapshot>,
    /// The one before, kept so that transfers under way when a newer
    /// snapshot is built can finish.
    previous: Option<EncodedSnapshot>,
    building: bool,
    waiting: Vec<(NodeId, SnapshotRequest)>,
}

impl SnapshotServer {
    pub fn cached(&self) -> Option<&EncodedSnapshot> {
        self.cache.as_ref()
    }

    /// Handles a chunk request. A new transfer is served from the cache
    /// while the cached snapshot is fresh: within `max_lag` of `current`
    /// (this node's applied index), and not below `log_floor`, the lowest
    /// index this node can still serve by range (older would leave the
    /// receiver a hole). Otherwise a new one is built.
    pub fn on_request(
        &mut self,
        from: NodeId,
        req: SnapshotRequest,
        current: EventIdx,
        log_floor: EventIdx,
        max_lag: u64,
    ) -> Vec<ServeAction> {
        match req.index {
            Some(index) => match (&self.cache, &self.previous) {
                (Some(c), _) if c.index == index => vec![self.chunk(from, req)],
                (_, Some(p)) if p.index == index => vec![self.chunk(from, req)],
                _ => vec![ServeAction::Refuse {
                    to: from,
                    session: req.session,
                    reason: format!("snapshot {index} is no longer held"),
                }],
            },
            None => {
                let fresh = |c: &EncodedSnapshot| {
                    c.index.next() >= log_floor && current.0.saturating_sub(c.index.0) <= max_lag
                };
                if self.cache.as_ref().is_some_and(fresh) {
                    return vec![self.chunk(from, req)];
                }
                if self.waiting.len() >= MAX_WAITING {
                    return vec![ServeAction::Refuse {
                        to: from,
                        session: req.session,
                        reason: "too many snapshot requests waiting".into(),
                    }];
                }
                self.waiting.push((from, req));
                if self.building {
                    return vec![];
                }
                self.building = true;
                vec![ServeAction::Build]
            }
        }
    }

    /// A build finished: cache it and answer whoever waited.
    pub fn on_built(&mut self, snap: EncodedSnapshot) -> Vec<ServeAction> {
        self.building = false;
        if self.cache.as_ref().is_none_or(|c| c.index != snap.index) {
            self.previous = self.cache.take();
        }
        self.cache = Some(snap);
        let waiting = std::mem::take(&mut self.waiting);
        waiting
            .into_iter()
            .map(|(to, req)| self.chunk(to, req))
            .collect()
    }

    /// One chunk, cut from the cached snapshot. A snapshot held in its
    /// file costs one read of at most `SNAPSHOT_CHUNK_BYTES` here, from
    /// the page cache while the file is fresh: the copy a chunk held in
    /// memory cost too. A read that fails refuses the request with why.
    fn chunk(&self, to: NodeId, req: SnapshotRequest) -> ServeAction {
        let c = match (&self.cache, &self.previous, req.index) {
            (_, Some(p), Some(i)) if p.index == i => p,
            (Some(c), _, _) => c,
            _ => unreachable!("chunks are cut from a cached snapshot"),
        };
        let total = c.bytes.len();
        if req.offset > total {
            return ServeAction::Refuse {
                to,
                session: req.session,
                reason: format!("offset {} is past the end ({total})", req.offset),
            };
        }
        let len = req.len.min(SNAPSHOT_CHUNK_BYTES) as usize;
        let data = match c.bytes.read_at(req.offset, len) {
            Ok(data) => data,
            Err(e) => {
                return ServeAction::Refuse {
                    to,
                    session: req.session,
                    reason: format!("cannot read snapshot {}: {e}", c.index),
                }
            }
        };
        ServeAction::Send {
            to,
            chunk: SnapshotChunk {
                session: req.session,
                index: c.index,
                total_len: total,
                sha256: c.sha256,
                offset: req.offset,
                data,
            },
        }
    }
}

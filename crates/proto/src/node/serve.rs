//! Serving others from this replica: ranges of the log (NACK replies), and
//! snapshots of State, offered on request and sent in chunks. Any
//! up-to-date replica serves; a join does not load the master alone.

use super::io::{Output, RangeRead, Saved};
use super::Node;
use crate::log_store::LogStore;
use crate::snapshot_transfer::{EncodedSnapshot, Point, ServeAction};
use crate::wire::{Direct, FetchRange, RangeReply, SnapshotRequest, RANGE_MAX_BYTES};
use shoal_model::{EventIdx, NodeId, State};

impl<L: LogStore> Node<L> {
    /// A range request: the entries, or why not (compacted: ask for a
    /// snapshot; not yet: ask someone else). The entries are read and
    /// sent off the loop (`Output::SendRange`).
    ///
    /// Only entries at or below the log's commit index are served: those
    /// are the ones applied. A member that applied committed entries from
    /// gossip ahead of Raft may still hold, at those indexes, entries of a
    /// term that lost, until Raft mends its log (`persist_applied`).
    pub(super) fn serve_range(&mut self, to: NodeId, r: FetchRange, out: &mut Vec<Output>) {
        if to == self.cfg.node {
            return;
        }
        let vouched = self
            .state
            .index()
            .min(EventIdx(self.log.hard_state().commit));
        let not_yet = RangeReply::NotYet {
            from: r.from,
            last: vouched,
        };
        let reply = if r.from < self.log.first_index() {
            RangeReply::Compacted {
                from: r.from,
                floor: self.log.first_index(),
            }
        } else if r.from > vouched || r.from > self.log.last_index() {
            not_yet
        } else {
            let to_idx = r.to.min(vouched);
            match self
                .log
                .read_later(r.from, to_idx, RANGE_MAX_BYTES as usize)
            {
                Ok(read) => {
                    self.metrics.ranges_served += 1;
                    let frame = self.frame(RangeRead::new(read, vouched));
                    out.push(Output::SendRange { to, frame });
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "range read failed");
                    not_yet
                }
            }
        };
        self.send(to, Direct::Range(reply), out);
    }

    /// A replica asks on gossip for a snapshot past `have` (`resume`: the
    /// one it holds part of). A Raft member offers its snapshot point,
    /// building it if it has not; any other replica offers only what it
    /// holds already. A held snapshot older than the point is offered
    /// while the entries after it, which the asker fetches by range, are
    /// few in bytes (`Point`): no build then. A node that has no State of
    /// this cluster yet says nothing.
    pub(super) fn on_snapshot_wanted(
        &mut self,
        from: NodeId,
        session: u64,
        have: EventIdx,
        resume: Option<EventIdx>,
        out: &mut Vec<Output>,
    ) {
        if from == self.cfg.node || self.state.cluster_id().is_none() {
            return;
        }
        let index = self.snapshot_point().index();
        let log = &self.log;
        let point = self.raft.is_some().then(|| Point {
            index,
            tail_bytes: Box::new(|held| log.bytes_after(held)),
        });
        let acts = self
            .snapshots
            .on_wanted(from, session, have, resume, point, self.now);
        self.serve(acts, out);
    }

    /// A chunk of a snapshot this node offered.
    pub(super) fn serve_snapshot(
        &mut self,
        from: NodeId,
        req: SnapshotRequest,
        out: &mut Vec<Output>,
    ) {
        let act = self.snapshots.on_request(from, req, self.now);
        self.serve(vec![act], out);
    }

    /// The State this node builds snapshots from: the one at its last
    /// snapshot point (the latest multiple of `snapshot_point_every`, so
    /// that every replica builds the same bytes), or the present one when
    /// it holds no State at that point (a young cluster, a node just
    /// restarted: an idle cluster's replicas then agree all the same).
    pub(super) fn snapshot_point(&self) -> &State {
        let every = self.cfg.catch_up.snapshot_point_every.max(1);
        let latest = self.state.index().0 / every * every;
        match &self.point {
            Some(p) if latest > 0 && p.index().0 == latest => p,
            _ => &self.state,
        }
    }

    /// Remembers State at a snapshot point (O(1): persistent maps).
    pub(super) fn note_snapshot_point(&mut self) {
        let every = self.cfg.catch_up.snapshot_point_every.max(1);
        if self.state.index().0.is_multiple_of(every) {
            self.point = Some(self.state.clone());
        }
    }

    /// A build finished: it answers whoever waited; a saved one also
    /// compacts the log.
    pub(super) fn on_snapshot_built(
        &mut self,
        snap: EncodedSnapshot,
        save: Saved,
        out: &mut Vec<Output>,
    ) {
        match save {
            Saved::Saved => self.on_local_snapshot_saved(snap.index),
            Saved::Failed => self.local_snapshot_building = false,
            Saved::NotAsked => {}
            Saved::Loaded => return self.snapshots.hold(snap),
        }
        let acts = self.snapshots.on_built(snap, self.now);
        self.serve(acts, out);
    }

    fn serve(&mut self, acts: Vec<ServeAction>, out: &mut Vec<Output>) {
        for a in acts {
            match a {
                ServeAction::Offer { to, offer } => {
                    self.metrics.snapshot_offers_sent += 1;
                    self.send(to, Direct::SnapshotOffer(offer), out);
                }
                ServeAction::Send { to, read } => {
                    self.metrics.snapshot_bytes_sent += read.size() as u64;
                    let frame = self.frame(read);
                    out.push(Output::SendChunk { to, frame });
                }
                ServeAction::Refuse {
                    to,
                    session,
                    reason,
                } => self.send(to, Direct::SnapshotRefused { session, reason }, out),
                ServeAction::Build => {
                    self.metrics.snapshot_builds += 1;
                    out.push(Output::BuildSnapshot {
                        state: Box::new(self.snapshot_point().clone()),
                        save: false,
                        chunk_bytes: self.cfg.catch_up.chunk_bytes,
                    })
                }
            }
        }
    }
}

//! Serving others from this replica: ranges of the log (NACK replies), a
//! snapshot of State in chunks, and applied events for external
//! subscribers. Any up-to-date replica serves; a join does not load the
//! master alone.

use super::io::{Output, Saved};
use super::Node;
use crate::log_store::LogStore;
use crate::snapshot_transfer::{EncodedSnapshot, ServeAction};
use crate::wire::{Direct, FetchRange, RangeReply, SnapshotRequest, RANGE_MAX_BYTES};
use shoal_model::NodeId;

impl<L: LogStore> Node<L> {
    /// A range request: the entries, or why not (compacted: ask for a
    /// snapshot; not yet: ask someone else).
    pub(super) fn serve_range(&mut self, to: NodeId, r: FetchRange, out: &mut Vec<Output>) {
        let not_yet = || RangeReply::NotYet {
            from: r.from,
            last: self.state.index(),
        };
        let reply = if r.from < self.log.first_index() {
            RangeReply::Compacted {
                from: r.from,
                floor: self.log.first_index(),
            }
        } else if r.from > self.state.index() || r.from > self.log.last_index() {
            not_yet()
        } else {
            let to_idx = r.to.min(self.state.index());
            match self.log.read(r.from, to_idx, RANGE_MAX_BYTES as usize) {
                Ok(entries) => {
                    self.metrics.ranges_served += 1;
                    RangeReply::Entries {
                        from: r.from,
                        entries,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "range read failed");
                    not_yet()
                }
            }
        };
        self.send(to, Direct::Range(reply), out);
    }

    /// A snapshot request: served from the cached encoding while it is
    /// fresh, else after a build (off the loop). A cached snapshot older
    /// than the log's floor is never served: the receiver would be left a
    /// hole (invariant 4).
    pub(super) fn serve_snapshot(
        &mut self,
        from: NodeId,
        req: SnapshotRequest,
        out: &mut Vec<Output>,
    ) {
        let floor = self.log.first_index();
        let max_lag = self.cfg.catch_up.snapshot_threshold / 2;
        let acts = self
            .snapshots
            .on_request(from, req, self.state.index(), floor, max_lag);
        self.serve(acts, out);
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
        }
        let acts = self.snapshots.on_built(snap);
        self.serve(acts, out);
    }

    fn serve(&mut self, acts: Vec<ServeAction>, out: &mut Vec<Output>) {
        for a in acts {
            match a {
                ServeAction::Send { to, chunk } => {
                    self.metrics.snapshot_bytes_sent += chunk.data.len() as u64;
                    self.send(to, Direct::SnapshotChunk(chunk), out);
                }
                ServeAction::Refuse {
                    to,
                    session,
                    reason,
                } => self.send(to, Direct::SnapshotRefused { session, reason }, out),
                ServeAction::Build => out.push(Output::BuildSnapshot {
                    state: Box::new(self.state.clone()),
                    save: false,
                }),
            }
        }
    }
}

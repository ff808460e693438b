//! Frames in and out: what this node's frames carry, which frames it
//! admits (protocol version, cluster), and which part of the core each
//! message goes to.

use super::io::Output;
use super::{BadRange, Node};
use crate::log_store::LogStore;
use crate::wire::{Direct, Frame, Gossip, PROTOCOL_VERSION};
use shoal_model::{ClusterId, LogEntry, NodeId, TransientEvent};

impl<L: LogStore> Node<L> {
    /// A frame from this node: protocol version, cluster id, sender.
    pub fn frame<M>(&self, msg: M) -> Frame<M> {
        Frame {
            version: PROTOCOL_VERSION,
            cluster: self.cluster.clone(),
            from: self.cfg.node.clone(),
            msg,
        }
    }

    pub(super) fn send(&self, to: NodeId, msg: Direct, out: &mut Vec<Output>) {
        if to == self.cfg.node {
            return;
        }
        out.push(Output::Send {
            to,
            frame: self.frame(msg),
        });
    }

    /// Frames of another version or cluster are dropped and counted.
    pub(super) fn admissible<M>(&mut self, frame: &Frame<M>) -> bool {
        if frame.version != PROTOCOL_VERSION {
            self.metrics.bad_messages += 1;
            return false;
        }
        match (&self.cluster, &frame.cluster) {
            (Some(mine), Some(theirs)) if mine != theirs => {
                self.metrics.foreign_messages += 1;
                false
            }
            _ => true,
        }
    }

    pub(super) fn on_gossip(&mut self, frame: Frame<Gossip>, out: &mut Vec<Output>) {
        if let Gossip::Transient(TransientEvent::Heartbeat(hb)) = &frame.msg {
            self.heard_other_cluster(frame.version, frame.cluster.as_ref(), hb, out);
        }
        if !self.admissible(&frame) {
            return;
        }
        match frame.msg {
            Gossip::Committed(entries) => self.on_committed(&frame.from, frame.cluster, entries),
            Gossip::Transient(ev) => self.on_transient(frame.from, frame.cluster, ev, out),
            Gossip::SnapshotWanted {
                session,
                have,
                resume,
            } => {
                if self.cluster.is_some() && frame.cluster == self.cluster {
                    self.on_snapshot_wanted(frame.from, session, have, resume, out);
                }
            }
        }
    }

    /// Entries the master says it committed: on gossip to followers, one-to-one
    /// to Raft members.
    fn on_committed(&mut self, from: &NodeId, cluster: Option<ClusterId>, entries: Vec<LogEntry>) {
        if self.cluster.is_none() || cluster != self.cluster {
            return;
        }
        // A joiner cannot check entries yet: its State comes by snapshot,
        // the tail by range.
        if self.knows_members() && self.master_view.id.as_ref() == Some(from) {
            self.catch_up.offer(entries);
        } else {
            // Only the master's word counts (see `trust`). A new master
            // this node has not learnt of yet is dropped too: the entries
            // come again by range (or by Raft).
            self.metrics.untrusted_messages += 1;
        }
    }

    /// A heartbeat or capacity report, broadcast or sent one-to-one.
    pub(super) fn on_transient(
        &mut self,
        from: NodeId,
        cluster: Option<ClusterId>,
        ev: TransientEvent,
        out: &mut Vec<Output>,
    ) {
        match ev {
            TransientEvent::Heartbeat(hb) => self.on_heartbeat(from, cluster, hb, out),
            TransientEvent::Metrics(m) => self.on_metrics(&from, m),
            _ => {}
        }
    }

    pub(super) fn on_direct(&mut self, frame: Frame<Direct>, out: &mut Vec<Output>) {
        if let Direct::Transient(TransientEvent::Heartbeat(hb)) = &frame.msg {
            self.heard_other_cluster(frame.version, frame.cluster.as_ref(), hb, out);
        }
        if !self.admissible(&frame) {
            return;
        }
        let from = frame.from;
        match frame.msg {
            Direct::Raft(bytes) => self.on_raft_message(&from, &bytes, out),
            Direct::Committed(entries) => self.on_committed(&from, frame.cluster, entries),
            Direct::FetchRange(r) => self.serve_range(from, r, out),
            Direct::Range(reply) => match self.catch_up.on_range(&from, reply) {
                Ok(()) => {}
                // Late (its request timed out) or never asked for.
                Err(BadRange::Unasked) => self.metrics.unasked_replies += 1,
                Err(BadRange::NotConsecutive) => self.metrics.bad_messages += 1,
            },
            Direct::SnapshotOffer(offer) => self.on_snapshot_offer(from, offer),
            Direct::SnapshotRequest(req) => self.serve_snapshot(from, req, out),
            Direct::SnapshotChunk(chunk) => {
                self.metrics.snapshot_bytes_received += chunk.data.len() as u64;
                let (unused, acts) = self.catch_up.on_chunk(&from, chunk, self.now);
                self.metrics.snapshot_bytes_unused += unused;
                self.run_catch_up(acts, out);
            }
            Direct::SnapshotRefused { session, reason } => {
                let acts = self.catch_up.on_refused(&from, session, &reason, self.now);
                self.run_catch_up(acts, out);
            }
            Direct::Forward(cmd) => self.sequence(cmd, Some(from), out),
            Direct::ForwardRefused { id, reason } => {
                self.on_forward_refused(&from, id, reason, out)
            }
            Direct::Join { addr } => self.on_join(from, addr),
            Direct::LeaseRenew { leases, at_ms } => self.on_lease_renew(from, leases, at_ms, out),
            Direct::LeaseRenewed { tokens, at_ms } => self.on_lease_renewed(&from, &tokens, at_ms),
            Direct::OutputSubscribe {
                task,
                attempt,
                from_seq,
            } => self.on_output_subscribe(from, &task, attempt, from_seq, out),
            Direct::Output(chunks) => self.on_output(&from, chunks, out),
            Direct::Leave => self.on_leave(from),
            Direct::Transient(ev) => self.on_transient(from, frame.cluster, ev, out),
            Direct::ReadIndex { id } => self.on_read_index(from, id, out),
            Direct::ReadIndexReply { id, result } => {
                self.on_read_index_reply(&from, id, result, out)
            }
            Direct::ReportsWanted => self.on_reports_wanted(from, out),
            Direct::Reports(reports) => self.on_reports(&from, reports),
        }
    }
}

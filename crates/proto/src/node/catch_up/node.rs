//! The node's side of catching up: it feeds `CatchUp` what it knows
//! (trusted sources, the master, its State) after every step and carries
//! out the actions it returns (messages, logs, metrics, installing).

use super::{BadOffer, CatchUpAction};
use crate::log_store::LogStore;
use crate::node::io::Output;
use crate::node::Node;
use crate::wire::{Direct, Gossip, SnapshotOffer};
use shoal_model::NodeId;

impl<L: LogStore> Node<L> {
    /// The catch-up decision, after every step (see `catch_up`).
    pub(in crate::node) fn follow(&mut self, out: &mut Vec<Output>) {
        // Committed gossip is for the followers. A joiner cannot check it
        // yet; a Raft member has every entry by Raft and hears of each
        // commit from the master one-to-one (`Direct::Committed`), and
        // relaying the followers' gossip would take the core its
        // acknowledgements wait for (in a join storm, a send and a timer
        // per message per mesh peer).
        let holds_state = self.state.cluster_id().is_some();
        let follows = holds_state && self.raft.is_none();
        if self.following_committed != Some(follows) {
            self.following_committed = Some(follows);
            out.push(Output::FollowCommitted(follows));
        }
        if self.cluster.is_none() {
            return;
        }
        let joining = self.state.cluster_id().is_none();
        if !self.knows_members() {
            // A joiner heard the master before it had listened long enough
            // to believe it: the commit its last heartbeat gave counts now.
            if let Some(hb) = self.named_master().and_then(|m| self.peers.heartbeat(&m)) {
                self.catch_up.note_commit(hb.commit);
            }
        }
        let entries = self.state.kv().len() + self.state.outcomes().len();
        self.catch_up.note_state_entries(entries as u64);
        let sources = if self.catch_up.has_work() {
            self.trusted_sources()
        } else {
            Vec::new()
        };
        let acts = self.catch_up.plan(
            self.now,
            self.state.index(),
            joining,
            &sources,
            self.master_view.id.as_ref(),
        );
        self.run_catch_up(acts, out);
    }

    pub(in crate::node) fn run_catch_up(
        &mut self,
        acts: Vec<CatchUpAction>,
        out: &mut Vec<Output>,
    ) {
        for a in acts {
            match a {
                CatchUpAction::Fetch { peer, range } => {
                    self.metrics.nacks_sent += 1;
                    self.send(peer, Direct::FetchRange(range), out);
                }
                CatchUpAction::Ask {
                    session,
                    have,
                    resume,
                } => {
                    tracing::info!(node = %self.cfg.node, have = %have, resume = ?resume, "asking for a snapshot");
                    out.push(Output::Broadcast(self.frame(Gossip::SnapshotWanted {
                        session,
                        have,
                        resume,
                    })));
                }
                CatchUpAction::SnapshotRequest { to, req, again } => {
                    self.metrics.snapshot_chunks_asked_again += u64::from(again);
                    self.send(to, Direct::SnapshotRequest(req), out)
                }
                CatchUpAction::SnapshotStarted {
                    sources,
                    index,
                    behind,
                    resumed,
                } => {
                    let sources: Vec<&str> = sources.iter().map(NodeId::as_str).collect();
                    tracing::info!(node = %self.cfg.node, index = %index, behind, sources = ?sources, resumed, "catching up by snapshot");
                    self.metrics.snapshot_transfers_resumed += u64::from(resumed);
                }
                CatchUpAction::Progress(p) => out.push(Output::CatchUp(p)),
                CatchUpAction::Dropped {
                    source,
                    reason,
                    bad,
                } => {
                    tracing::warn!(node = %self.cfg.node, source = %source, reason = %reason, "snapshot source dropped");
                    if bad {
                        self.metrics.snapshot_bad_chunks += 1;
                    }
                }
                CatchUpAction::Install(state, snap) => self.install_snapshot(*state, snap, out),
                CatchUpAction::Failed(reason) => {
                    tracing::warn!(node = %self.cfg.node, reason = %reason, "snapshot transfer failed; will retry");
                    self.metrics.snapshot_failures += 1;
                }
            }
        }
    }

    /// A replica offers a snapshot this node asked for.
    pub(in crate::node) fn on_snapshot_offer(&mut self, from: NodeId, offer: SnapshotOffer) {
        let vouched = self.trusted_sources().iter().any(|s| s.node == from);
        match self.catch_up.on_offer(&from, offer, vouched, self.now) {
            Ok(()) => {}
            Err(BadOffer::Unasked) => self.metrics.unasked_replies += 1,
            Err(BadOffer::Malformed(why)) => {
                tracing::debug!(from = %from, why = %why, "malformed snapshot offer");
                self.metrics.bad_messages += 1;
            }
        }
    }
}

//! Whose word counts.
//!
//! Raft members (voters and learners, as State records them, or as this
//! node's own Raft knows them) hold the committed log because Raft gave it
//! to them; under Raft's fault model they are believed about it. Any other
//! replica is not: a follower that completed the handshake may be buggy or
//! hostile. So committed entries on gossip, and how far the log is
//! committed, are taken only from the master (for a member, the leader
//! Raft names; for a follower, the leader a majority of voters name in
//! their heartbeats, so that no single node, not even a voter, can make
//! itself master in a follower's eyes); and ranges and snapshots are asked
//! only of members. A reply from anyone not asked is dropped.
//!
//! A node with no members in its State yet (a joiner) has no one to check
//! against: it believes the node that more than half of the peers it
//! hears naming a master name, and loads its first State from it. That is trust on first use;
//! a cluster key keeps strangers from being heard at all.

use super::catch_up::Source;
use super::Node;
use crate::log_store::LogStore;
use shoal_model::{NodeId, Role};

impl<L: LogStore> Node<L> {
    /// A Raft member, as State or this node's Raft knows it.
    pub(super) fn trusted(&self, node: &NodeId) -> bool {
        let Some(info) = self.state.nodes().get(node) else {
            return false;
        };
        info.role != Role::Follower
            || self.raft.as_ref().is_some_and(|r| {
                r.voters().contains(&info.raft_id) || r.learners().contains(&info.raft_id)
            })
    }

    /// Whether State names any member yet.
    pub(super) fn knows_members(&self) -> bool {
        self.state
            .nodes()
            .values()
            .any(|n| n.role != Role::Follower)
    }

    /// Whose heartbeat is believed about how far the log is committed:
    /// the master (for a joiner, the one its peers name). Any other
    /// node's claim, a voter's too, could send this node chasing entries
    /// that do not exist.
    pub(super) fn believed(&self, node: &NodeId) -> bool {
        if self.knows_members() {
            return self.master_view.id.as_ref() == Some(node);
        }
        self.named_master().as_ref() == Some(node)
    }

    /// For a joiner: the master more than half of the peers that name one
    /// name, once it has listened for a heartbeat interval (so that it has
    /// heard them all, not just the quickest or loudest).
    pub(super) fn named_master(&self) -> Option<NodeId> {
        if self.now < self.started + self.cfg.heartbeat_every {
            return None;
        }
        self.peers.named_master(self.cluster.as_ref(), self.now)
    }

    /// The replicas ranges and snapshots may be asked of.
    pub(super) fn trusted_sources(&self) -> Vec<Source> {
        let (cluster, now) = (self.cluster.as_ref(), self.now);
        if self.knows_members() {
            return self.peers.sources_where(cluster, now, |n| self.trusted(n));
        }
        let named = self.named_master();
        let source = named.and_then(|m| self.peers.source(&m, cluster, now));
        source.into_iter().collect()
    }
}

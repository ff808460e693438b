//! Members: the nodes of the cluster, their Raft roles and liveness, and
//! the events that change them (founding, joins, the failure detector's
//! verdicts, leaves, clean-up of the gone, membership changes).

use super::validate::Limits;
use super::State;
use crate::event::{Liveness, Outcome, Rejection, Role};
use crate::ids::{ClusterId, NodeId, RaftId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub raft_id: RaftId,
    pub addr: String,
    pub role: Role,
    pub liveness: Liveness,
    pub joined_at_ms: u64,
    /// Drained by an operator (`shoal nodes drain`): no new work is placed
    /// on it and its replicas are placed elsewhere; it stays a member.
    pub drained: bool,
}

/// A node that is not drained hashes as it did before nodes could be
/// drained, so that snapshots written then still check.
impl std::hash::Hash for NodeInfo {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.raft_id.hash(h);
        self.addr.hash(h);
        self.role.hash(h);
        self.liveness.hash(h);
        self.joined_at_ms.hash(h);
        if self.drained {
            self.drained.hash(h);
        }
    }
}

impl State {
    /// Nodes whose Raft role is `role`, by Raft id.
    pub fn members(&self, role: Role) -> Vec<(RaftId, NodeId)> {
        let mut v: Vec<_> = self
            .nodes()
            .iter()
            .filter(|(_, n)| n.role == role)
            .map(|(id, n)| (n.raft_id, id.clone()))
            .collect();
        v.sort();
        v
    }

    /// The founder's first entry: the cluster id, and the founder as the
    /// first voter (Raft id 1). Ignored once a cluster is recorded.
    pub(super) fn cluster_founded(
        &mut self,
        cluster_id: &ClusterId,
        founder: &NodeId,
        addr: &str,
        at_ms: u64,
    ) {
        if self.meta.cluster_id.is_none() {
            self.found(cluster_id, founder, addr, at_ms);
        }
    }

    /// Records the cluster `cluster_id` with `founder` its first voter.
    fn found(&mut self, cluster_id: &ClusterId, founder: &NodeId, addr: &str, at_ms: u64) {
        self.set_meta(super::Meta {
            cluster_id: Some(cluster_id.clone()),
            founded_at_ms: at_ms,
            next_raft_id: 2,
        });
        let info = NodeInfo {
            raft_id: RaftId(1),
            addr: addr.to_owned(),
            role: Role::Voter,
            liveness: Liveness::Alive,
            joined_at_ms: at_ms,
            drained: false,
        };
        self.nodes.insert(founder.clone(), info);
    }

    /// This State's data as that of a new cluster founded by `founder`
    /// alone, as a restore from a backup does after every voter was lost:
    /// keys, locks, tasks, deployments and command outcomes stay at their
    /// index; the members are replaced by the founder, the only voter
    /// (Raft id 1), and the cluster takes `cluster_id`. Runs granted to the
    /// old members lapse and are granted again, as after their death.
    pub fn refounded(
        mut self,
        cluster_id: ClusterId,
        founder: &NodeId,
        addr: &str,
        at_ms: u64,
    ) -> State {
        let members: Vec<NodeId> = self.nodes.as_map().keys().cloned().collect();
        for n in &members {
            self.nodes.remove(n);
        }
        self.found(&cluster_id, founder, addr, at_ms);
        self
    }

    /// A node joins (a new Raft id, as a follower) or rejoins (alive again,
    /// at its new address).
    pub(super) fn node_joined(&mut self, node: &NodeId, addr: &str, at_ms: u64) {
        let rejoined = self.nodes.update(node, |n| {
            n.addr = addr.to_owned();
            n.liveness = Liveness::Alive;
        });
        if rejoined || self.nodes.len() >= Limits::MAX_NODES || self.meta.cluster_id.is_none() {
            return;
        }
        let mut meta = self.meta.clone();
        let raft_id = RaftId(meta.next_raft_id);
        meta.next_raft_id += 1;
        self.set_meta(meta);
        let info = NodeInfo {
            raft_id,
            addr: addr.to_owned(),
            role: Role::Follower,
            liveness: Liveness::Alive,
            joined_at_ms: at_ms,
            drained: false,
        };
        self.nodes.insert(node.clone(), info);
    }

    /// The failure detector's verdict. A node that left stays left unless
    /// it is seen alive again (it came back).
    pub(super) fn node_liveness(&mut self, node: &NodeId, liveness: Liveness) {
        self.nodes.update(node, |n| {
            if n.liveness != Liveness::Left || liveness == Liveness::Alive {
                n.liveness = liveness;
            }
        });
    }

    pub(super) fn node_left(&mut self, node: &NodeId) {
        self.nodes.update(node, |n| n.liveness = Liveness::Left);
    }

    /// `Op::NodeRemove`: a member that is not alive is forgotten if it is a
    /// follower, else marked left (its seat is then handed on).
    pub(super) fn node_remove(&mut self, node: &NodeId) -> Outcome {
        let Some(info) = self.nodes.get(node) else {
            return Outcome::Rejected(Rejection::NotFound);
        };
        if matches!(info.liveness, Liveness::Alive | Liveness::Suspect) {
            return Outcome::Rejected(Rejection::Invalid {
                reason: format!(
                    "{node} is {}: only a dead or departed node is removed (stop it, or run \
                     shoal leave on it, first)",
                    match info.liveness {
                        Liveness::Alive => "alive",
                        _ => "suspect (heard of lately)",
                    }
                ),
            });
        }
        if info.role == Role::Follower {
            self.nodes.remove(node);
            return Outcome::Applied(true);
        }
        self.node_left(node);
        Outcome::Applied(false)
    }

    /// `Op::NodeDrain`: whether the drain mark changed.
    pub(super) fn node_drain(&mut self, node: &NodeId, drain: bool) -> Outcome {
        let Some(info) = self.nodes.get(node) else {
            return Outcome::Rejected(Rejection::NotFound);
        };
        if info.drained == drain {
            return Outcome::Applied(false);
        }
        self.nodes.update(node, |n| n.drained = drain);
        Outcome::Applied(true)
    }

    /// Removes a dead or departed follower (a logged clean-up).
    pub(super) fn node_forgotten(&mut self, node: &NodeId) {
        let gone = self.nodes.get(node).is_some_and(|n| {
            matches!(n.liveness, Liveness::Dead | Liveness::Left) && n.role == Role::Follower
        });
        if gone {
            self.nodes.remove(node);
        }
    }

    /// A committed Raft membership change, mirrored.
    pub(super) fn membership(&mut self, node: &NodeId, role: Role) {
        self.nodes.update(node, |n| n.role = role);
    }
}

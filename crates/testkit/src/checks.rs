//! The invariants the simulator checks after every step, and the
//! convergence conditions scenarios wait for.

use super::Sim;
use shoal_model::{EventIdx, NodeId};
use std::time::Duration;

impl Sim {
    /// At most one master per term; equal State at equal index (no
    /// committed entry lost or changed); no replica goes back in its cluster;
    /// no message
    /// of a correct node refused.
    pub(crate) fn check(&mut self, id: &NodeId) {
        // Only the node a delivery reached can have changed.
        if let Some(node) = self.node(id) {
            let id = id.clone();
            let master_term = node
                .is_master()
                .then(|| node.raft().expect("a master runs raft").term());
            let (idx, hash) = (node.state().index(), node.state().hash());
            let refused = node.metrics().bad_messages;
            let cluster = node.cluster().cloned();
            if let Some(term) = master_term {
                let first = self
                    .leaders
                    .entry((cluster.clone(), term))
                    .or_insert_with(|| id.clone());
                assert_eq!(first, &id, "seed {}: two masters in term {term}", self.seed);
            }
            if idx > EventIdx::ZERO {
                let seen = *self.hashes.entry((cluster.clone(), idx)).or_insert(hash);
                assert_eq!(
                    seen, hash,
                    "seed {}: {id} has another state at index {idx}",
                    self.seed
                );
            }
            // Correct nodes never send what another refuses.
            if !self.refusals_expected {
                assert_eq!(
                    refused, 0,
                    "seed {}: {id} refused a message of a correct node",
                    self.seed
                );
            }
            // A node that gave up a cluster starts again in another.
            let key = (id.clone(), cluster);
            let before = self.applied.insert(key, idx).unwrap_or_default();
            assert!(
                before <= idx,
                "seed {}: {id} went back from {before} to {idx}",
                self.seed
            );
        }
    }

    /// Every live node applied up to the highest commit any of them knows,
    /// with one state hash.
    pub fn converged(&self) -> bool {
        self.converged_among(&self.live(), false)
    }

    /// Like `converged`, within one group of nodes (which must have
    /// committed something).
    pub fn converged_group(&self, group: &[NodeId]) -> bool {
        self.converged_among(group, true)
    }

    fn converged_among(&self, group: &[NodeId], nonempty: bool) -> bool {
        let nodes: Vec<_> = group.iter().filter_map(|n| self.node(n)).collect();
        let Some(first) = nodes.first() else {
            return true;
        };
        let target = nodes
            .iter()
            .map(|n| n.commit_index())
            .max()
            .unwrap_or_default();
        nodes.iter().all(|n| {
            n.state().index() == target
                && n.state().hash() == first.state().hash()
                && (!nonempty || target > EventIdx::ZERO)
        })
    }

    /// Panics with the seed unless the cluster converges within `limit`.
    pub fn expect_converged(&mut self, limit: Duration) {
        if !self.run_until(limit, |s| s.converged()) {
            let view: Vec<String> = self
                .live()
                .iter()
                .filter_map(|n| {
                    self.node(n).map(|x| {
                        format!(
                            "{n}: applied {} commit {} {}",
                            x.state().index(),
                            x.commit_index(),
                            x.status().role
                        )
                    })
                })
                .collect();
            panic!(
                "seed {}: no convergence within {limit:?}: {view:?}",
                self.seed
            );
        }
    }

    /// Runs until one master is elected and has founded the cluster.
    pub fn expect_master(&mut self, limit: Duration) -> NodeId {
        let ok = self.run_until(limit, |s| {
            s.master()
                .is_some_and(|m| s.node(&m).is_some_and(|n| n.state().cluster_id().is_some()))
        });
        assert!(
            ok,
            "seed {}: no master within {limit:?} (masters: {:?})",
            self.seed,
            self.masters()
        );
        self.master().expect("checked")
    }
}

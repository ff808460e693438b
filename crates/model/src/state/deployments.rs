//! Deployments: long-running instances with a number of replicas, each
//! placed on a node by the master (the placement's index is its token).
//! Reports under a token that is no longer the placement's are stale.

use super::validate::{full, Limits};
use super::{rejected, State};
use crate::event::{InstanceSpec, Outcome, Rejection, ReplicaStatus};
use crate::ids::{EventIdx, FencingToken, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where one replica of a deployment runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPlacement {
    pub node: NodeId,
    pub token: FencingToken,
    pub port: u16,
    pub status: ReplicaStatus,
    pub restarts: u32,
    /// The exit code of its last crash, kept across restarts and moves.
    pub last_exit: Option<i32>,
}

/// A replica that never crashed hashes as it did before last exits were
/// kept, so that snapshots written then still check.
impl std::hash::Hash for ReplicaPlacement {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.node.hash(h);
        self.token.hash(h);
        self.port.hash(h);
        self.status.hash(h);
        self.restarts.hash(h);
        if let Some(code) = self.last_exit {
            code.hash(h);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Deployment {
    pub spec: InstanceSpec,
    pub replicas: u32,
    pub placements: BTreeMap<u32, ReplicaPlacement>,
}

impl State {
    /// Creates or changes a deployment. A changed spec drops every
    /// placement (the master places the new one); fewer replicas drop the
    /// ones past the count.
    pub(super) fn deploy(&mut self, name: &str, spec: &InstanceSpec, replicas: u32) -> Outcome {
        let existing = self.deployments.get(name).cloned();
        if existing.is_none() && self.deployments.len() >= Limits::MAX_DEPLOYMENTS {
            return rejected(full("deployments"));
        }
        let mut placements = existing
            .filter(|d| d.spec == *spec)
            .map(|d| d.placements)
            .unwrap_or_default();
        placements.retain(|r, _| *r < replicas);
        let d = Deployment {
            spec: spec.clone(),
            replicas,
            placements,
        };
        self.deployments.insert(name.to_owned(), d);
        Outcome::Done
    }

    pub(super) fn undeploy(&mut self, name: &str) -> Outcome {
        Outcome::Applied(self.deployments.remove(name).is_some())
    }

    /// A node reports on a replica it runs under `token`.
    pub(super) fn replica_report(
        &mut self,
        deployment: &str,
        replica: u32,
        token: FencingToken,
        status: &ReplicaStatus,
    ) -> Outcome {
        let current = self
            .deployments
            .get(deployment)
            .and_then(|d| d.placements.get(&replica))
            .map(|p| p.token);
        if current != Some(token) {
            return rejected(Rejection::StaleToken);
        }
        self.deployments.update(deployment, |d| {
            if let Some(p) = d.placements.get_mut(&replica) {
                if let ReplicaStatus::Crashed { exit_code } = status {
                    p.restarts += 1;
                    p.last_exit = Some(*exit_code);
                }
                p.status = *status;
            }
        });
        Outcome::Done
    }

    /// The master placed a replica; its restart count and last exit carry
    /// over.
    pub(super) fn replica_placed(
        &mut self,
        idx: EventIdx,
        deployment: &str,
        replica: u32,
        node: &NodeId,
        port: u16,
    ) {
        self.deployments.update(deployment, |d| {
            if replica < d.replicas {
                let (restarts, last_exit) = d
                    .placements
                    .get(&replica)
                    .map_or((0, None), |p| (p.restarts, p.last_exit));
                d.placements.insert(
                    replica,
                    ReplicaPlacement {
                        node: node.clone(),
                        token: FencingToken(idx.0),
                        port,
                        status: ReplicaStatus::Starting,
                        restarts,
                        last_exit,
                    },
                );
            }
        });
    }

    /// The master took a replica off its node (if still that placement).
    pub(super) fn replica_unplaced(&mut self, deployment: &str, replica: u32, token: FencingToken) {
        self.deployments.update(deployment, |d| {
            if d.placements.get(&replica).is_some_and(|p| p.token == token) {
                d.placements.remove(&replica);
            }
        });
    }
}

//! What older snapshot formats carry, and how each is read into today's
//! State (see `snapshot`).

use serde::{Deserialize, Serialize};
use shoal_model::{
    ClusterId, Deployment, EventIdx, FencingToken, InstanceSpec, NodeId, NodeInfo, OutcomeRecord,
    ReplicaPlacement, ReplicaStatus, StateHash, Term,
};
use std::collections::BTreeMap;

/// The header of format version 1, which had no body length.
#[derive(Deserialize)]
pub(crate) struct HeaderV1 {
    pub index: EventIdx,
    pub term: Term,
    pub state_hash: StateHash,
    pub cluster_id: Option<ClusterId>,
    pub entries: u64,
}

/// A command outcome as formats 1 to 3 carry it: without its request.
#[derive(Serialize, Deserialize)]
pub(crate) struct OutcomeRecordV3 {
    outcome: shoal_model::Outcome,
    idx: EventIdx,
    at_ms: u64,
}

impl OutcomeRecordV3 {
    pub(crate) fn upgrade<K>((key, r): (K, OutcomeRecordV3)) -> (K, OutcomeRecord) {
        let record = OutcomeRecord {
            outcome: r.outcome,
            idx: r.idx,
            at_ms: r.at_ms,
            request: None,
        };
        (key, record)
    }
}

/// A member as formats 1 to 4 carry it: without its drain mark.
#[derive(Serialize, Deserialize)]
pub(crate) struct NodeInfoV4 {
    raft_id: shoal_model::RaftId,
    addr: String,
    role: shoal_model::Role,
    liveness: shoal_model::Liveness,
    joined_at_ms: u64,
}

impl NodeInfoV4 {
    pub(crate) fn upgrade((id, n): (NodeId, NodeInfoV4)) -> (NodeId, NodeInfo) {
        let info = NodeInfo {
            raft_id: n.raft_id,
            addr: n.addr,
            role: n.role,
            liveness: n.liveness,
            joined_at_ms: n.joined_at_ms,
            drained: false,
        };
        (id, info)
    }
}

/// A deployment as formats 1 to 5 carry it: its replicas without their
/// last exit.
#[derive(Serialize, Deserialize)]
pub(crate) struct DeploymentV5 {
    spec: InstanceSpec,
    replicas: u32,
    placements: BTreeMap<u32, ReplicaPlacementV5>,
}

#[derive(Serialize, Deserialize)]
struct ReplicaPlacementV5 {
    node: NodeId,
    token: FencingToken,
    port: u16,
    status: ReplicaStatus,
    restarts: u32,
}

impl DeploymentV5 {
    pub(crate) fn upgrade((name, d): (String, DeploymentV5)) -> (String, Deployment) {
        let placements = d
            .placements
            .into_iter()
            .map(|(replica, p)| {
                let placement = ReplicaPlacement {
                    node: p.node,
                    token: p.token,
                    port: p.port,
                    status: p.status,
                    restarts: p.restarts,
                    last_exit: None,
                };
                (replica, placement)
            })
            .collect();
        let deployment = Deployment {
            spec: d.spec,
            replicas: d.replicas,
            placements,
        };
        (name, deployment)
    }
}

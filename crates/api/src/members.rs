//! The members: `GET /v1/nodes` lists them with what this node hears of
//! them; `DELETE /v1/nodes/{id}` removes a dead or departed one;
//! `PUT /v1/nodes/{id}/drain` drains one (`DELETE` takes it back).

use crate::openapi::{Id, NotFound};
use crate::{refused, stopped, ApiError, ApiResult};
use axum::extract::{Path, State as AxState};
use axum::Json;
use serde::Serialize;
use shoal_model::{EventIdx, Liveness, NodeId, NodeInfo, Op, Outcome, RaftId, Role, State};
use shoal_node::{NodeHandle, View};
use std::time::Duration;
use utoipa::ToSchema;

/// How long a removal waits for a removed voter's seat to move.
const SEAT_WAIT: Duration = Duration::from_secs(20);

/// A member as State records it.
#[derive(Serialize, ToSchema)]
pub(crate) struct Member {
    node_id: NodeId,
    raft_id: RaftId,
    addr: String,
    role: MemberRole,
    liveness: Liveness,
    drained: bool,
}

/// What a member is to Raft; `/v1/nodes` says `master` of the master.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MemberRole {
    Master,
    Voter,
    Learner,
    Follower,
}

impl Member {
    pub(crate) fn of(id: &NodeId, n: &NodeInfo) -> Member {
        Member {
            node_id: id.clone(),
            raft_id: n.raft_id,
            addr: n.addr.clone(),
            role: match n.role {
                Role::Voter => MemberRole::Voter,
                Role::Learner => MemberRole::Learner,
                Role::Follower => MemberRole::Follower,
            },
            liveness: n.liveness,
            drained: n.drained,
        }
    }
}

/// A member with what this node hears of it and what it last reported.
#[derive(Serialize, ToSchema)]
pub(crate) struct NodeView {
    #[serde(flatten)]
    member: Member,
    master: bool,
    /// How long ago this node last heard it.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_heard_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_index: Option<EventIdx>,
    /// How far behind the commit it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag: Option<u64>,
    #[serde(flatten)]
    report: Report,
}

/// What a member last reported of itself, once it has: capacity, build,
/// the members it does not hear, where its API answers, whether it takes
/// work and may vote.
#[derive(Serialize, ToSchema, Default)]
pub(crate) struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_free_milli: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mem_free_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_free_bytes: Option<u64>,
    /// Tasks and replicas running there.
    #[serde(skip_serializing_if = "Option::is_none")]
    runs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unheard: Option<Vec<NodeId>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    may_vote: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported_ms_ago: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Nodes {
    index: EventIdx,
    nodes: Vec<NodeView>,
}

/// The members, with liveness, drain mark, what this node hears of them,
/// and what each last reported (capacity, build, the members it does not
/// hear, where its API answers, whether it takes work and may vote).
#[utoipa::path(
    get,
    path = "/v1/nodes",
    operation_id = "listNodes",
    responses((status = 200, body = Nodes))
)]
pub(crate) async fn nodes(AxState(node): AxState<NodeHandle>) -> ApiResult<Nodes> {
    let state = node.state().await.ok_or_else(stopped)?;
    node.want_reports();
    let nodes = nodes_view(&state, &node.view());
    Ok(Json(Nodes {
        index: state.index(),
        nodes,
    }))
}

/// The members in State, with what this node hears of them: when last,
/// how far they applied, and how far behind the commit they are.
pub(crate) fn nodes_view(state: &State, view: &View) -> Vec<NodeView> {
    let commit = view.status.commit_index.0;
    let reports: std::collections::BTreeMap<_, _> = view
        .capacities
        .iter()
        .map(|(c, age)| (&c.node, (c, age)))
        .collect();
    state
        .nodes()
        .iter()
        .map(|(id, n)| {
            let (last_heard_ms, applied) =
                if let Some(p) = view.peers.iter().find(|p| &p.node == id) {
                    (Some(p.since_heard.as_millis() as u64), Some(p.applied))
                } else if *id == view.status.node_id {
                    (Some(0), Some(view.status.applied_index))
                } else {
                    (None, None)
                };
            let report = reports
                .get(id)
                .map(|(c, age)| Report {
                    cpu_free_milli: Some(c.cpu_free_milli),
                    mem_free_bytes: Some(c.mem_free_bytes),
                    disk_free_bytes: Some(c.disk_free_bytes),
                    runs: Some(c.running),
                    version: Some(c.version.clone()),
                    started_ms: Some(c.started_ms),
                    unheard: Some(c.unheard.clone()),
                    api_url: Some(c.api.clone()),
                    worker: Some(c.worker),
                    may_vote: Some(c.voter),
                    reported_ms_ago: Some(age.as_millis() as u64),
                })
                .unwrap_or_default();
            let master = view.status.master_id.as_ref() == Some(id);
            let mut member = Member::of(id, n);
            if master {
                member.role = MemberRole::Master;
            }
            NodeView {
                member,
                master,
                last_heard_ms,
                applied_index: applied,
                lag: applied.map(|a| commit.saturating_sub(a.0)),
                report,
            }
        })
        .collect()
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Removed {
    /// False if a voter's seat has not moved yet: it stays listed as left.
    removed: bool,
    index: EventIdx,
}

/// Removes a dead or departed member (etcd's `member remove`, Consul's
/// `force-leave`). A live one: 400 invalid.
///
/// A voter is first marked left, which hands its seat on;
/// the removal is asked again until the seat has moved, for at most
/// `SEAT_WAIT` (20 s), then it answers `removed: false` (the node stays listed
/// as left, and is forgotten once its seat moves and the retention ends).
#[utoipa::path(
    delete,
    path = "/v1/nodes/{id}",
    operation_id = "removeNode",
    params(Id),
    responses((status = 200, body = Removed), (status = 404, response = NotFound))
)]
pub(crate) async fn remove(
    AxState(node): AxState<NodeHandle>,
    Path(id): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    let member = NodeId::parse(&id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let until = tokio::time::Instant::now() + SEAT_WAIT;
    loop {
        let op = Op::NodeRemove {
            node: member.clone(),
        };
        let (index, outcome) = node.submit(op, None).await?;
        match outcome {
            Outcome::Applied(removed) => {
                if removed || tokio::time::Instant::now() >= until {
                    return Ok(Json(Removed { removed, index }));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return Err(refused(index, other)),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Drained {
    drained: bool,
    /// False if it was so already.
    changed: bool,
    index: EventIdx,
}

/// Drains a member: no new tasks or replicas go to it, and its replicas
/// are placed elsewhere; tasks under way there finish.
///
/// It stays a member (a voter keeps its seat). `changed` is false if it
/// was drained already.
#[utoipa::path(
    put,
    path = "/v1/nodes/{id}/drain",
    operation_id = "drainNode",
    params(Id),
    responses((status = 200, body = Drained), (status = 404, response = NotFound))
)]
pub(crate) async fn drain(node: AxState<NodeHandle>, id: Path<String>) -> ApiResult<Drained> {
    set_drain(node, id, true).await
}

/// Takes a drained member back: work may be placed on it again.
#[utoipa::path(
    delete,
    path = "/v1/nodes/{id}/drain",
    operation_id = "undrainNode",
    params(Id),
    responses((status = 200, body = Drained), (status = 404, response = NotFound))
)]
pub(crate) async fn undrain(node: AxState<NodeHandle>, id: Path<String>) -> ApiResult<Drained> {
    set_drain(node, id, false).await
}

async fn set_drain(
    AxState(node): AxState<NodeHandle>,
    Path(id): Path<String>,
    drain: bool,
) -> ApiResult<Drained> {
    let member = NodeId::parse(&id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let op = Op::NodeDrain {
        node: member,
        drain,
    };
    match node.submit(op, None).await? {
        (index, Outcome::Applied(changed)) => Ok(Json(Drained {
            drained: drain,
            changed,
            index,
        })),
        (index, other) => Err(refused(index, other)),
    }
}

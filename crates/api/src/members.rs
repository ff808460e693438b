//! The members: `GET /v1/nodes` lists them with what this node hears of
//! them; `DELETE /v1/nodes/{id}` removes a dead or departed one;
//! `PUT /v1/nodes/{id}/drain` drains one (`DELETE` takes it back).

use crate::{committed, stopped, ApiError, ApiResult};
use axum::extract::{Path, State as AxState};
use axum::Json;
use serde_json::{json, Value};
use shoal_model::{NodeId, NodeInfo, Op, Outcome, State};
use shoal_node::{NodeHandle, View};
use std::time::Duration;

/// How long a removal waits for a removed voter's seat to move.
const SEAT_WAIT: Duration = Duration::from_secs(20);

pub(crate) fn node_json(id: &str, n: &NodeInfo) -> Value {
    json!({
        "node_id": id,
        "raft_id": n.raft_id,
        "addr": n.addr,
        "role": n.role,
        "liveness": n.liveness,
        "drained": n.drained,
    })
}

pub(crate) async fn nodes(AxState(node): AxState<NodeHandle>) -> ApiResult {
    let state = node.state().await.ok_or_else(stopped)?;
    let nodes = nodes_json(&state, &node.view());
    Ok(Json(json!({"index": state.index(), "nodes": nodes})))
}

/// The members in State, with what this node hears of them: when last,
/// how far they applied, and how far behind the commit they are.
pub(crate) fn nodes_json(state: &State, view: &View) -> Vec<Value> {
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
            let mut v = node_json(id.as_str(), n);
            let applied = if let Some(p) = view.peers.iter().find(|p| &p.node == id) {
                v["last_heard_ms"] = json!(p.since_heard.as_millis() as u64);
                Some(p.applied)
            } else if *id == view.status.node_id {
                v["last_heard_ms"] = json!(0);
                Some(view.status.applied_index)
            } else {
                None
            };
            if let Some(a) = applied {
                v["applied_index"] = json!(a);
                v["lag"] = json!(commit.saturating_sub(a.0));
            }
            if let Some((c, age)) = reports.get(id) {
                v["cpu_free_milli"] = json!(c.cpu_free_milli);
                v["mem_free_bytes"] = json!(c.mem_free_bytes);
                v["disk_free_bytes"] = json!(c.disk_free_bytes);
                v["runs"] = json!(c.running);
                v["version"] = json!(c.version);
                v["started_ms"] = json!(c.started_ms);
                v["unheard"] = json!(c.unheard);
                v["api_url"] = json!(c.api);
                v["worker"] = json!(c.worker);
                v["may_vote"] = json!(c.voter);
                v["reported_ms_ago"] = json!(age.as_millis() as u64);
            }
            let master = view.status.master_id.as_ref() == Some(id);
            v["master"] = json!(master);
            if master {
                v["role"] = json!("master");
            }
            v
        })
        .collect()
}

/// Removes a dead or departed member (etcd's `member remove`, Consul's
/// `force-leave`). A voter is first marked left, which hands its seat on;
/// the removal is asked again until the seat has moved, for at most
/// `SEAT_WAIT`, then it answers `removed: false` (the node stays listed
/// as left, and is forgotten once its seat moves and the retention ends).
pub(crate) async fn remove(
    AxState(node): AxState<NodeHandle>,
    Path(id): Path<String>,
) -> ApiResult {
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
                    return Ok(Json(json!({"removed": removed, "index": index})));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return committed(Ok((index, other))),
        }
    }
}

/// Drains a member: no new tasks or replicas go to it, and its replicas
/// are placed elsewhere; tasks under way there finish. It stays a member
/// (a voter keeps its seat). `changed` is false if it was drained already.
pub(crate) async fn drain(node: AxState<NodeHandle>, id: Path<String>) -> ApiResult {
    set_drain(node, id, true).await
}

/// Takes a drained member back: work may be placed on it again.
pub(crate) async fn undrain(node: AxState<NodeHandle>, id: Path<String>) -> ApiResult {
    set_drain(node, id, false).await
}

async fn set_drain(
    AxState(node): AxState<NodeHandle>,
    Path(id): Path<String>,
    drain: bool,
) -> ApiResult {
    let member = NodeId::parse(&id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let op = Op::NodeDrain {
        node: member,
        drain,
    };
    match node.submit(op, None).await? {
        (index, Outcome::Applied(changed)) => Ok(Json(
            json!({"drained": drain, "changed": changed, "index": index}),
        )),
        other => committed(Ok(other)),
    }
}

//! Instances under `/v1/deployments`: long-running processes with
//! replicas, placed and re-placed by the master.
//!
//! ```text
//! POST   /v1/deployments           {"name", "replicas", "cmd": [...] | "synthetic": {...},
//!                                   "env", "cwd", "cpu_milli", "mem_bytes"}
//! GET    /v1/deployments           every deployment with its replicas
//! GET    /v1/deployments/{name}    one, each replica with node, address, status, restarts, last exit
//! DELETE /v1/deployments/{name}    undeploy: its replicas are stopped
//! ```
//!
//! A replica gets `PORT`, `SHOAL_DEPLOYMENT`, `SHOAL_REPLICA` and
//! `SHOAL_FENCING_TOKEN`; its address is its node's host and that port.

use crate::kv::command_id;
use crate::openapi::{Idempotency, NotFound, NotJson};
use crate::routes::{route, Route};
use crate::tasks::{check_exec, RunnerView};
use crate::ErrorCode;
use crate::{committed, json_content, stopped, ApiError, ApiResult, Committed};
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
use serde::Serialize;
use shoal_model::{Deployment, EventIdx, FencingToken, NodeId, Op, ReplicaStatus, State};
use shoal_node::NodeHandle;
use shoal_request::DeployBody;
use utoipa::{IntoParams, ToSchema};

pub(crate) fn routes() -> Vec<Route> {
    vec![
        route(Method::GET, "/v1/deployments", list),
        route(Method::POST, "/v1/deployments", deploy),
        route(Method::GET, "/v1/deployments/{name}", one),
        route(Method::DELETE, "/v1/deployments/{name}", undeploy),
    ]
}

/// The host part of a node's multiaddr (`/ip4/H/tcp/P/...`).
fn host_of(addr: &str) -> Option<&str> {
    let mut parts = addr.split('/');
    while let Some(p) = parts.next() {
        if p == "ip4" || p == "ip6" || p == "dns" || p == "dns4" || p == "dns6" {
            return parts.next();
        }
    }
    None
}

/// A placed replica's state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReplicaState {
    Starting,
    Running,
    /// It exited with this status, and will be started again.
    Crashed(i32),
}

/// A replica no node could take yet.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Unplaced {
    Unplaced,
}

/// Where a replica runs: its node, port and address (the node's host and
/// that port), the fencing token of its placement, its state, how often
/// it was restarted and how it last exited.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Placement {
    Placed {
        replica: u32,
        node: NodeId,
        port: u16,
        addr: Option<String>,
        token: FencingToken,
        status: ReplicaState,
        restarts: u32,
        last_exit: Option<i32>,
    },
    Unplaced {
        replica: u32,
        status: Unplaced,
    },
}

/// A deployment: what runs, how many replicas, and where each is.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeploymentView {
    name: String,
    replicas: u32,
    runner: RunnerView,
    placements: Vec<Placement>,
}

impl DeploymentView {
    pub(crate) fn of(name: &str, d: &Deployment, s: &State) -> DeploymentView {
        let placements = (0..d.replicas)
            .map(|replica| match d.placements.get(&replica) {
                None => Placement::Unplaced {
                    replica,
                    status: Unplaced::Unplaced,
                },
                Some(p) => {
                    let host = s
                        .nodes()
                        .get(&p.node)
                        .and_then(|n| host_of(&n.addr).map(str::to_owned));
                    Placement::Placed {
                        replica,
                        node: p.node.clone(),
                        port: p.port,
                        addr: host.map(|h| format!("{h}:{}", p.port)),
                        token: p.token,
                        status: match p.status {
                            ReplicaStatus::Starting => ReplicaState::Starting,
                            ReplicaStatus::Running => ReplicaState::Running,
                            ReplicaStatus::Crashed { exit_code } => {
                                ReplicaState::Crashed(exit_code)
                            }
                        },
                        restarts: p.restarts,
                        last_exit: p.last_exit,
                    }
                }
            })
            .collect();
        DeploymentView {
            name: name.to_owned(),
            replicas: d.replicas,
            runner: RunnerView::of(&d.spec.runner),
            placements,
        }
    }
}

/// Deploy, or change a deployment -> applied.
#[utoipa::path(
    post,
    path = "/v1/deployments",
    operation_id = "deploy",
    params(Idempotency),
    request_body = DeployBody,
    responses((status = 200, body = Committed), (status = 415, response = NotJson))
)]
async fn deploy(
    AxState(node): AxState<NodeHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Committed> {
    json_content(&headers)?;
    let op = shoal_request::deploy(&body)?;
    if let Op::Deploy { spec, .. } = &op {
        check_exec(&node, &spec.runner).await?;
    }
    committed(node.submit(op, command_id(&headers)?).await)
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Deployments {
    index: EventIdx,
    deployments: Vec<DeploymentView>,
}

/// Every deployment with its replicas.
#[utoipa::path(
    get,
    path = "/v1/deployments",
    operation_id = "listDeployments",
    responses((status = 200, body = Deployments))
)]
async fn list(AxState(node): AxState<NodeHandle>) -> ApiResult<Deployments> {
    let s = node.state().await.ok_or_else(stopped)?;
    Ok(Json(Deployments {
        index: s.index(),
        deployments: s
            .deployments()
            .iter()
            .map(|(n, d)| DeploymentView::of(n, d, &s))
            .collect(),
    }))
}

/// A deployment's name in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(
    dead_code,
    reason = "describes the path parameter handlers take as text"
)]
struct Name {
    /// A deployment's name: 1 to 512 bytes of UTF-8.
    #[param(min_length = 1, max_length = 512)]
    name: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct OneDeployment {
    #[serde(flatten)]
    deployment: DeploymentView,
    index: EventIdx,
}

/// One deployment, each replica with its node, address, status, restarts
/// and last exit.
#[utoipa::path(
    get,
    path = "/v1/deployments/{name}",
    operation_id = "getDeployment",
    params(Name),
    responses((status = 200, body = OneDeployment), (status = 404, response = NotFound))
)]
async fn one(
    AxState(node): AxState<NodeHandle>,
    Path(name): Path<String>,
) -> ApiResult<OneDeployment> {
    let s = node.state().await.ok_or_else(stopped)?;
    let d = s.deployments().get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no deployment {name:?}"),
        )
    })?;
    Ok(Json(OneDeployment {
        deployment: DeploymentView::of(&name, d, &s),
        index: s.index(),
    }))
}

/// Undeploy: its replicas are stopped -> applied.
#[utoipa::path(
    delete,
    path = "/v1/deployments/{name}",
    operation_id = "undeploy",
    params(Name, Idempotency),
    responses((status = 200, body = Committed), (status = 404, response = NotFound))
)]
async fn undeploy(
    AxState(node): AxState<NodeHandle>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Committed> {
    committed(
        node.submit(Op::Undeploy { name }, command_id(&headers)?)
            .await,
    )
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_comes_from_the_multiaddr() {
        assert_eq!(host_of("/ip4/10.0.0.5/tcp/4100/p2p/12D3"), Some("10.0.0.5"));
        assert_eq!(host_of("/ip6/::1/tcp/1"), Some("::1"));
        assert_eq!(host_of("sim://n1"), None);
    }
}

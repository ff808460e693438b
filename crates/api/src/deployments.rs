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
use crate::routes::{route, Route};
use crate::tasks::check_exec;
use crate::ErrorCode;
use crate::{committed, json_content, stopped, ApiError, ApiResult};
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use shoal_model::{Deployment, Op, ReplicaStatus, Runner, State};
use shoal_node::NodeHandle;

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

pub(crate) fn deployment_json(name: &str, d: &Deployment, s: &State) -> Value {
    let replicas: Vec<Value> = (0..d.replicas)
        .map(|r| match d.placements.get(&r) {
            None => json!({"replica": r, "status": "unplaced"}),
            Some(p) => {
                let host = s
                    .nodes()
                    .get(&p.node)
                    .and_then(|n| host_of(&n.addr).map(str::to_owned));
                let status = match p.status {
                    ReplicaStatus::Starting => json!("starting"),
                    ReplicaStatus::Running => json!("running"),
                    ReplicaStatus::Crashed { exit_code } => json!({"crashed": exit_code}),
                };
                json!({
                    "replica": r,
                    "node": p.node,
                    "port": p.port,
                    "addr": host.map(|h| format!("{h}:{}", p.port)),
                    "token": p.token,
                    "status": status,
                    "restarts": p.restarts,
                    "last_exit": p.last_exit,
                })
            }
        })
        .collect();
    let runner = match &d.spec.runner {
        Runner::Exec { cmd, args, .. } => json!({"cmd": cmd, "args": args}),
        Runner::Synthetic {
            chunks,
            interval_ms,
            exit_code,
        } => {
            json!({"synthetic": {"chunks": chunks, "interval_ms": interval_ms, "exit_code": exit_code}})
        }
    };
    json!({"name": name, "replicas": d.replicas, "runner": runner, "placements": replicas})
}

async fn deploy(AxState(node): AxState<NodeHandle>, headers: HeaderMap, body: Bytes) -> ApiResult {
    json_content(&headers)?;
    let op = shoal_request::deploy(&body)?;
    if let Op::Deploy { spec, .. } = &op {
        check_exec(&node, &spec.runner).await?;
    }
    committed(node.submit(op, command_id(&headers)?).await)
}

async fn list(AxState(node): AxState<NodeHandle>) -> ApiResult {
    let s = node.state().await.ok_or_else(stopped)?;
    let items: Vec<Value> = s
        .deployments()
        .iter()
        .map(|(n, d)| deployment_json(n, d, &s))
        .collect();
    Ok(Json(json!({"index": s.index(), "deployments": items})))
}

async fn one(AxState(node): AxState<NodeHandle>, Path(name): Path<String>) -> ApiResult {
    let s = node.state().await.ok_or_else(stopped)?;
    let d = s.deployments().get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no deployment {name:?}"),
        )
    })?;
    let mut v = deployment_json(&name, d, &s);
    v["index"] = json!(s.index());
    Ok(Json(v))
}

async fn undeploy(
    AxState(node): AxState<NodeHandle>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
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

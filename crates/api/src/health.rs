//! Probes for load balancers and init systems: `/health` (the process
//! serves) and `/ready` (it holds its cluster's State, knows a master and
//! is caught up). Neither needs the token (see `auth.rs`).

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use shoal_node::NodeHandle;
use shoal_proto::node::Status;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub(crate) struct Alive {
    alive: bool,
}

/// The process serves its API (for liveness probes; no token needed).
#[utoipa::path(get, path = "/health", responses((status = 200, body = Alive)))]
pub(crate) async fn health() -> Json<Alive> {
    Json(Alive { alive: true })
}

/// A ready node is behind the commit by at most this many events.
const READY_LAG: u64 = 1000;

/// Why a node is not ready to serve reads and writes; empty when it is.
fn not_ready(s: &Status, loading: bool) -> Vec<String> {
    let mut why = Vec::new();
    if s.cluster_id.is_none() || s.applied_index.0 == 0 {
        why.push("holds no State of a cluster yet".to_owned());
    }
    if s.master_id.is_none() {
        why.push("knows no master (no quorum in sight)".to_owned());
    }
    let lag = s.commit_index.0.saturating_sub(s.applied_index.0);
    if lag > READY_LAG {
        why.push(format!("{lag} events behind the commit"));
    }
    if loading {
        why.push("loading a snapshot".to_owned());
    }
    if let Some(e) = &s.storage_error {
        why.push(format!("storage: {e}"));
    }
    why
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    ready: bool,
    /// Why not, when it is not.
    why: Vec<String>,
}

/// 200 when the node holds its cluster's State, knows a master, and is
/// caught up; else 503 with why (for load balancers and `systemd`
/// readiness; no token needed).
#[utoipa::path(
    get,
    path = "/ready",
    responses(
        (status = 200, body = Readiness, description = "ready"),
        (status = 503, body = Readiness, description = "not ready, and why"),
    )
)]
pub(crate) async fn ready(AxState(node): AxState<NodeHandle>) -> axum::response::Response {
    let v = node.view();
    let why = not_ready(&v.status, v.catch_up.is_some());
    let code = if why.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let ready = why.is_empty();
    (code, Json(Readiness { ready, why })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::{ClusterId, EventIdx, NodeId, StateHash, Term};
    use shoal_proto::node::NodeRole;

    fn status() -> Status {
        Status {
            node_id: NodeId::from("n"),
            cluster_id: Some(ClusterId::from("c")),
            role: NodeRole::Follower,
            master_id: Some(NodeId::from("m")),
            master_reason: None,
            term: Term(2),
            applied_index: EventIdx(5000),
            commit_index: EventIdx(5500),
            state_hash: StateHash::default(),
            peers: vec![],
            storage_error: None,
            voter_shortfall: None,
        }
    }

    #[test]
    fn ready_once_it_holds_state_knows_a_master_and_is_caught_up() {
        assert!(not_ready(&status(), false).is_empty());
        let mut s = status();
        s.applied_index = EventIdx(0);
        s.master_id = None;
        let why = not_ready(&s, true);
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[2].contains("5500 events behind"), "{why:?}");
        let mut s = status();
        s.storage_error = Some("disk full".into());
        assert_eq!(not_ready(&s, false), ["storage: disk full"]);
    }
}

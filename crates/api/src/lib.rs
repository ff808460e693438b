//! shoal's HTTP API, served by every node from its local replica. Writes
//! go to the master through the node; reads answer from this replica and
//! carry the index they reflect.
//!
//! ```text
//! GET  /v1/status            this node: role, master, term, indices, state hash, peers
//! GET  /v1/nodes             the members in State, with what this node hears of them
//! DELETE /v1/nodes/{id}      remove a dead or departed member (see `members.rs`)
//! PUT|DELETE /v1/nodes/{id}/drain   drain a member (no new work, replicas moved off) or take it back
//! GET  /v1/state[?limit=N]   State (KV capped at N keys, default 1000)
//! GET  /v1/snapshot          State as a snapshot file, for a backup (see `backup.rs`)
//! GET  /metrics              Prometheus (OpenMetrics) text format (see `metrics.rs`)
//! POST /v1/leave             drain and leave the cluster, then exit
//! GET  /v1/openapi.json      the OpenAPI description of all of this
//! GET  /health               200 while the node serves (no token needed)
//! GET  /ready                200 once it holds State, knows a master and is caught up; else 503 and why
//! GET  /                     the dashboard (see `dashboard.rs`)
//! GET  /v1/dashboard/history the last 15 minutes, a sample a second, with markers (see `history.rs`)
//! GET  /v1/events?from=N     committed events as server-sent events (see `events.rs`)
//! /v1/tasks...              tasks and their output (see `tasks.rs`)
//! /v1/deployments...        instances and their replicas (see `deployments.rs`)
//!
//! GET    /v1/kv?prefix=P&limit=N          keys under a prefix
//! GET    /v1/kv/{key}                     value, version, TTL, and the index read at
//! GET    /v1/kv/{key}/range?start&stop    list elements (negative: from the end)
//! PUT    /v1/kv/{key}                     set (body: the value)
//! DELETE /v1/kv/{key}                     delete
//! POST   /v1/kv/{key}/set-if-absent?ttl_ms=N   (body: the value) -> applied
//! POST   /v1/kv/{key}/cas                 {"expected": V|null, "value": V} -> applied
//! POST   /v1/kv/{key}/incr?by=N           -> the new value
//! POST   /v1/kv/{key}/add | /remove       set member (body) -> applied
//! POST   /v1/kv/{key}/push                list element (body) -> new length
//! POST   /v1/kv/{key}/lock                {"holder": H, "ttl_ms": N} -> token
//! POST   /v1/kv/{key}/keepalive | /unlock {"token": T}
//! POST   /v1/txn                          {"guards": [..], "ops": [..]}: all or none (see `kv.rs`)
//! ```
//!
//! Reads take `?consistent=true` to read at an index the master confirmed
//! with a majority (ReadIndex) instead of answering from this replica as
//! it is. Writes honour
//! `Idempotency-Key` (a retry returns the first outcome; another request
//! under a used key gets 422) and
//! `Shoal-Fence: LOCK:TOKEN` (applied only while that lock holds that
//! token). Writes need `Authorization: Bearer TOKEN`; reads too unless the
//! API listens on loopback only; a task's output always (`auth.rs`).
//! Command environments are hidden unless a token holder asks
//! (`secrets.rs`). Requests must name this node in `Host` (`host.rs`).
//! Streams are capped and pulled at the client's pace (`streams.rs`);
//! connections are capped and timed (`server.rs`).
//!
//! Errors are JSON: `{"error": {"code": "no_quorum", "message": "..."}}`.

mod auth;
mod backup;
mod dashboard;
mod deployments;
mod error;
mod events;
mod health;
mod history;
mod host;
mod kv;
mod members;
mod metrics;
mod openapi;
mod routes;
mod secrets;
mod server;
mod streams;
mod tasks;

pub use auth::Access;
pub use error::{ApiError, ErrorCode};
pub use host::{parse_origin, Hosts};
pub use openapi::json as openapi_json;
pub use server::{serve, ServeCounters, ServeLimits};

use axum::extract::{DefaultBodyLimit, Query, State as AxState};
use axum::http::Method;
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Extension;
use axum::{Json, Router};
pub(crate) use error::{json_content, stopped};
pub(crate) use members::{nodes_view, Member};
use routes::{route, Route};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shoal_model::{ClusterId, EventIdx, FencingToken, Limits, NodeId, Outcome, Rejection, State};
use shoal_model::{TaskId, Term};
use shoal_node::{NodeHandle, View};
use shoal_proto::node::NodeRole;
use shoal_proto::wire::CommandReply;
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Request bodies larger than this are refused with 413: room for a
/// compare-and-set's two largest values, JSON-escaped.
const MAX_BODY: usize = 4 * Limits::MAX_VALUE_LEN;

/// How the API is served (`shoal up --api-*`).
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub access: Access,
    /// The names `Host` may give besides IP addresses and `localhost`.
    pub hosts: Hosts,
    /// Streams open at once (events, dashboard, task output); one more
    /// gets 503.
    pub max_streams: usize,
    /// A request not answered within this gets 503 `timeout` (streams
    /// count as answered once they start).
    pub request_timeout: Duration,
    /// The one other origin a browser may call the API from, if any.
    pub cors_origin: Option<HeaderValue>,
    /// This build's version (`shoal_build_info`).
    pub version: String,
}

impl ApiConfig {
    pub const DEFAULT_MAX_STREAMS: usize = 64;
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
}

pub fn router(node: NodeHandle, cfg: ApiConfig) -> Router {
    let figures = metrics::Metrics::new(&node, &cfg.version);
    let history = history::sampler::start(node.clone(), figures.clone());
    let access = cfg.access;
    let faults = access.faults;
    let router = routes::router(routes_served());
    // Test-only, and only when asked for at start (not documented).
    let router = if faults {
        router.route("/v1/fault/delay", post(fault_delay))
    } else {
        router
    };
    let timeout = cfg.request_timeout;
    let router = router
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::no_method)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(Extension(streams::Streams::new(cfg.max_streams)))
        .layer(axum::middleware::from_fn(move |req, next| {
            error::within(timeout, req, next)
        }))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(Extension(figures.clone()))
        .layer(Extension(history))
        .layer(axum::middleware::from_fn_with_state(
            figures,
            metrics::time_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            auth::check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(cfg.hosts),
            host::check,
        ));
    let router = match cfg.cors_origin {
        Some(origin) => router.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origin)
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any),
        ),
        None => router,
    };
    router.with_state(node)
}

/// Every route the API serves (`routes`), each documented in `openapi.rs`.
fn routes_served() -> Vec<Route> {
    let mut all = vec![
        route(Method::GET, "/health", health::health),
        route(Method::GET, "/ready", health::ready),
        route(Method::GET, "/v1/status", status),
        route(Method::GET, "/v1/nodes", members::nodes),
        route(Method::DELETE, "/v1/nodes/{id}", members::remove),
        route(Method::PUT, "/v1/nodes/{id}/drain", members::drain),
        route(Method::DELETE, "/v1/nodes/{id}/drain", members::undrain),
        route(Method::GET, "/v1/state", state),
        route(Method::GET, "/v1/snapshot", backup::snapshot),
        route(Method::GET, "/metrics", metrics::metrics),
        route(Method::POST, "/v1/leave", leave),
        route(Method::GET, "/v1/events", events::events),
        route(Method::GET, "/", dashboard::page),
        route(Method::GET, "/v1/dashboard/stream", dashboard::stream),
        route(Method::GET, "/v1/dashboard/history", dashboard::history),
        route(Method::GET, "/v1/openapi.json", serve_openapi),
    ];
    all.extend(kv::routes());
    all.extend(tasks::routes());
    all.extend(deployments::routes());
    all
}

#[derive(Deserialize)]
struct DelayQuery {
    ms: u64,
}

/// Test-only: every outgoing message of this node waits `ms` first.
async fn fault_delay(
    AxState(node): AxState<NodeHandle>,
    Query(q): Query<DelayQuery>,
) -> Json<Value> {
    let ms = q.ms.min(10_000);
    node.set_fault_delay(std::time::Duration::from_millis(ms));
    Json(json!({ "delay_ms": ms }))
}

/// This description: every operation, parameter and body.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    responses((status = 200, body = Object))
)]
async fn serve_openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi::json(),
    )
}

pub(crate) type ApiResult<T = Value> = Result<Json<T>, ApiError>;

/// This node: its role, the master and why it leads, term, indices,
/// State hash, peers, and why it cannot write or fill a voter seat, if so.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = StatusBody)))]
async fn status(AxState(node): AxState<NodeHandle>) -> Json<StatusBody> {
    Json(StatusBody::of(&node.view()))
}

/// What `/v1/status` answers.
#[derive(Serialize, ToSchema)]
#[schema(as = Status)]
pub(crate) struct StatusBody {
    node_id: NodeId,
    cluster_id: Option<ClusterId>,
    /// `master`, `voter` or `follower`.
    #[schema(value_type = String)]
    role: NodeRole,
    master_id: Option<NodeId>,
    /// Why the master leads: it founded the cluster, was elected after the
    /// master before it went unheard, or was handed over as it left.
    master_reason: Option<String>,
    term: Term,
    applied_index: EventIdx,
    commit_index: EventIdx,
    state_hash: String,
    peers: Vec<NodeId>,
    /// Committed events not applied here yet.
    lag: u64,
    events_per_sec: f64,
    listen: Vec<String>,
    uptime_s: f64,
    /// Why this node's disk takes no writes, while it does not.
    storage_error: Option<String>,
    /// On the master, why a voter seat stays empty, while one does.
    voter_shortfall: Option<String>,
    /// While a snapshot is loading.
    snapshot_download: Option<SnapshotDownload>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SnapshotDownload {
    received_bytes: u64,
    total_bytes: u64,
    entries: u64,
}

impl StatusBody {
    pub(crate) fn of(v: &View) -> StatusBody {
        let s = &v.status;
        StatusBody {
            node_id: s.node_id.clone(),
            cluster_id: s.cluster_id.clone(),
            role: s.role,
            master_id: s.master_id.clone(),
            master_reason: (s.master_reason.as_ref())
                .map(|r| r.describe_for(s.master_id.as_ref(), NodeId::to_string)),
            term: s.term,
            applied_index: s.applied_index,
            commit_index: s.commit_index,
            state_hash: s.state_hash.to_string(),
            peers: s.peers.clone(),
            lag: s.commit_index.0.saturating_sub(s.applied_index.0),
            events_per_sec: v.events_per_sec,
            listen: v.listen.clone(),
            uptime_s: v.started.elapsed().as_secs_f64(),
            storage_error: s.storage_error.clone(),
            voter_shortfall: s.voter_shortfall.clone(),
            snapshot_download: v.catch_up.as_ref().map(|p| SnapshotDownload {
                received_bytes: p.received,
                total_bytes: p.total,
                entries: p.entries,
            }),
        }
    }
}

/// Drains this node (runs handed back, leadership moved, leave recorded)
/// and stops it.
#[utoipa::path(post, path = "/v1/leave", responses((status = 202, body = Leaving)))]
async fn leave(AxState(node): AxState<NodeHandle>) -> (StatusCode, Json<Leaving>) {
    node.shutdown();
    (StatusCode::ACCEPTED, Json(Leaving { leaving: true }))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Leaving {
    leaving: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StateQuery {
    /// Keys listed at most (default 1000, at most 100000).
    #[param(maximum = 18446744073709551615u64)]
    limit: Option<usize>,
}

/// State at this replica: index, term, hash, the members, and the first
/// keys (`limit`), with how many keys, tasks and deployments it holds.
#[utoipa::path(
    get,
    path = "/v1/state",
    params(StateQuery),
    responses((status = 200, body = StateBody), (status = 400, response = openapi::Invalid))
)]
async fn state(
    AxState(node): AxState<NodeHandle>,
    Query(q): Query<StateQuery>,
) -> ApiResult<StateBody> {
    let s: State = node.state().await.ok_or_else(stopped)?;
    let limit = q.limit.unwrap_or(1000).min(100_000);
    Ok(Json(StateBody {
        index: s.index(),
        term: s.term(),
        state_hash: s.hash().to_string(),
        cluster_id: s.cluster_id().cloned(),
        nodes: s.nodes().iter().map(|(id, n)| Member::of(id, n)).collect(),
        kv_total: s.kv().len(),
        kv: s
            .kv()
            .iter()
            .take(limit)
            .map(|(k, e)| kv::Entry::of(k, e))
            .collect(),
        tasks_total: s.tasks().len(),
        deployments_total: s.deployments().len(),
    }))
}

#[derive(Serialize, ToSchema)]
#[schema(as = State)]
pub(crate) struct StateBody {
    index: EventIdx,
    term: Term,
    state_hash: String,
    cluster_id: Option<ClusterId>,
    nodes: Vec<Member>,
    kv_total: usize,
    kv: Vec<kv::Entry>,
    tasks_total: usize,
    deployments_total: usize,
}

pub(crate) fn committed(reply: CommandReply) -> ApiResult<Committed> {
    let (index, outcome) = reply?;
    Ok(Json(Committed {
        index,
        outcome: OutcomeBody::of(outcome)?,
    }))
}

/// An outcome a handler did not expect of its command: the refusal it
/// carries, or (a bug) 500.
pub(crate) fn refused(index: EventIdx, outcome: Outcome) -> ApiError {
    match OutcomeBody::of(outcome) {
        Err(rejection) => rejection.into(),
        Ok(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Error,
            format!("the command at index {index} returned what its route does not expect"),
        ),
    }
}

/// A command committed: the index of its event, and what it returned.
#[derive(Serialize, ToSchema)]
pub(crate) struct Committed {
    index: EventIdx,
    #[serde(flatten)]
    outcome: OutcomeBody,
}

/// What a command returned, as the operation gives it: a value, whether
/// it applied, a lock's token, a task's id; a transaction's `results`,
/// one per op, or the guard that failed.
#[derive(Serialize, ToSchema, Default)]
#[schema(as = Outcome)]
pub(crate) struct OutcomeBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<ValueBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<FencingToken>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<TaskId>,
    /// Each op's outcome in order, when every guard held.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    results: Option<Vec<OutcomeBody>>,
    /// The position of the first guard that did not hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_guard: Option<u32>,
}

/// A value a command returns: text, an integer, or null (none was
/// there).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum ValueBody {
    Text(String),
    Int(i64),
    Null,
}

impl OutcomeBody {
    /// An outcome as the API answers it; a refusal is an error.
    fn of(outcome: Outcome) -> Result<OutcomeBody, Rejection> {
        let none = OutcomeBody::default();
        Ok(match outcome {
            Outcome::Rejected(r) => return Err(r),
            Outcome::Done => none,
            Outcome::Value(v) => OutcomeBody {
                value: Some(v.map_or(ValueBody::Null, ValueBody::Text)),
                ..none
            },
            Outcome::Int(n) => OutcomeBody {
                value: Some(ValueBody::Int(n)),
                ..none
            },
            Outcome::Applied(b) => OutcomeBody {
                applied: Some(b),
                ..none
            },
            Outcome::Token(t) => OutcomeBody {
                token: Some(t),
                ..none
            },
            Outcome::Task(t) => OutcomeBody {
                task: Some(t),
                ..none
            },
            Outcome::Txn(results) => OutcomeBody {
                applied: Some(true),
                results: Some(
                    results
                        .into_iter()
                        .map(OutcomeBody::of)
                        .collect::<Result<_, _>>()?,
                ),
                ..none
            },
            Outcome::GuardFailed { guard } => OutcomeBody {
                applied: Some(false),
                failed_guard: Some(guard),
                ..none
            },
        })
    }
}

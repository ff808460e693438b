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
mod routes;
mod secrets;
mod server;
mod streams;
mod tasks;

pub use auth::Access;
pub use error::{ApiError, ErrorCode};
pub use host::{parse_origin, Hosts};
pub use server::{serve, ServeCounters, ServeLimits};

use axum::extract::{DefaultBodyLimit, Query, State as AxState};
use axum::http::Method;
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Extension;
use axum::{Json, Router};
pub(crate) use error::{json_content, stopped};
pub(crate) use members::{node_json, nodes_json};
use routes::{route, Route};
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_model::{Limits, Outcome, Rejection, State};
use shoal_node::{NodeHandle, View};
use shoal_proto::wire::CommandReply;
use std::sync::Arc;
use std::time::Duration;

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

const OPENAPI: &str = include_str!("../assets/openapi.json");

/// Every route the API serves (`routes`), each documented in `OPENAPI`.
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
        route(Method::GET, "/v1/openapi.json", openapi),
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

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

pub(crate) type ApiResult = Result<Json<Value>, ApiError>;

async fn status(AxState(node): AxState<NodeHandle>) -> Json<Value> {
    Json(status_json(&node.view()))
}

pub(crate) fn status_json(v: &View) -> Value {
    let s = &v.status;
    json!({
        "node_id": s.node_id,
        "cluster_id": s.cluster_id,
        "role": s.role,
        "master_id": s.master_id,
        "master_reason": s.master_reason.as_ref().map(|r| r.to_string()),
        "term": s.term,
        "applied_index": s.applied_index,
        "commit_index": s.commit_index,
        "state_hash": s.state_hash.to_string(),
        "peers": s.peers,
        "lag": s.commit_index.0.saturating_sub(s.applied_index.0),
        "events_per_sec": v.events_per_sec,
        "listen": v.listen,
        "uptime_s": v.started.elapsed().as_secs_f64(),
        "storage_error": s.storage_error,
        "voter_shortfall": s.voter_shortfall,
        "snapshot_download": v.catch_up.as_ref().map(|p| json!({
            "received_bytes": p.received,
            "total_bytes": p.total,
            "entries": p.entries,
        })),
    })
}

/// Drains this node (runs handed back, leadership moved, leave recorded)
/// and stops it.
async fn leave(AxState(node): AxState<NodeHandle>) -> (StatusCode, Json<Value>) {
    node.shutdown();
    (StatusCode::ACCEPTED, Json(json!({"leaving": true})))
}

#[derive(Deserialize)]
struct StateQuery {
    limit: Option<usize>,
}

async fn state(AxState(node): AxState<NodeHandle>, Query(q): Query<StateQuery>) -> ApiResult {
    let s: State = node.state().await.ok_or_else(stopped)?;
    let limit = q.limit.unwrap_or(1000).min(100_000);
    let kv: Vec<Value> = s
        .kv()
        .iter()
        .take(limit)
        .map(|(k, e)| kv::entry_json(k, e))
        .collect();
    let nodes: Vec<Value> = s
        .nodes()
        .iter()
        .map(|(id, n)| node_json(id.as_str(), n))
        .collect();
    Ok(Json(json!({
        "index": s.index(),
        "term": s.term(),
        "state_hash": s.hash().to_string(),
        "cluster_id": s.cluster_id(),
        "nodes": nodes,
        "kv_total": s.kv().len(),
        "kv": kv,
        "tasks_total": s.tasks().len(),
        "deployments_total": s.deployments().len(),
    })))
}

pub(crate) fn committed(reply: CommandReply) -> ApiResult {
    let (idx, outcome) = reply?;
    let mut body = outcome_json(outcome)?;
    body["index"] = json!(idx);
    Ok(Json(body))
}

/// An outcome as the API answers it (without the index); a transaction's
/// carries each op's in `results`.
fn outcome_json(outcome: Outcome) -> Result<Value, Rejection> {
    Ok(match outcome {
        Outcome::Rejected(r) => return Err(r),
        Outcome::Done => json!({}),
        Outcome::Value(v) => json!({"value": v}),
        Outcome::Int(n) => json!({"value": n}),
        Outcome::Applied(b) => json!({"applied": b}),
        Outcome::Token(t) => json!({"token": t}),
        Outcome::Task(t) => json!({"task": t}),
        Outcome::Txn(results) => {
            let results = results
                .into_iter()
                .map(outcome_json)
                .collect::<Result<Vec<_>, _>>()?;
            json!({"applied": true, "results": results})
        }
        Outcome::GuardFailed { guard } => json!({"applied": false, "failed_guard": guard}),
    })
}

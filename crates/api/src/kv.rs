//! The coordination primitives under `/v1/kv`. Writes are commands
//! committed in order through the master; reads answer from this replica
//! with the index they reflect, or, with `?consistent=true`, at a read
//! index the master confirmed with a majority (Raft's ReadIndex: no log
//! entry per read).

use crate::ErrorCode;
use crate::{committed, json_content, stopped, ApiError, ApiResult};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_model::{CommandId, KvEntry, KvValue, Limits, Op, State};
use shoal_node::NodeHandle;
use std::ops::Bound;
use std::time::Duration;

/// How long a consistent read waits for this replica to apply its read
/// index.
const CONSISTENT_WAIT: Duration = Duration::from_secs(5);
/// Keys a prefix listing returns at most.
const MAX_LIST: usize = 10_000;
/// A transaction's body: room for its keys and values, JSON-escaped.
const MAX_TXN_BODY: usize = 4 * Limits::MAX_TXN_BYTES;

pub(crate) fn routes() -> Router<NodeHandle> {
    Router::new()
        .route("/v1/kv", get(list))
        .route("/v1/kv/{key}", get(read).put(set).delete(delete))
        .route("/v1/kv/{key}/range", get(range))
        .route("/v1/kv/{key}/cas", post(cas))
        .route("/v1/kv/{key}/incr", post(incr))
        .route("/v1/kv/{key}/lock", post(lock))
        // set-if-absent, add, remove, push: the body is one text value.
        // keepalive, unlock: the body is {"token": T}.
        .route("/v1/kv/{key}/{verb}", post(verb))
        .route(
            "/v1/txn",
            post(txn).layer(DefaultBodyLimit::max(MAX_TXN_BODY)),
        )
}

pub(crate) fn value_json(v: &KvValue) -> Value {
    match v {
        KvValue::Str(s) => json!(s),
        KvValue::Int(n) => json!(n),
        KvValue::Set(s) => json!({"set": s}),
        KvValue::List(l) => json!({"list": l}),
        KvValue::Lock { holder, token } => json!({"lock": {"holder": holder, "token": token}}),
    }
}

pub(crate) fn entry_json(key: &str, e: &KvEntry) -> Value {
    json!({"key": key, "value": value_json(&e.value), "version": e.version, "ttl_ms": e.ttl_ms})
}

/// The command id from `Idempotency-Key`, if the client sent one.
pub(crate) fn command_id(headers: &HeaderMap) -> Result<Option<CommandId>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key must be text"))?;
    CommandId::parse(s)
        .map(Some)
        .map_err(|e| ApiError::invalid(e.to_string()))
}

/// `Shoal-Fence: LOCK:TOKEN` guards a write with a lock's fencing token.
fn fence(headers: &HeaderMap, op: Op) -> Result<Op, ApiError> {
    let Some(v) = headers.get("shoal-fence") else {
        return Ok(op);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::invalid(shoal_request::FENCE_SHAPE))?;
    Ok(shoal_request::fence(v, op)?)
}

/// Submits a key-value write, fenced and idempotent as the headers ask.
async fn write(node: &NodeHandle, headers: &HeaderMap, op: Op) -> ApiResult {
    let op = fence(headers, op)?;
    committed(node.submit(op, command_id(headers)?).await)
}

#[derive(Deserialize, Default)]
pub(crate) struct ReadQuery {
    #[serde(default)]
    consistent: bool,
}

/// State to read from: this replica's, or, consistent, once it has applied
/// the read index the master confirmed, so that every write committed
/// before the read is visible.
pub(crate) async fn read_state(node: &NodeHandle, consistent: bool) -> Result<State, ApiError> {
    if !consistent {
        return node.state().await.ok_or_else(stopped);
    }
    let idx = node.read_index().await?;
    node.state_at(idx, CONSISTENT_WAIT).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Timeout,
            format!("this replica did not reach index {idx} in time"),
        )
    })
}

fn not_found(key: &str, s: &State) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no key {key:?} at index {}", s.index()),
    )
}

async fn read(
    AxState(node): AxState<NodeHandle>,
    Path(key): Path<String>,
    Query(q): Query<ReadQuery>,
) -> ApiResult {
    let s = read_state(&node, q.consistent).await?;
    let e = s
        .kv()
        .get(key.as_str())
        .ok_or_else(|| not_found(&key, &s))?;
    let mut v = entry_json(&key, e);
    v["index"] = json!(s.index());
    Ok(Json(v))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    #[serde(default)]
    consistent: bool,
}

async fn list(AxState(node): AxState<NodeHandle>, Query(q): Query<ListQuery>) -> ApiResult {
    let s = read_state(&node, q.consistent).await?;
    let limit = q.limit.unwrap_or(1000).min(MAX_LIST);
    let mut keys = Vec::new();
    let mut truncated = false;
    let from = (Bound::Included(q.prefix.as_str()), Bound::Unbounded);
    for (k, e) in s.kv().range::<str, _>(from) {
        if !k.starts_with(&q.prefix) {
            break;
        }
        if keys.len() == limit {
            truncated = true;
            break;
        }
        keys.push(entry_json(k, e));
    }
    Ok(Json(
        json!({"index": s.index(), "keys": keys, "truncated": truncated}),
    ))
}

#[derive(Deserialize)]
struct RangeQuery {
    start: Option<i64>,
    stop: Option<i64>,
    #[serde(default)]
    consistent: bool,
}

/// Elements `start..=stop` of a list; negative positions count from the end.
fn list_range(list: &[String], start: i64, stop: i64) -> &[String] {
    let len = list.len() as i64;
    let at = |i: i64| if i < 0 { len + i } else { i };
    let (a, b) = (at(start).max(0), at(stop).min(len - 1));
    if len == 0 || a > b {
        return &[];
    }
    &list[a as usize..=b as usize]
}

async fn range(
    AxState(node): AxState<NodeHandle>,
    Path(key): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult {
    let s = read_state(&node, q.consistent).await?;
    let e = s
        .kv()
        .get(key.as_str())
        .ok_or_else(|| not_found(&key, &s))?;
    let KvValue::List(list) = &e.value else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::WrongType,
            format!("{key:?} is not a list"),
        ));
    };
    let items = list_range(list, q.start.unwrap_or(0), q.stop.unwrap_or(-1));
    Ok(Json(
        json!({"index": s.index(), "key": key, "len": list.len(), "items": items}),
    ))
}

async fn set(
    AxState(node): AxState<NodeHandle>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let value = shoal_request::text(&body, "value")?;
    write(&node, &headers, Op::KvSet { key, value }).await
}

async fn delete(
    AxState(node): AxState<NodeHandle>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    write(&node, &headers, Op::KvDelete { key }).await
}

async fn cas(
    AxState(node): AxState<NodeHandle>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    json_content(&headers)?;
    let op = shoal_request::cas(key, &body)?;
    write(&node, &headers, op).await
}

#[derive(Deserialize)]
struct IncrQuery {
    by: Option<i64>,
}

async fn incr(
    AxState(node): AxState<NodeHandle>,
    Path(key): Path<String>,
    Query(q): Query<IncrQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let by = q.by.unwrap_or(1);
    write(&node, &headers, Op::KvIncrBy { key, by }).await
}

#[derive(Deserialize)]
struct TtlQuery {
    ttl_ms: Option<u64>,
}

/// The writes named by the last path segment.
async fn verb(
    AxState(node): AxState<NodeHandle>,
    Path((key, verb)): Path<(String, String)>,
    Query(q): Query<TtlQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let Some(op) = shoal_request::verb(key, &verb, q.ttl_ms, &body)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no operation {verb:?} on keys"),
        ));
    };
    write(&node, &headers, op).await
}

/// `POST /v1/txn`: guards, then key-value writes, all applied or none.
async fn txn(AxState(node): AxState<NodeHandle>, headers: HeaderMap, body: Bytes) -> ApiResult {
    json_content(&headers)?;
    let op = shoal_request::txn(&body)?;
    write(&node, &headers, op).await
}

async fn lock(
    AxState(node): AxState<NodeHandle>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    json_content(&headers)?;
    let op = shoal_request::lock(name, &body)?;
    committed(node.submit(op, command_id(&headers)?).await)
}

#[cfg(test)]
mod tests {
    use super::list_range;

    #[test]
    fn list_ranges_count_negative_positions_from_the_end() {
        let l: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(list_range(&l, 0, -1), &l[..]);
        assert_eq!(list_range(&l, 1, 2), &l[1..=2]);
        assert_eq!(list_range(&l, -2, -1), &l[2..]);
        assert_eq!(list_range(&l, 3, 1), &[] as &[String]);
        assert_eq!(list_range(&l, 0, 99), &l[..]);
        assert_eq!(list_range(&l, -99, 0), &l[..1]);
        assert_eq!(list_range(&[], 0, -1), &[] as &[String]);
    }
}

//! The coordination primitives under `/v1/kv`. Writes are commands
//! committed in order through the master; reads answer from this replica
//! with the index they reflect, or, with `?consistent=true`, at a read
//! index the master confirmed with a majority (Raft's ReadIndex: no log
//! entry per read).

use crate::routes::{route, Route};
use crate::ErrorCode;
use crate::{committed, json_content, stopped, ApiError, ApiResult};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, RawPathParams, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
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

/// The operations `POST /v1/kv/KEY/OP` takes (`post_op`).
const POST_OPS: &[&str] = &[
    "set-if-absent",
    "cas",
    "incr",
    "add",
    "remove",
    "push",
    "lock",
    "keepalive",
    "unlock",
];

pub(crate) fn routes() -> Vec<Route> {
    let key = "/v1/kv/{key}";
    let mut on_keys: Vec<(Method, String)> = [Method::GET, Method::PUT, Method::DELETE]
        .map(|m| (m, key.to_owned()))
        .into();
    on_keys.push((Method::GET, format!("{key}/range")));
    on_keys.extend(
        POST_OPS
            .iter()
            .map(|op| (Method::POST, format!("{key}/{op}"))),
    );
    vec![
        route(Method::GET, "/v1/kv", list),
        // A key may hold `/`: the rest of the path is the key, and its
        // operation is dispatched by `by_path`.
        Route::any("/v1/kv/{*path}", by_path, on_keys),
        route(Method::POST, "/v1/txn", txn).map(|r| r.layer(DefaultBodyLimit::max(MAX_TXN_BODY))),
    ]
}

/// What follows `/v1/kv/`: a key (it may hold `/`), and for POST an
/// operation as the last segment; `GET KEY/range` reads part of a list.
/// A key's own last segment that reads as an operation (`range`) is sent
/// with its slash encoded (`a%2Frange`): segments are split before they
/// are decoded.
#[derive(Debug, PartialEq, Eq)]
enum KvPath {
    Key(String),
    Op { key: String, op: String },
}

fn kv_path(method: &Method, raw: &str) -> Result<KvPath, ApiError> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| ApiError::invalid("the key is not UTF-8"))
    };
    let split = raw.rsplit_once('/');
    match (method, split) {
        (&Method::POST, Some((key, op))) => Ok(KvPath::Op {
            key: decode(key)?,
            op: decode(op)?,
        }),
        (&Method::POST, None) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Invalid,
            "POST needs an operation after the key: /v1/kv/KEY/incr, /cas, /lock, ...",
        )),
        (&Method::GET, Some((key, "range"))) => Ok(KvPath::Op {
            key: decode(key)?,
            op: "range".into(),
        }),
        _ => Ok(KvPath::Key(decode(raw)?)),
    }
}

/// Every query parameter a key's operations take.
#[derive(Deserialize, Default)]
struct KvQuery {
    #[serde(default)]
    consistent: bool,
    start: Option<i64>,
    stop: Option<i64>,
    by: Option<i64>,
    ttl_ms: Option<u64>,
}

async fn by_path(
    AxState(node): AxState<NodeHandle>,
    method: Method,
    params: RawPathParams,
    Query(q): Query<KvQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let raw = params.iter().next().map(|(_, v)| v).unwrap_or_default();
    match (&method, kv_path(&method, raw)?) {
        (&Method::GET, KvPath::Key(key)) => read(&node, key, q.consistent).await,
        (&Method::GET, KvPath::Op { key, .. }) => range(&node, key, q).await,
        (&Method::PUT, KvPath::Key(key)) => {
            let value = shoal_request::text(&body, "value")?;
            write(&node, &headers, Op::KvSet { key, value }).await
        }
        (&Method::DELETE, KvPath::Key(key)) => write(&node, &headers, Op::KvDelete { key }).await,
        (&Method::POST, KvPath::Op { key, op }) => {
            post_op(&node, key, &op, q, &headers, &body).await
        }
        (m, _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Invalid,
            format!("{m} is not an operation on keys"),
        )),
    }
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

async fn read(node: &NodeHandle, key: String, consistent: bool) -> ApiResult {
    let s = read_state(node, consistent).await?;
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
    /// Keys after this one only: the `next` of the page before.
    after: Option<String>,
    #[serde(default)]
    consistent: bool,
}

/// Keys under a prefix in order, a page at a time: a truncated page names
/// the key to go on `after` (`next`).
async fn list(AxState(node): AxState<NodeHandle>, Query(q): Query<ListQuery>) -> ApiResult {
    let s = read_state(&node, q.consistent).await?;
    let limit = q.limit.unwrap_or(1000).clamp(1, MAX_LIST);
    let from = match &q.after {
        Some(after) if after.as_str() >= q.prefix.as_str() => Bound::Excluded(after.as_str()),
        _ => Bound::Included(q.prefix.as_str()),
    };
    let mut keys = Vec::new();
    let mut next = None;
    for (k, e) in s.kv().range::<str, _>((from, Bound::Unbounded)) {
        if !k.starts_with(&q.prefix) {
            break;
        }
        if keys.len() == limit {
            next = keys
                .last()
                .and_then(|v: &Value| v["key"].as_str().map(str::to_owned));
            break;
        }
        keys.push(entry_json(k, e));
    }
    Ok(Json(json!({
        "index": s.index(),
        "keys": keys,
        "truncated": next.is_some(),
        "next": next,
    })))
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

async fn range(node: &NodeHandle, key: String, q: KvQuery) -> ApiResult {
    let s = read_state(node, q.consistent).await?;
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

/// `POST /v1/kv/KEY/OP`.
async fn post_op(
    node: &NodeHandle,
    key: String,
    op: &str,
    q: KvQuery,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult {
    let no_op = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no operation {op:?} on keys"),
        )
    };
    if !POST_OPS.contains(&op) {
        return Err(no_op());
    }
    let op = match op {
        "cas" => {
            json_content(headers)?;
            shoal_request::cas(key, body)?
        }
        "incr" => Op::KvIncrBy {
            key,
            by: q.by.unwrap_or(1),
        },
        "lock" => {
            json_content(headers)?;
            // Unfenced: a lock is what fences.
            let op = shoal_request::lock(key, body)?;
            return committed(node.submit(op, command_id(headers)?).await);
        }
        // set-if-absent, add, remove, push: the body is one text value.
        // keepalive, unlock: the body is {"token": T}.
        verb => shoal_request::verb(key, verb, q.ttl_ms, body)?.ok_or_else(no_op)?,
    };
    write(node, headers, op).await
}

/// `POST /v1/txn`: guards, then key-value writes, all applied or none.
async fn txn(AxState(node): AxState<NodeHandle>, headers: HeaderMap, body: Bytes) -> ApiResult {
    json_content(&headers)?;
    let op = shoal_request::txn(&body)?;
    write(&node, &headers, op).await
}

#[cfg(test)]
mod tests {
    use super::{kv_path, list_range, KvPath, Method};

    #[test]
    fn a_key_may_hold_slashes_and_an_operation_is_the_last_segment() {
        let key = |k: &str| Ok(KvPath::Key(k.to_owned()));
        let op = |k: &str, o: &str| {
            Ok(KvPath::Op {
                key: k.to_owned(),
                op: o.to_owned(),
            })
        };
        let path = |m: &Method, raw: &str| kv_path(m, raw).map_err(|e| format!("{e:?}"));
        assert_eq!(path(&Method::PUT, "app/db"), key("app/db"));
        assert_eq!(path(&Method::GET, "app/db"), key("app/db"));
        assert_eq!(path(&Method::DELETE, "a%2Fb/c"), key("a/b/c"));
        assert_eq!(path(&Method::POST, "app/db/incr"), op("app/db", "incr"));
        assert_eq!(path(&Method::POST, "app%2Fdb/incr"), op("app/db", "incr"));
        assert_eq!(
            path(&Method::GET, "queue/jobs/range"),
            op("queue/jobs", "range")
        );
        // A key whose last segment is "range", read whole: its slash encoded.
        assert_eq!(path(&Method::GET, "a%2Frange"), key("a/range"));
        assert_eq!(path(&Method::PUT, "a/"), key("a/"));
        assert!(
            path(&Method::POST, "lonely").is_err(),
            "POST needs an operation"
        );
        assert!(path(&Method::GET, "%FF").is_err(), "not UTF-8");
    }

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

//! The coordination primitives under `/v1/kv`. Writes are commands
//! committed in order through the master; reads answer from this replica
//! with the index they reflect, or, with `?consistent=true`, at a read
//! index the master confirmed with a majority (Raft's ReadIndex: no log
//! entry per read).

pub(crate) mod read;

pub(crate) use read::Entry;

use crate::openapi::{Fence, Idempotency, NotFound, NotJson};
use crate::routes::{route, Route};
use crate::ErrorCode;
use crate::{committed, json_content, ApiError, ApiResult, Committed};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, RawPathParams, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use read::{list, range, read};
use serde::Deserialize;
use shoal_model::{CommandId, Limits, Op};
use shoal_node::NodeHandle;
use shoal_request::{CasBody, LockBody, TokenBody, TxnBody};
use utoipa::IntoParams;

/// A transaction's body: room for its keys and values, JSON-escaped.
const MAX_TXN_BODY: usize = 4 * Limits::MAX_TXN_BYTES;

/// A `POST /v1/kv/KEY/OP` operation: its name, the command it makes
/// of the key, the query and the body, and whether `Shoal-Fence` may
/// guard it (a lock is what fences, so taking one is not fenced).
struct PostOp {
    name: &'static str,
    make: fn(String, &KvQuery, &HeaderMap, &Bytes) -> Result<Op, ApiError>,
    fenced: bool,
}

/// The operations `POST /v1/kv/KEY/OP` takes (`post_op`), each
/// documented by its `make`.
const POST_OPS: &[PostOp] = &[
    PostOp {
        name: "set-if-absent",
        make: set_if_absent,
        fenced: true,
    },
    PostOp {
        name: "cas",
        make: cas,
        fenced: true,
    },
    PostOp {
        name: "incr",
        make: incr,
        fenced: true,
    },
    PostOp {
        name: "add",
        make: add,
        fenced: true,
    },
    PostOp {
        name: "remove",
        make: remove,
        fenced: true,
    },
    PostOp {
        name: "push",
        make: push,
        fenced: true,
    },
    PostOp {
        name: "lock",
        make: lock,
        fenced: false,
    },
    PostOp {
        name: "keepalive",
        make: keepalive,
        fenced: true,
    },
    PostOp {
        name: "unlock",
        make: unlock,
        fenced: true,
    },
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
            .map(|op| (Method::POST, format!("{key}/{}", op.name))),
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
        (&Method::POST, None) => Err(ApiError::method_not_allowed(
            "POST needs an operation after the key: /v1/kv/KEY/incr, /cas, /lock, ...",
            "GET, PUT, DELETE",
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
pub(crate) struct KvQuery {
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
) -> Result<Response, ApiError> {
    let raw = params.iter().next().map(|(_, v)| v).unwrap_or_default();
    Ok(match (&method, kv_path(&method, raw)?) {
        (&Method::GET, KvPath::Key(key)) => read(&node, key, q.consistent).await?.into_response(),
        (&Method::GET, KvPath::Op { key, .. }) => range(&node, key, q).await?.into_response(),
        (&Method::PUT, KvPath::Key(key)) => write(&node, &headers, set(key, &body)?)
            .await?
            .into_response(),
        (&Method::DELETE, KvPath::Key(key)) => {
            write(&node, &headers, delete(key)).await?.into_response()
        }
        (&Method::POST, KvPath::Op { key, op }) => post_op(&node, key, &op, q, &headers, &body)
            .await?
            .into_response(),
        (m, _) => {
            return Err(ApiError::method_not_allowed(
                format!("{m} is not an operation on keys"),
                "GET, PUT, DELETE, POST",
            ))
        }
    })
}

/// A key in a path: percent-encoded, 1 to 512 bytes of UTF-8. It may hold
/// `/` as is (for POST the last segment is the operation; a key whose own
/// last segment is `range` is read with that slash encoded, `%2F`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "describes the key that `kv_path` parses")]
pub(crate) struct Key {
    #[param(min_length = 1, max_length = 512)]
    key: String,
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
async fn write(node: &NodeHandle, headers: &HeaderMap, op: Op) -> ApiResult<Committed> {
    let op = fence(headers, op)?;
    committed(node.submit(op, command_id(headers)?).await)
}

/// Set the key to the body -> {}.
#[utoipa::path(
    put,
    path = "/v1/kv/{key}",
    operation_id = "setKey",
    params(Key, Idempotency, Fence),
    request_body(
        content = String,
        content_type = "text/plain",
        description = "UTF-8 text, at most 64 KiB; none: the empty string"
    ),
    responses((status = 200, body = Committed))
)]
fn set(key: String, body: &Bytes) -> Result<Op, ApiError> {
    let value = shoal_request::text(body, "value")?;
    Ok(Op::KvSet { key, value })
}

/// Delete the key -> applied.
#[utoipa::path(
    delete,
    path = "/v1/kv/{key}",
    operation_id = "deleteKey",
    params(Key, Idempotency, Fence),
    responses((status = 200, body = Committed))
)]
fn delete(key: String) -> Op {
    Op::KvDelete { key }
}

/// `POST /v1/kv/KEY/OP`.
async fn post_op(
    node: &NodeHandle,
    key: String,
    name: &str,
    q: KvQuery,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Committed> {
    let Some(op) = POST_OPS.iter().find(|op| op.name == name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no operation {name:?} on keys"),
        ));
    };
    let command = (op.make)(key, &q, headers, body)?;
    if op.fenced {
        write(node, headers, command).await
    } else {
        committed(node.submit(command, command_id(headers)?).await)
    }
}

/// The command of a verb `shoal_request::verb` knows.
fn verb(key: String, name: &str, ttl_ms: Option<u64>, body: &Bytes) -> Result<Op, ApiError> {
    shoal_request::verb(key, name, ttl_ms, body)?
        .ok_or_else(|| ApiError::invalid(format!("no operation {name:?}")))
}

/// Set the key to the body unless it is there -> applied.
#[utoipa::path(
    post,
    path = "/v1/kv/{key}/set-if-absent",
    operation_id = "setIfAbsent",
    params(
        Key,
        (
            "ttl_ms" = Option<u64>,
            Query,
            minimum = 1,
            maximum = 18446744073709551615u64,
            description = "expire the key this long after"
        ),
        Idempotency, Fence,
    ),
    request_body(content = String, content_type = "text/plain", description = "the value"),
    responses((status = 200, body = Committed))
)]
fn set_if_absent(key: String, q: &KvQuery, _: &HeaderMap, body: &Bytes) -> Result<Op, ApiError> {
    verb(key, "set-if-absent", q.ttl_ms, body)
}

/// Compare-and-set -> applied.
#[utoipa::path(
    post,
    path = "/v1/kv/{key}/cas",
    operation_id = "compareAndSet",
    params(Key, Idempotency, Fence),
    request_body = CasBody,
    responses((status = 200, body = Committed), (status = 415, response = NotJson))
)]
fn cas(key: String, _: &KvQuery, headers: &HeaderMap, body: &Bytes) -> Result<Op, ApiError> {
    json_content(headers)?;
    Ok(shoal_request::cas(key, body)?)
}

/// Add `by` (default 1) to an integer -> value, the sum.
#[utoipa::path(
    post,
    path = "/v1/kv/{key}/incr",
    operation_id = "incr",
    params(
        Key,
        ("by" = Option<i64>, Query, description = "what to add (default 1)"),
        Idempotency, Fence,
    ),
    responses((status = 200, body = Committed))
)]
fn incr(key: String, q: &KvQuery, _: &HeaderMap, _: &Bytes) -> Result<Op, ApiError> {
    Ok(Op::KvIncrBy {
        key,
        by: q.by.unwrap_or(1),
    })
}

/// Add the body to a set -> applied.
#[utoipa::path(
    post,
    path = "/v1/kv/{key}/add",
    operation_id = "addMember",
    params(Key, Idempotency, Fence),
    request_body(content = String, content_type = "text/plain", description = "the member"),
    responses((status = 200, body = Committed))
)]
fn add(key: String, _: &KvQuery, _: &HeaderMap, body: &Bytes) -> Result<Op, ApiError> {
    verb(key, "add", None, body)
}

/// Remove the body from a set -> applied.
#[utoipa::path(
    post,
    path = "/v1/kv/{key}/remove",
    operation_id = "removeMember",
    params(Key, Idempotency, Fence),
    request_body(content = String, content_type = "text/plain", description = "the member"),
    responses((status = 200, body = Committed))
)]
fn remove(key: String, _: &KvQuery, _: &HeaderMap, body: &Bytes) -> Result<Op, ApiError> {
    verb(key, "remove", None, body)
}

/// Append the body to a list -> value, the new length.
#[utoipa::path(
    post,
    path = "/v1/kv/{key}/push",
    operation_id = "push",
    params(Key, Idempotency, Fence),
    request_body(content = String, content_type = "text/plain", description = "the element"),
    responses((status = 200, body = Committed))
)]
fn push(key: String, _: &KvQuery, _: &HeaderMap, body: &Bytes) -> Result<Op, ApiError> {
    verb(key, "push", None, body)
}

/// Take a lock -> token, its fencing token.
#[utoipa::path(
    post,
    path = "/v1/kv/{key}/lock",
    operation_id = "lock",
    params(Key, Idempotency),
    request_body = LockBody,
    responses((status = 200, body = Committed), (status = 415, response = NotJson))
)]
fn lock(key: String, _: &KvQuery, headers: &HeaderMap, body: &Bytes) -> Result<Op, ApiError> {
    json_content(headers)?;
    Ok(shoal_request::lock(key, body)?)
}

/// Keep a lock held -> applied.
#[utoipa::path(
    post,
    path = "/v1/kv/{key}/keepalive",
    operation_id = "keepalive",
    params(Key, Idempotency),
    request_body = TokenBody,
    responses(
        (status = 200, body = Committed),
        (status = 404, response = NotFound),
        (status = 415, response = NotJson),
    )
)]
fn keepalive(key: String, _: &KvQuery, headers: &HeaderMap, body: &Bytes) -> Result<Op, ApiError> {
    json_content(headers)?;
    verb(key, "keepalive", None, body)
}

/// Release a lock -> applied.
#[utoipa::path(
    post,
    path = "/v1/kv/{key}/unlock",
    operation_id = "unlock",
    params(Key, Idempotency),
    request_body = TokenBody,
    responses(
        (status = 200, body = Committed),
        (status = 404, response = NotFound),
        (status = 415, response = NotJson),
    )
)]
fn unlock(key: String, _: &KvQuery, headers: &HeaderMap, body: &Bytes) -> Result<Op, ApiError> {
    json_content(headers)?;
    verb(key, "unlock", None, body)
}

/// Guards, then key-value writes, all applied or none -> applied, and
/// each op's `results`, or the guard that failed.
#[utoipa::path(
    post,
    path = "/v1/txn",
    operation_id = "txn",
    params(Idempotency, Fence),
    request_body = TxnBody,
    responses((status = 200, body = Committed), (status = 415, response = NotJson))
)]
async fn txn(
    AxState(node): AxState<NodeHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Committed> {
    json_content(&headers)?;
    let op = shoal_request::txn(&body)?;
    write(&node, &headers, op).await
}

#[cfg(test)]
mod tests {
    use super::{kv_path, KvPath, Method};

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
}

//! Reads under `/v1/kv`: a key, a page of keys, part of a list. They
//! answer from this replica with the index they reflect, or, with
//! `?consistent=true`, at a read index the master confirmed.

use super::{Key, KvQuery};
use crate::openapi::{Conflict, Consistent, Invalid, NotFound, Timeout};
use crate::{stopped, ApiError, ApiResult, ErrorCode};
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shoal_model::{EventIdx, FencingToken, KvEntry, KvValue, State};
use shoal_node::NodeHandle;
use std::ops::Bound;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// How long a consistent read waits for this replica to apply its read
/// index.
const CONSISTENT_WAIT: Duration = Duration::from_secs(5);
/// Keys a prefix listing returns at most.
const MAX_LIST: usize = 10_000;
/// A value as the API shows it: text, an integer, `{"set": [..]}`,
/// `{"list": [..]}` or `{"lock": {"holder", "token"}}`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum ValueView {
    Text(String),
    Int(i64),
    Set { set: Vec<String> },
    List { list: Vec<String> },
    Lock { lock: LockView },
}

#[derive(Serialize, ToSchema)]
pub(crate) struct LockView {
    holder: String,
    token: FencingToken,
}

impl ValueView {
    pub(crate) fn of(v: &KvValue) -> ValueView {
        match v {
            KvValue::Str(s) => ValueView::Text(s.clone()),
            KvValue::Int(n) => ValueView::Int(*n),
            KvValue::Set(s) => ValueView::Set {
                set: s.iter().cloned().collect(),
            },
            KvValue::List(l) => ValueView::List { list: l.clone() },
            KvValue::Lock { holder, token } => ValueView::Lock {
                lock: LockView {
                    holder: holder.clone(),
                    token: *token,
                },
            },
        }
    }
}

/// A key with its value, version (the index of its last change) and TTL.
#[derive(Serialize, ToSchema)]
pub(crate) struct Entry {
    key: String,
    value: ValueView,
    version: EventIdx,
    ttl_ms: Option<u64>,
}

impl Entry {
    pub(crate) fn of(key: &str, e: &KvEntry) -> Entry {
        Entry {
            key: key.to_owned(),
            value: ValueView::of(&e.value),
            version: e.version,
            ttl_ms: e.ttl_ms,
        }
    }
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

/// A key read, with the index it was read at.
#[derive(Serialize, ToSchema)]
pub(crate) struct Read {
    #[serde(flatten)]
    entry: Entry,
    index: EventIdx,
}

/// A key's value, version, TTL and the index read at.
#[utoipa::path(
    get,
    path = "/v1/kv/{key}",
    operation_id = "getKey",
    params(Key, Consistent),
    responses(
        (status = 200, body = Read),
        (status = 404, response = NotFound),
        (status = 400, response = Invalid),
        (status = 504, response = Timeout),
    )
)]
pub(crate) async fn read(node: &NodeHandle, key: String, consistent: bool) -> ApiResult<Read> {
    let s = read_state(node, consistent).await?;
    let e = s
        .kv()
        .get(key.as_str())
        .ok_or_else(|| not_found(&key, &s))?;
    Ok(Json(Read {
        entry: Entry::of(&key, e),
        index: s.index(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Keys that start with this.
    #[serde(default)]
    prefix: String,
    /// Keys on a page at most (default 1000, at most 10000).
    #[param(maximum = 18446744073709551615u64)]
    limit: Option<usize>,
    /// Keys after this one only: the `next` of the page before.
    after: Option<String>,
    /// Read at an index the master confirmed with a majority.
    #[serde(default)]
    consistent: bool,
}

/// A page of keys.
#[derive(Serialize, ToSchema)]
pub(crate) struct Keys {
    index: EventIdx,
    keys: Vec<Entry>,
    /// More keys follow: ask again with `after` = `next`.
    truncated: bool,
    next: Option<String>,
}

/// Keys under a prefix in order, a page at a time: a truncated page names
/// the key to go on `after` (`next`).
#[utoipa::path(
    get,
    path = "/v1/kv",
    operation_id = "listKeys",
    params(ListQuery),
    responses(
        (status = 200, body = Keys),
        (status = 400, response = Invalid),
        (status = 504, response = Timeout),
    )
)]
pub(crate) async fn list(
    AxState(node): AxState<NodeHandle>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Keys> {
    let s = read_state(&node, q.consistent).await?;
    let limit = q.limit.unwrap_or(1000).clamp(1, MAX_LIST);
    let from = match &q.after {
        Some(after) if after.as_str() >= q.prefix.as_str() => Bound::Excluded(after.as_str()),
        _ => Bound::Included(q.prefix.as_str()),
    };
    let mut keys: Vec<Entry> = Vec::new();
    let mut next = None;
    for (k, e) in s.kv().range::<str, _>((from, Bound::Unbounded)) {
        if !k.starts_with(&q.prefix) {
            break;
        }
        if keys.len() == limit {
            next = keys.last().map(|e| e.key.clone());
            break;
        }
        keys.push(Entry::of(k, e));
    }
    Ok(Json(Keys {
        index: s.index(),
        keys,
        truncated: next.is_some(),
        next,
    }))
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

/// Part of a list.
#[derive(Serialize, ToSchema)]
pub(crate) struct Range {
    index: EventIdx,
    key: String,
    /// The whole list's length.
    len: usize,
    items: Vec<String>,
}

/// List elements `start..=stop` (negative: from the end).
#[utoipa::path(
    get,
    path = "/v1/kv/{key}/range",
    operation_id = "getRange",
    params(
        Key,
        ("start" = Option<i64>, Query, description = "the first position (default 0)"),
        ("stop" = Option<i64>, Query, description = "the last position (default -1: the last)"),
        Consistent,
    ),
    responses(
        (status = 200, body = Range),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 400, response = Invalid),
        (status = 504, response = Timeout),
    )
)]
pub(crate) async fn range(node: &NodeHandle, key: String, q: KvQuery) -> ApiResult<Range> {
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
    Ok(Json(Range {
        index: s.index(),
        key,
        len: list.len(),
        items: items.to_vec(),
    }))
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

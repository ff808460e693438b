//! `GET /v1/events?from=N`: the committed event stream for external
//! subscribers, as server-sent events.
//!
//! While `N` is inside the log this node retains, the stream replays from
//! `N` and then follows live. When `N` predates it, the stream first sends
//! State as of some index `S` (a snapshot sub-stream), then events from
//! `S+1`. Frames (`event:` name, `data:` one JSON object, `id:` the index
//! to resume after, usable as `Last-Event-ID`):
//!
//! ```text
//! snapshot      {"index": S, "term": T, "meta": {...}}    reset: drop what you built
//! state         {"nodes"|"kv"|"tasks"|"deployments"|"outcomes": [[key, value], ...]}
//!               batches in any number, valid to apply in order
//! snapshot_end  {"index": S, "state_hash": H}             State at S is complete
//! event         {"idx": I, "term": T, "event": {...}}      apply in order, I = previous + 1
//! behind        {"next": N, "floor": F}                   the log moved past a slow
//!                                                         subscriber: State follows
//! ```
//!
//! A subscriber that reads slowly holds the stream back, not the node:
//! frames are made as the connection takes them, from the log's files on
//! a blocking thread (never on the node's loop), so a subscriber costs
//! one read's worth of memory (`READ_BYTES`, or one `state` batch). If
//! the log was compacted past the subscriber meanwhile, it gets a new
//! snapshot sub-stream and goes on from there. One that stops reading is
//! dropped (`ServeLimits::write_timeout`).
//!
//! The values of a command's `env` are hidden unless the request carries
//! the API token and asks `?reveal=env` (`secrets.rs`).
//!
//! `?prefix=P` follows the keys under `P` only (etcd's `watch --prefix`):
//! events that touch such a key (a write, a guard or fence, an expiry),
//! and in a snapshot sub-stream the `kv` entries under `P` alone. Event
//! indexes then have gaps; `id:` still resumes where the stream was.

use crate::auth::Authenticated;
use crate::openapi::{Invalid, Unauthorized};
use crate::secrets::hide_env;
use crate::streams::{sse, EventFrame, EventKind, Streams};
use crate::{ApiError, ErrorCode};
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::Extension;
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_model::{EventIdx, State};
use shoal_node::{NodeHandle, View};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use utoipa::IntoParams;

/// Log bytes one read brings in for a subscriber.
const READ_BYTES: usize = 128 << 10;
/// Entries of State per `state` frame, at most...
const BATCH: usize = 1000;
/// ...and about this much JSON.
const BATCH_BYTES: usize = 64 << 10;
/// An event applied but not yet in the log's files is looked for again
/// after this.
const NOT_WRITTEN_YET: Duration = Duration::from_millis(20);

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// The first event index to send (default: the next one applied).
    #[param(maximum = 18446744073709551615u64)]
    from: Option<u64>,
    /// `env`: show command environments (needs the API token).
    #[param(pattern = "^env$")]
    reveal: Option<String>,
    /// Only what touches keys under this prefix.
    prefix: Option<String>,
}

/// `Last-Event-ID`: where a reconnecting client resumes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "describes a header that `events` reads by name")]
pub(crate) struct LastEventId {
    /// Resume after this event index.
    #[param(
        rename = "Last-Event-ID",
        value_type = u64,
        required = false,
        maximum = 18446744073709551615u64
    )]
    last_event_id: Option<u64>,
}

/// Committed events as server-sent events: State first when `from` is
/// behind the log, else replay; then live.
///
/// Frames: `snapshot`, `state`..., `snapshot_end` (State at an index),
/// `event` (apply in order), `behind` (this reader fell behind: State
/// follows). `id:` resumes as `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/v1/events",
    params(
        EventsQuery,
        LastEventId,
    ),
    responses(
        (
            status = 200,
            content_type = "text/event-stream",
            body = EventFrame,
            description = "server-sent events: snapshot, state, snapshot_end, event, behind"
        ),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
    )
)]
pub(crate) async fn events(
    AxState(node): AxState<NodeHandle>,
    Extension(streams): Extension<Streams>,
    token: Option<Extension<Authenticated>>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let reveal = match q.reveal.as_deref() {
        None => false,
        Some("env") if token.is_some() => true,
        Some("env") => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "reveal=env needs the API token (Authorization: Bearer TOKEN)",
            ))
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "reveal={other}: only env can be revealed"
            )))
        }
    };
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .and_then(|i| i.checked_add(1))
                .ok_or_else(|| ApiError::invalid("Last-Event-ID must be an event index"))?,
        ),
    };
    let permit = streams.admit()?;
    let from = match resume.or(q.from) {
        Some(f) => EventIdx(f),
        None => node.view().status.applied_index.next(),
    };
    let feed = Feed {
        applied: node.view_receiver(),
        node,
        next: from,
        reveal,
        prefix: q.prefix,
        frames: VecDeque::new(),
        snapshot: None,
        sent_any: false,
    };
    let frames =
        futures::stream::unfold(
            feed,
            |mut f| async move { f.next_frame().await.map(|e| (e, f)) },
        );
    Ok(sse(permit, frames))
}

fn frame(kind: EventKind, id: Option<EventIdx>, data: &Value) -> SseEvent {
    let e = SseEvent::default()
        .event(kind.as_str())
        .data(data.to_string());
    match id {
        Some(i) => e.id(i.0.to_string()),
        None => e,
    }
}

/// One subscriber's place in the stream.
struct Feed {
    node: NodeHandle,
    applied: watch::Receiver<Arc<View>>,
    /// The next event to send.
    next: EventIdx,
    reveal: bool,
    prefix: Option<String>,
    /// Frames made and not yet taken (one read's worth).
    frames: VecDeque<SseEvent>,
    /// A snapshot sub-stream under way.
    snapshot: Option<StateCursor>,
    sent_any: bool,
}

impl Feed {
    /// The next frame, made when the connection asks for it; None once
    /// the node stops.
    async fn next_frame(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Some(f);
            }
            if let Some(cursor) = &mut self.snapshot {
                if let Some(mut batch) = cursor.next_batch() {
                    if !self.reveal {
                        hide_env(&mut batch);
                    }
                    return Some(frame(EventKind::State, None, &batch));
                }
                let s = &cursor.state;
                let end = json!({"index": s.index(), "state_hash": s.hash().to_string()});
                let index = s.index();
                self.next = index.next();
                self.snapshot = None;
                return Some(frame(EventKind::SnapshotEnd, Some(index), &end));
            }
            self.read().await?;
        }
    }

    /// Fills `frames` with what comes next: events, or the start of State.
    async fn read(&mut self) -> Option<()> {
        match self.node.read_events(self.next, READ_BYTES).await {
            Ok(events) if events.is_empty() => {
                let next = self.next;
                if self.applied.borrow().status.applied_index >= next {
                    // Applied, not yet in the log's files: a moment.
                    tokio::time::sleep(NOT_WRITTEN_YET).await;
                } else {
                    // Caught up: wait for the node to apply more.
                    self.applied
                        .wait_for(|v| v.status.applied_index >= next)
                        .await
                        .ok()?;
                }
            }
            Ok(events) => {
                self.sent_any = true;
                for e in events {
                    self.next = e.idx.next();
                    if let Some(p) = &self.prefix {
                        if !e.event.keys().iter().any(|k| k.starts_with(p.as_str())) {
                            continue;
                        }
                    }
                    let mut data = serde_json::to_value(&e).unwrap_or(Value::Null);
                    if !self.reveal {
                        hide_env(&mut data);
                    }
                    self.frames
                        .push_back(frame(EventKind::Event, Some(e.idx), &data));
                }
            }
            Err(floor) => {
                if self.sent_any {
                    let data = json!({"next": self.next, "floor": floor});
                    self.frames.push_back(frame(EventKind::Behind, None, &data));
                }
                let s = self.node.state().await?;
                let header = json!({"index": s.index(), "term": s.term(), "meta": s.meta()});
                self.frames
                    .push_back(frame(EventKind::Snapshot, None, &header));
                self.snapshot = Some(StateCursor::new(s, self.prefix.clone()));
            }
        }
        Some(())
    }
}

/// Where a snapshot sub-stream is: the State it sends (a persistent map,
/// shared with the node's), and the last key sent of the part under way.
struct StateCursor {
    state: State,
    part: Part,
    /// Only the `kv` entries under it, if any.
    prefix: Option<shoal_model::Key>,
}

enum Part {
    Nodes(Option<shoal_model::NodeId>),
    Kv(Option<shoal_model::Key>),
    Tasks(Option<shoal_model::TaskId>),
    Deployments(Option<String>),
    Outcomes(Option<shoal_model::CommandDigest>),
    Done,
}

impl StateCursor {
    fn new(state: State, prefix: Option<String>) -> Self {
        StateCursor {
            state,
            part: match prefix {
                Some(_) => Part::Kv(None),
                None => Part::Nodes(None),
            },
            prefix: prefix.map(Into::into),
        }
    }

    /// The next `state` frame's data, or None once all is sent.
    fn next_batch(&mut self) -> Option<Value> {
        loop {
            let s = &self.state;
            let (batch, next) = match &mut self.part {
                Part::Nodes(after) => (batch("nodes", s.nodes(), after, None, all), Part::Kv(None)),
                Part::Kv(after) => match &self.prefix {
                    Some(p) => {
                        let under = |k: &shoal_model::Key| k.starts_with(p.as_str());
                        (batch("kv", s.kv(), after, Some(p), under), Part::Done)
                    }
                    None => (batch("kv", s.kv(), after, None, all), Part::Tasks(None)),
                },
                Part::Tasks(after) => (
                    batch("tasks", s.tasks(), after, None, all),
                    Part::Deployments(None),
                ),
                Part::Deployments(after) => (
                    batch("deployments", s.deployments(), after, None, all),
                    Part::Outcomes(None),
                ),
                Part::Outcomes(after) => (
                    batch("outcomes", s.outcomes(), after, None, all),
                    Part::Done,
                ),
                Part::Done => return None,
            };
            match batch {
                Some(b) => return Some(b),
                None => self.part = next,
            }
        }
    }
}

/// Every entry of a map.
fn all<K>(_: &K) -> bool {
    true
}

/// The entries of `map` after `after` (else from `from`) while `within`
/// holds, as one frame's data (at most `BATCH` entries, about
/// `BATCH_BYTES`); moves `after` on. None when none are left.
fn batch<K, V>(
    name: &str,
    map: &shoal_model::TreeMap<K, V>,
    after: &mut Option<K>,
    from: Option<&K>,
    within: impl Fn(&K) -> bool,
) -> Option<Value>
where
    K: Ord + Clone + serde::Serialize,
    V: Clone + serde::Serialize,
{
    let start = after.clone();
    let lower: Bound<&K> = match (start.as_ref(), from) {
        (Some(k), _) => Bound::Excluded(k),
        (None, Some(k)) => Bound::Included(k),
        (None, None) => Bound::Unbounded,
    };
    let mut items = Vec::new();
    let mut bytes = 0;
    for (k, v) in map.range::<K, _>((lower, Bound::Unbounded)) {
        if !within(k) {
            break;
        }
        let item = json!([k, v]);
        bytes += item.to_string().len();
        items.push(item);
        *after = Some(k.clone());
        if items.len() == BATCH || bytes >= BATCH_BYTES {
            break;
        }
    }
    (!items.is_empty()).then(|| json!({ name: items }))
}

#[cfg(test)]
mod tests {
    use super::StateCursor;
    use shoal_model::{Command, CommandId, Envelope, Event, EventIdx, Op, State, Term};

    #[test]
    fn a_snapshot_under_a_prefix_sends_only_those_keys() {
        let mut s = State::new();
        for (i, key) in ["app/a", "app/b", "apple", "other"].iter().enumerate() {
            let cmd = Command {
                id: CommandId(format!("c{i}")),
                op: Op::KvSet {
                    key: key.to_string(),
                    value: "v".into(),
                },
            };
            let env = Envelope {
                idx: EventIdx(i as u64 + 1),
                term: Term(1),
                event: Event::Command { cmd, at_ms: 0 },
            };
            s.apply(&env).unwrap();
        }
        let mut under = StateCursor::new(s.clone(), Some("app/".into()));
        let batch = under.next_batch().unwrap();
        let keys: Vec<&str> = batch["kv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[0].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["app/a", "app/b"]);
        assert!(under.next_batch().is_none(), "nothing but those keys");
        let mut all = StateCursor::new(s, None);
        let mut parts = 0;
        while all.next_batch().is_some() {
            parts += 1;
        }
        assert!(parts >= 2, "nodes, kv, outcomes...: {parts}");
    }
}

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
//! A subscriber that reads slowly holds the stream back, not the node: the
//! node reads the log on the subscriber's pace (a bounded channel), and if
//! the log was compacted past the subscriber meanwhile, it gets a new
//! snapshot sub-stream and goes on from there.

use crate::ApiError;
use axum::extract::{Query, State as AxState};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_model::{EventIdx, State};
use shoal_node::NodeHandle;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

/// Frames waiting for a subscriber at most: a slow one holds the stream,
/// not the node's memory.
const QUEUE: usize = 64;
/// Entries of State per `state` frame.
const BATCH: usize = 1000;

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    from: Option<u64>,
}

pub(crate) async fn events(
    AxState(node): AxState<NodeHandle>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|i| i + 1);
    let from = match resume.or(q.from) {
        Some(f) => EventIdx(f),
        None => node.view().status.applied_index.next(),
    };
    let (tx, rx) = mpsc::channel::<SseEvent>(QUEUE);
    tokio::spawn(follow(node, from, tx));
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn frame(kind: &str, id: Option<EventIdx>, data: &Value) -> SseEvent {
    let e = SseEvent::default().event(kind).data(data.to_string());
    match id {
        Some(i) => e.id(i.0.to_string()),
        None => e,
    }
}

fn batches<K: serde::Serialize + Clone, V: serde::Serialize + Clone>(
    name: &str,
    items: impl Iterator<Item = (K, V)>,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut batch = Vec::with_capacity(BATCH);
    for (k, v) in items {
        batch.push(json!([k, v]));
        if batch.len() == BATCH {
            out.push(json!({ name: std::mem::take(&mut batch) }));
        }
    }
    if !batch.is_empty() {
        out.push(json!({ name: batch }));
    }
    out
}

/// The snapshot sub-stream for `s`; false once the subscriber is gone.
async fn send_state(s: &State, tx: &mpsc::Sender<SseEvent>) -> bool {
    let header = json!({"index": s.index(), "term": s.term(), "meta": s.meta()});
    if tx.send(frame("snapshot", None, &header)).await.is_err() {
        return false;
    }
    let parts = [
        batches(
            "nodes",
            s.nodes().iter().map(|(k, v)| (k.clone(), v.clone())),
        ),
        batches("kv", s.kv().iter().map(|(k, v)| (k.clone(), v.clone()))),
        batches(
            "tasks",
            s.tasks().iter().map(|(k, v)| (k.clone(), v.clone())),
        ),
        batches(
            "deployments",
            s.deployments().iter().map(|(k, v)| (k.clone(), v.clone())),
        ),
        batches(
            "outcomes",
            s.outcomes().iter().map(|(k, v)| (k.clone(), v.clone())),
        ),
    ];
    for b in parts.into_iter().flatten() {
        if tx.send(frame("state", None, &b)).await.is_err() {
            return false;
        }
    }
    let end = json!({"index": s.index(), "state_hash": s.hash().to_string()});
    tx.send(frame("snapshot_end", Some(s.index()), &end))
        .await
        .is_ok()
}

async fn follow(node: NodeHandle, mut next: EventIdx, tx: mpsc::Sender<SseEvent>) {
    let mut applied = node.view_receiver();
    let mut sent_any = false;
    loop {
        let Some(read) = node.read_events(next).await else {
            return;
        };
        match read {
            Ok(events) if events.is_empty() => {
                // Caught up: wait for more (or time out, to notice a
                // subscriber that went away).
                let wait = applied.wait_for(|v| v.status.applied_index >= next);
                let reached = matches!(
                    tokio::time::timeout(Duration::from_secs(15), wait).await,
                    Ok(Ok(_))
                );
                if !reached && tx.is_closed() {
                    return;
                }
            }
            Ok(events) => {
                sent_any = true;
                for e in events {
                    next = e.idx.next();
                    let data = serde_json::to_value(&e).unwrap_or(Value::Null);
                    if tx.send(frame("event", Some(e.idx), &data)).await.is_err() {
                        return;
                    }
                }
            }
            Err(floor) => {
                if sent_any {
                    let data = json!({"next": next, "floor": floor});
                    if tx.send(frame("behind", None, &data)).await.is_err() {
                        return;
                    }
                }
                let Some(s) = node.state().await else { return };
                if !send_state(&s, &tx).await {
                    return;
                }
                next = s.index().next();
            }
        }
    }
}

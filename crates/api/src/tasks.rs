//! Tasks under `/v1/tasks`: submit, list, inspect, cancel, delete, and
//! their output, live (server-sent events) or kept (a bounded ring).
//!
//! ```text
//! POST   /v1/tasks                 submit (JSON, below) -> {"task", "index"}
//! GET    /v1/tasks?limit=N         tasks, newest submissions last
//! GET    /v1/tasks/{id}            one task
//! POST   /v1/tasks/{id}/cancel     -> applied
//! DELETE /v1/tasks/{id}            forget a finished task
//! GET    /v1/tasks/{id}/logs       the output kept, as chunks
//! GET    /v1/tasks/{id}/output     server-sent events: `output` chunks,
//!                                  `status` changes, and `end` with the
//!                                  final status
//! ```
//!
//! The submission body is parsed by `shoal_request::task`, which says its shape.

use crate::kv::command_id;
use crate::routes::{route, Route};
use crate::streams::{sse, Streams};
use crate::ErrorCode;
use crate::{committed, json_content, stopped, ApiError, ApiResult};
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::Extension;
use axum::Json;
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_model::{Op, OutputChunk, Runner, Stream as OutStream, Task, TaskId, TaskStatus};
use shoal_node::NodeHandle;
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};

/// How long a finished task's stream waits for the last chunks.
const END_DRAIN: Duration = Duration::from_millis(500);

pub(crate) fn routes() -> Vec<Route> {
    vec![
        route(Method::POST, "/v1/tasks", submit),
        route(Method::GET, "/v1/tasks", list),
        route(Method::GET, "/v1/tasks/{id}", one),
        route(Method::DELETE, "/v1/tasks/{id}", delete),
        route(Method::POST, "/v1/tasks/{id}/cancel", cancel),
        route(Method::GET, "/v1/tasks/{id}/logs", logs),
        route(Method::GET, "/v1/tasks/{id}/output", output),
    ]
}

fn status_json(s: &TaskStatus) -> Value {
    match s {
        TaskStatus::Queued => json!({"state": "queued"}),
        TaskStatus::Leased { node, token, .. } => {
            json!({"state": "leased", "node": node, "token": token})
        }
        TaskStatus::Running { node, token, .. } => {
            json!({"state": "running", "node": node, "token": token})
        }
        TaskStatus::Finished { exit_code, class } => json!({
            "state": "finished",
            "exit_code": exit_code,
            "class": class,
        }),
        TaskStatus::Failed { reason } => json!({"state": "failed", "reason": reason}),
        TaskStatus::Cancelled => json!({"state": "cancelled"}),
    }
}

pub(crate) fn task_json(id: &TaskId, t: &Task) -> Value {
    let runner = match &t.spec.runner {
        Runner::Exec { cmd, args, cwd, .. } => json!({"cmd": cmd, "args": args, "cwd": cwd}),
        Runner::Synthetic {
            chunks,
            interval_ms,
            exit_code,
        } => {
            json!({"synthetic": {"chunks": chunks, "interval_ms": interval_ms, "exit_code": exit_code}})
        }
    };
    json!({
        "id": id,
        "status": status_json(&t.status),
        "attempt": t.attempt,
        "max_attempts": t.spec.max_attempts,
        "node": t.node,
        "runner": runner,
        "labels": t.spec.labels,
        "timeout_ms": t.spec.timeout_ms,
        "submitted_at_ms": t.submitted_at_ms,
        "updated_at_ms": t.updated_at_ms,
    })
}

/// User commands need a node that runs them; say so before queueing one.
pub(crate) async fn check_exec(node: &NodeHandle, runner: &Runner) -> Result<(), ApiError> {
    if matches!(runner, Runner::Exec { .. }) && !node.exec_available().await {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ExecDisabled,
            "no live node runs user commands: start nodes with --allow-exec (which needs a \
             cluster key, or a single loopback node); the synthetic runner always works",
        ));
    }
    Ok(())
}

async fn submit(AxState(node): AxState<NodeHandle>, headers: HeaderMap, body: Bytes) -> ApiResult {
    json_content(&headers)?;
    let spec = shoal_request::task(&body)?;
    if let Some(n) = &spec.node {
        let state = node.state().await.ok_or_else(stopped)?;
        if !state.nodes().contains_key(n) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("no node {n} in the cluster"),
            ));
        }
    }
    check_exec(&node, &spec.runner).await?;
    committed(
        node.submit(Op::TaskSubmit { spec }, command_id(&headers)?)
            .await,
    )
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list(AxState(node): AxState<NodeHandle>, Query(q): Query<ListQuery>) -> ApiResult {
    let s = node.state().await.ok_or_else(stopped)?;
    let limit = q.limit.unwrap_or(1000).min(100_000);
    let mut tasks: Vec<(&TaskId, &Task)> = s.tasks().iter().collect();
    tasks.sort_by_key(|(id, t)| (t.submitted_at_ms, (*id).clone()));
    let skip = tasks.len().saturating_sub(limit);
    let items: Vec<Value> = tasks[skip..]
        .iter()
        .map(|(id, t)| task_json(id, t))
        .collect();
    Ok(Json(
        json!({"index": s.index(), "total": s.tasks().len(), "tasks": items}),
    ))
}

fn task_id(id: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(id).map_err(|e| ApiError::invalid(e.to_string()))
}

fn not_found(id: &TaskId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no task {id}"),
    )
}

async fn one(AxState(node): AxState<NodeHandle>, Path(id): Path<String>) -> ApiResult {
    let id = task_id(&id)?;
    let s = node.state().await.ok_or_else(stopped)?;
    let t = s.tasks().get(&id).ok_or_else(|| not_found(&id))?;
    let mut v = task_json(&id, t);
    v["index"] = json!(s.index());
    Ok(Json(v))
}

async fn cancel(
    AxState(node): AxState<NodeHandle>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let task = task_id(&id)?;
    committed(
        node.submit(Op::TaskCancel { task }, command_id(&headers)?)
            .await,
    )
}

async fn delete(
    AxState(node): AxState<NodeHandle>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let task = task_id(&id)?;
    committed(
        node.submit(Op::TaskDelete { task }, command_id(&headers)?)
            .await,
    )
}

fn chunk_json(c: &OutputChunk) -> Value {
    json!({
        "attempt": c.attempt,
        "seq": c.seq,
        "stream": match c.stream { OutStream::Stdout => "stdout", OutStream::Stderr => "stderr" },
        "text": String::from_utf8_lossy(&c.data),
    })
}

/// The output this node keeps of a task, after asking the node that ran
/// it for what it has.
async fn logs(AxState(node): AxState<NodeHandle>, Path(id): Path<String>) -> ApiResult {
    let id = task_id(&id)?;
    let s = node.state().await.ok_or_else(stopped)?;
    let t = s.tasks().get(&id).ok_or_else(|| not_found(&id))?;
    node.watch_output(&id);
    let mut chunks = node.read_output(&id).await;
    // The node that ran it answers in a moment; wait for that, briefly.
    for _ in 0..10 {
        let complete = t.attempt > 0
            && chunks.last().is_some_and(|c| c.attempt == t.attempt)
            && t.status.is_terminal();
        if complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        chunks = node.read_output(&id).await;
    }
    chunks.sort_by_key(|c| (c.attempt, c.seq));
    let items: Vec<Value> = chunks.iter().map(chunk_json).collect();
    Ok(Json(json!({
        "task": id,
        "status": status_json(&t.status),
        "chunks": items,
    })))
}

/// Live output as server-sent events, from the start of what is kept.
async fn output(
    AxState(node): AxState<NodeHandle>,
    Extension(streams): Extension<Streams>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let id = task_id(&id)?;
    let s = node.state().await.ok_or_else(stopped)?;
    if !s.tasks().contains_key(&id) {
        return Err(not_found(&id));
    }
    let permit = streams.admit()?;
    let live = node.output();
    node.watch_output(&id);
    let mut backlog = node.read_output(&id).await;
    backlog.sort_by_key(|c| (c.attempt, c.seq));
    let follow = Follow {
        node,
        id,
        live,
        backlog: backlog.into(),
        seen: BTreeMap::new(),
        last_status: Value::Null,
        ended_at: None,
        tick: tokio::time::interval(Duration::from_millis(250)),
        ended: false,
    };
    let frames = futures::stream::unfold(follow, |mut f| async move {
        f.next_frame().await.map(|e| (e, f))
    });
    Ok(sse(permit, frames))
}

fn sse_frame(kind: &str, data: &Value) -> SseEvent {
    SseEvent::default().event(kind).data(data.to_string())
}

/// One client following a task: the kept output, then live chunks, status
/// changes, and the end.
struct Follow {
    node: NodeHandle,
    id: TaskId,
    live: broadcast::Receiver<OutputChunk>,
    backlog: VecDeque<OutputChunk>,
    /// The last chunk sent of each attempt.
    seen: BTreeMap<u32, u64>,
    last_status: Value,
    ended_at: Option<tokio::time::Instant>,
    tick: tokio::time::Interval,
    ended: bool,
}

impl Follow {
    /// A chunk not sent yet, as a frame.
    fn emit(&mut self, c: &OutputChunk) -> Option<SseEvent> {
        if c.task != self.id || self.seen.get(&c.attempt).is_some_and(|s| c.seq <= *s) {
            return None;
        }
        self.seen.insert(c.attempt, c.seq);
        Some(sse_frame("output", &chunk_json(c)))
    }

    async fn next_frame(&mut self) -> Option<SseEvent> {
        if self.ended {
            return None;
        }
        while let Some(c) = self.backlog.pop_front() {
            if let Some(e) = self.emit(&c) {
                return Some(e);
            }
        }
        loop {
            let frame = tokio::select! {
                c = self.live.recv() => match c {
                    Ok(c) => self.emit(&c),
                    Err(RecvError::Lagged(n)) => Some(sse_frame("lagged", &json!({"missed": n}))),
                    Err(RecvError::Closed) => return None,
                },
                _ = self.tick.tick() => self.check_status().await?,
            };
            if frame.is_some() {
                return frame;
            }
        }
    }

    /// A `status` frame when the task's status changed, the `end` frame
    /// a moment after it finished (for the last chunks to arrive).
    async fn check_status(&mut self) -> Option<Option<SseEvent>> {
        self.node.watch_output(&self.id);
        let s = self.node.state().await?;
        let Some(t) = s.tasks().get(&self.id) else {
            self.ended = true;
            let v = json!({"id": self.id, "status": {"state": "deleted"}});
            return Some(Some(sse_frame("end", &v)));
        };
        let v = task_json(&self.id, t);
        if t.status.is_terminal() {
            let at = *self.ended_at.get_or_insert_with(tokio::time::Instant::now);
            if at.elapsed() >= END_DRAIN {
                self.ended = true;
                return Some(Some(sse_frame("end", &v)));
            }
        }
        let status = json!([v["status"], v["attempt"]]);
        if status == self.last_status {
            return Some(None);
        }
        self.last_status = status;
        Some(Some(sse_frame("status", &v)))
    }
}

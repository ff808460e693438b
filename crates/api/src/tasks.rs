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
use crate::openapi::{Id, Idempotency, Invalid, NotFound, NotJson};
use crate::routes::{route, Route};
use crate::streams::{sse, OutputFrame, OutputKind, Streams};
use crate::ErrorCode;
use crate::{committed, json_content, stopped, ApiError, ApiResult, Committed};
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::Extension;
use axum::Json;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shoal_model::{EventIdx, ExitClass, FencingToken, NodeId, Op, OutputChunk, Runner};
use shoal_model::{Stream as OutStream, Task, TaskId, TaskStatus};
use shoal_node::NodeHandle;
use shoal_request::TaskBody;
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa::{IntoParams, ToSchema};

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

/// Where a task is: queued, leased or running on a node (with the
/// lease's fencing token), or ended; `deleted` only ends a stream.
#[derive(Serialize, ToSchema, Clone, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum StatusView {
    Queued,
    Leased { node: NodeId, token: FencingToken },
    Running { node: NodeId, token: FencingToken },
    Finished { exit_code: i32, class: ExitClass },
    Failed { reason: String },
    Cancelled,
    Deleted,
}

impl StatusView {
    fn of(s: &TaskStatus) -> StatusView {
        match s {
            TaskStatus::Queued => StatusView::Queued,
            TaskStatus::Leased { node, token, .. } => StatusView::Leased {
                node: node.clone(),
                token: *token,
            },
            TaskStatus::Running { node, token, .. } => StatusView::Running {
                node: node.clone(),
                token: *token,
            },
            TaskStatus::Finished { exit_code, class } => StatusView::Finished {
                exit_code: *exit_code,
                class: *class,
            },
            TaskStatus::Failed { reason } => StatusView::Failed {
                reason: reason.clone(),
            },
            TaskStatus::Cancelled => StatusView::Cancelled,
        }
    }
}

/// What runs: a command with its arguments and directory (its
/// environment is not shown), or the synthetic runner.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum RunnerView {
    Exec {
        cmd: String,
        args: Vec<String>,
        cwd: Option<String>,
    },
    Synthetic {
        synthetic: SyntheticView,
    },
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SyntheticView {
    chunks: u32,
    interval_ms: u64,
    exit_code: i32,
}

impl RunnerView {
    pub(crate) fn of(r: &Runner) -> RunnerView {
        match r {
            Runner::Exec { cmd, args, cwd, .. } => RunnerView::Exec {
                cmd: cmd.clone(),
                args: args.clone(),
                cwd: cwd.clone(),
            },
            Runner::Synthetic {
                chunks,
                interval_ms,
                exit_code,
            } => RunnerView::Synthetic {
                synthetic: SyntheticView {
                    chunks: *chunks,
                    interval_ms: *interval_ms,
                    exit_code: *exit_code,
                },
            },
        }
    }
}

/// A task as the API shows it.
#[derive(Serialize, ToSchema)]
pub(crate) struct TaskView {
    id: TaskId,
    status: StatusView,
    /// The attempt under way or last made (0: none yet).
    attempt: u32,
    max_attempts: u32,
    /// The node it last ran on.
    node: Option<NodeId>,
    runner: RunnerView,
    labels: BTreeMap<String, String>,
    timeout_ms: Option<u64>,
    submitted_at_ms: u64,
    updated_at_ms: u64,
}

impl TaskView {
    pub(crate) fn of(id: &TaskId, t: &Task) -> TaskView {
        TaskView {
            id: id.clone(),
            status: StatusView::of(&t.status),
            attempt: t.attempt,
            max_attempts: t.spec.max_attempts,
            node: t.node.clone(),
            runner: RunnerView::of(&t.spec.runner),
            labels: t.spec.labels.clone(),
            timeout_ms: t.spec.timeout_ms,
            submitted_at_ms: t.submitted_at_ms,
            updated_at_ms: t.updated_at_ms,
        }
    }
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

/// Submit a task -> task, its id. A task pinned to a node that is not a
/// member: 404.
#[utoipa::path(
    post,
    path = "/v1/tasks",
    operation_id = "submitTask",
    params(Idempotency),
    request_body = TaskBody,
    responses(
        (status = 200, body = Committed),
        (status = 404, response = NotFound),
        (status = 415, response = NotJson),
    )
)]
async fn submit(
    AxState(node): AxState<NodeHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Committed> {
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// The newest submissions only, at most this many (default 1000, at
    /// most 100000).
    #[param(maximum = 18446744073709551615u64)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Tasks {
    index: EventIdx,
    /// Tasks in State, listed or not.
    total: usize,
    tasks: Vec<TaskView>,
}

/// Tasks, newest submissions last.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    operation_id = "listTasks",
    params(ListQuery),
    responses((status = 200, body = Tasks), (status = 400, response = Invalid))
)]
async fn list(AxState(node): AxState<NodeHandle>, Query(q): Query<ListQuery>) -> ApiResult<Tasks> {
    let s = node.state().await.ok_or_else(stopped)?;
    let limit = q.limit.unwrap_or(1000).min(100_000);
    let mut tasks: Vec<(&TaskId, &Task)> = s.tasks().iter().collect();
    tasks.sort_by_key(|(id, t)| (t.submitted_at_ms, (*id).clone()));
    let skip = tasks.len().saturating_sub(limit);
    Ok(Json(Tasks {
        index: s.index(),
        total: s.tasks().len(),
        tasks: tasks[skip..]
            .iter()
            .map(|(id, t)| TaskView::of(id, t))
            .collect(),
    }))
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

#[derive(Serialize, ToSchema)]
pub(crate) struct OneTask {
    #[serde(flatten)]
    task: TaskView,
    index: EventIdx,
}

/// One task.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    operation_id = "getTask",
    params(Id),
    responses((status = 200, body = OneTask), (status = 404, response = NotFound))
)]
async fn one(AxState(node): AxState<NodeHandle>, Path(id): Path<String>) -> ApiResult<OneTask> {
    let id = task_id(&id)?;
    let s = node.state().await.ok_or_else(stopped)?;
    let t = s.tasks().get(&id).ok_or_else(|| not_found(&id))?;
    Ok(Json(OneTask {
        task: TaskView::of(&id, t),
        index: s.index(),
    }))
}

/// Cancel a task -> applied.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/cancel",
    operation_id = "cancelTask",
    params(Id, Idempotency),
    responses((status = 200, body = Committed), (status = 404, response = NotFound))
)]
async fn cancel(
    AxState(node): AxState<NodeHandle>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Committed> {
    let task = task_id(&id)?;
    committed(
        node.submit(Op::TaskCancel { task }, command_id(&headers)?)
            .await,
    )
}

/// Forget a finished task -> applied (one under way: 409).
#[utoipa::path(
    delete,
    path = "/v1/tasks/{id}",
    operation_id = "deleteTask",
    params(Id, Idempotency),
    responses((status = 200, body = Committed), (status = 404, response = NotFound))
)]
async fn delete(
    AxState(node): AxState<NodeHandle>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Committed> {
    let task = task_id(&id)?;
    committed(
        node.submit(Op::TaskDelete { task }, command_id(&headers)?)
            .await,
    )
}

/// A piece of a task's output.
#[derive(Serialize, ToSchema)]
pub(crate) struct Chunk {
    attempt: u32,
    seq: u64,
    /// `stdout` or `stderr`.
    stream: &'static str,
    /// The bytes as UTF-8, invalid sequences replaced.
    text: String,
}

impl Chunk {
    fn of(c: &OutputChunk) -> Chunk {
        Chunk {
            attempt: c.attempt,
            seq: c.seq,
            stream: match c.stream {
                OutStream::Stdout => "stdout",
                OutStream::Stderr => "stderr",
            },
            text: String::from_utf8_lossy(&c.data).into_owned(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Logs {
    task: TaskId,
    status: StatusView,
    chunks: Vec<Chunk>,
}

/// The output kept of a task, as chunks (needs the token, on loopback
/// too): this node's, after asking the node that ran it for what it has.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/logs",
    operation_id = "taskLogs",
    params(Id),
    responses((status = 200, body = Logs), (status = 404, response = NotFound))
)]
async fn logs(AxState(node): AxState<NodeHandle>, Path(id): Path<String>) -> ApiResult<Logs> {
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
    Ok(Json(Logs {
        task: id,
        status: StatusView::of(&t.status),
        chunks: chunks.iter().map(Chunk::of).collect(),
    }))
}

/// Live output as server-sent events, from the start of what is kept
/// (needs the token, on loopback too).
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/output",
    operation_id = "taskOutput",
    params(Id),
    responses(
        (
            status = 200,
            content_type = "text/event-stream",
            body = OutputFrame,
            description = "server-sent events: `output` chunks, `status` changes (the task), \
                `lagged` when this reader missed chunks, and `end` with the final status"
        ),
        (status = 404, response = NotFound),
    )
)]
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
        last_status: None,
        ended_at: None,
        tick: tokio::time::interval(Duration::from_millis(250)),
        ended: false,
    };
    let frames = futures::stream::unfold(follow, |mut f| async move {
        f.next_frame().await.map(|e| (e, f))
    });
    Ok(sse(permit, frames))
}

fn sse_frame(kind: OutputKind, data: &impl Serialize) -> SseEvent {
    let data = serde_json::to_string(data).unwrap_or_default();
    SseEvent::default().event(kind.as_str()).data(data)
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
    last_status: Option<(StatusView, u32)>,
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
        Some(sse_frame(OutputKind::Output, &Chunk::of(c)))
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
                    Err(RecvError::Lagged(n)) => Some(sse_frame(OutputKind::Lagged, &json!({"missed": n}))),
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
            let v = json!({"id": self.id, "status": StatusView::Deleted});
            return Some(Some(sse_frame(OutputKind::End, &v)));
        };
        let v = TaskView::of(&self.id, t);
        if t.status.is_terminal() {
            let at = *self.ended_at.get_or_insert_with(tokio::time::Instant::now);
            if at.elapsed() >= END_DRAIN {
                self.ended = true;
                return Some(Some(sse_frame(OutputKind::End, &v)));
            }
        }
        let status = Some((v.status.clone(), v.attempt));
        if status == self.last_status {
            return Some(None);
        }
        self.last_status = status;
        Some(Some(sse_frame(OutputKind::Status, &v)))
    }
}

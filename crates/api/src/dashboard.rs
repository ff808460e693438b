//! The dashboard at `/`: one page, no build step, served from the binary.
//! It renders a compact view of the cluster that `/v1/dashboard/stream`
//! pushes as server-sent events whenever it changes (at most twice a
//! second), plus the live event stream (`/v1/events`) and a task's output
//! (`/v1/tasks/{id}/output`) when one is clicked.

use crate::deployments::deployment_json;
use crate::streams::{sse, Streams};
use crate::tasks::task_json;
use crate::{nodes_json, status_json, stopped, ApiError};
use axum::extract::State as AxState;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::Html;
use axum::Extension;
use futures::Stream;
use serde_json::{json, Value};
use shoal_model::{State, Task, TaskId};
use shoal_node::{NodeHandle, View};
use std::convert::Infallible;
use std::time::Duration;

const PAGE: &str = include_str!("../assets/dashboard.html");
/// Rows of each kind the view carries at most.
const ROWS: usize = 50;
const EVERY: Duration = Duration::from_millis(500);

pub(crate) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// What this node saw each second for the last fifteen minutes, with
/// markers (`history.rs`).
pub(crate) async fn history(
    Extension(h): Extension<crate::history::sampler::Shared>,
    axum::extract::Query(q): axum::extract::Query<HistoryQuery>,
) -> axum::Json<Value> {
    let since = q.since.unwrap_or(0);
    axum::Json(h.lock().unwrap_or_else(|e| e.into_inner()).json(since))
}

#[derive(serde::Deserialize)]
pub(crate) struct HistoryQuery {
    /// Only samples and markers after this (ms since the Unix epoch).
    since: Option<u64>,
}

/// The view the page renders: small, whatever the State's size.
fn view_json(s: &State, v: &View) -> Value {
    let mut tasks: Vec<(&TaskId, &Task)> = s.tasks().iter().collect();
    if tasks.len() <= 10_000 {
        tasks.sort_by_key(|(id, t)| (t.submitted_at_ms, (*id).clone()));
    }
    let skip = tasks.len().saturating_sub(ROWS);
    let tasks: Vec<Value> = tasks[skip..]
        .iter()
        .rev()
        .map(|(id, t)| task_json(id, t))
        .collect();
    let deployments: Vec<Value> = s
        .deployments()
        .iter()
        .take(ROWS)
        .map(|(n, d)| deployment_json(n, d, s))
        .collect();
    json!({
        "status": status_json(v),
        "nodes": nodes_json(s, v),
        "tasks": tasks,
        "deployments": deployments,
        // The page reads keys a page at a time (`/v1/kv`), under a prefix.
        "kv": {"total": s.kv().len()},
    })
}

pub(crate) async fn stream(
    AxState(node): AxState<NodeHandle>,
    Extension(streams): Extension<Streams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    node.state().await.ok_or_else(stopped)?;
    let permit = streams.admit()?;
    let tick = tokio::time::interval(EVERY);
    let frames = futures::stream::unfold(
        (node, tick, Value::Null),
        |(node, mut tick, mut last)| async move {
            loop {
                tick.tick().await;
                let s = node.state().await?;
                let mut v = view_json(&s, &node.view());
                // "last heard" and "reported" move on every tick; compare without
                // them.
                let mut key = v.clone();
                for n in key["nodes"].as_array_mut().into_iter().flatten() {
                    n["last_heard_ms"] = Value::Null;
                    n["reported_ms_ago"] = Value::Null;
                }
                key["status"]["uptime_s"] = Value::Null;
                key["status"]["events_per_sec"] = Value::Null;
                if key == last {
                    continue;
                }
                last = key;
                v["at_ms"] = json!(std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64));
                let e = SseEvent::default().event("view").data(v.to_string());
                return Some((e, (node, tick, last)));
            }
        },
    );
    Ok(sse(permit, frames))
}

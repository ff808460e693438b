//! The dashboard at `/`: one page, no build step, served from the binary.
//! It renders a compact view of the cluster that `/v1/dashboard/stream`
//! pushes as server-sent events whenever it changes (at most twice a
//! second), plus the live event stream (`/v1/events`) and a task's output
//! (`/v1/tasks/{id}/output`) when one is clicked.

use crate::deployments::DeploymentView;
use crate::streams::{sse, Streams, ViewFrame, ViewKind};
use crate::tasks::TaskView;
use crate::{nodes_view, stopped, ApiError, StatusBody};
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

/// The dashboard: one HTML page.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "dashboard",
    responses((status = 200, content_type = "text/html", body = String))
)]
pub(crate) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// What this node saw each second for the last fifteen minutes, with
/// markers (`history.rs`).
#[utoipa::path(
    get,
    path = "/v1/dashboard/history",
    operation_id = "dashboardHistory",
    params(HistoryQuery),
    responses((status = 200, body = Object, description = "samples and markers"))
)]
pub(crate) async fn history(
    Extension(h): Extension<crate::history::sampler::Shared>,
    axum::extract::Query(q): axum::extract::Query<HistoryQuery>,
) -> axum::Json<Value> {
    let since = q.since.unwrap_or(0);
    axum::Json(h.lock().unwrap_or_else(|e| e.into_inner()).json(since))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Only samples and markers after this (ms since the Unix epoch).
    #[param(maximum = 18446744073709551615u64)]
    since: Option<u64>,
}

/// The view the page renders: small, whatever the State's size.
fn view_json(s: &State, v: &View) -> Value {
    let mut tasks: Vec<(&TaskId, &Task)> = s.tasks().iter().collect();
    if tasks.len() <= 10_000 {
        tasks.sort_by_key(|(id, t)| (t.submitted_at_ms, (*id).clone()));
    }
    let skip = tasks.len().saturating_sub(ROWS);
    let tasks: Vec<TaskView> = tasks[skip..]
        .iter()
        .rev()
        .map(|(id, t)| TaskView::of(id, t))
        .collect();
    let deployments: Vec<DeploymentView> = s
        .deployments()
        .iter()
        .take(ROWS)
        .map(|(n, d)| DeploymentView::of(n, d, s))
        .collect();
    json!({
        "status": StatusBody::of(v),
        "nodes": nodes_view(s, v),
        "tasks": tasks,
        "deployments": deployments,
        // The page reads keys a page at a time (`/v1/kv`), under a prefix.
        "kv": {"total": s.kv().len()},
    })
}

/// The dashboard's view as server-sent events: a `view` frame when it
/// changes, at most twice a second.
#[utoipa::path(
    get,
    path = "/v1/dashboard/stream",
    operation_id = "dashboardStream",
    responses((
        status = 200,
        content_type = "text/event-stream",
        body = ViewFrame,
        description = "server-sent events: one `view` frame (JSON) per change"
    ))
)]
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
                node.want_reports();
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
                let e = SseEvent::default()
                    .event(ViewKind::View.as_str())
                    .data(v.to_string());
                return Some((e, (node, tick, last)));
            }
        },
    );
    Ok(sse(permit, frames))
}

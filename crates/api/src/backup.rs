//! `GET /v1/snapshot`: State as a snapshot file, for a backup (`shoal
//! snapshot save`; etcd's `snapshot save`). Taken at a read index the
//! master confirmed, so every write acknowledged before the request is in
//! it; the body is the encoded snapshot followed by its SHA-256, as
//! `shoal up --restore` reads it. One at a time per node: encoding a large
//! State takes a core for a while.

use crate::ApiError;
use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use shoal_node::NodeHandle;
use tokio::sync::Semaphore;

static ONE_AT_A_TIME: Semaphore = Semaphore::const_new(1);

/// State as a snapshot file (needs the token, on loopback too): the
/// encoded snapshot, then its SHA-256, at an index the master confirmed.
#[utoipa::path(
    get,
    path = "/v1/snapshot",
    responses(
        (
            status = 200,
            content_type = "application/octet-stream",
            body = Vec<u8>,
            headers(
                ("Shoal-Snapshot-Index" = u64, description = "the index it was taken at"),
                ("Shoal-State-Hash" = String, description = "the hash of State at that index"),
            )
        ),
        (status = 504, response = crate::openapi::Timeout),
    )
)]
pub(crate) async fn snapshot(AxState(node): AxState<NodeHandle>) -> Result<Response, ApiError> {
    let Ok(_permit) = ONE_AT_A_TIME.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            crate::ErrorCode::Busy,
            "a snapshot is being taken on this node; try again when it is done",
        ));
    };
    let backup = node.backup().await?;
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"shoal-{}.snap\"", backup.index),
        ),
        (
            header::HeaderName::from_static("shoal-snapshot-index"),
            backup.index.to_string(),
        ),
        (
            header::HeaderName::from_static("shoal-state-hash"),
            backup.state_hash.to_string(),
        ),
    ];
    Ok((headers, Body::from(backup.file)).into_response())
}

//! API tokens: every write needs `Authorization: Bearer TOKEN`; reads are
//! open when the API listens on loopback only, else they need it too.
//! What a task prints (`/v1/tasks/{id}/output`, `/logs`) needs the token
//! even on loopback: it is the user's data, not the cluster's. A request
//! that carried the right token is marked `Authenticated` for handlers
//! that show more to token holders (`?reveal=env`, see `secrets.rs`).

use crate::ApiError;
use crate::ErrorCode;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Who may call the API.
#[derive(Clone, Debug)]
pub struct Access {
    /// The token writes must carry.
    pub token: String,
    /// Whether reads are open without a token (the API is on loopback).
    pub open_reads: bool,
    /// Serve the test-only fault-injection endpoint (`--fault-injection`).
    pub faults: bool,
}

/// The token a request carries: `Authorization: Bearer TOKEN`, or for a
/// read, `?access_token=TOKEN` (a browser's `EventSource` cannot set
/// headers; the dashboard takes it from its URL's fragment).
fn presented<'a>(headers: &'a HeaderMap, uri: &'a Uri, read: bool) -> Option<&'a str> {
    if let Some(v) = headers.get("authorization") {
        return v.to_str().ok()?.strip_prefix("Bearer ").map(str::trim);
    }
    if !read {
        return None;
    }
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
}

/// Compares without leaking where the first difference is.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The request carried the API token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Authenticated;

/// Probes a load balancer or init system makes without a token, wherever
/// the API listens: they say only whether the node is up and ready.
fn probe(path: &str) -> bool {
    matches!(path, "/health" | "/ready")
}

/// Reads that need the token on loopback too: a task's output, and a
/// backup of the whole State.
pub(crate) fn private(path: &str) -> bool {
    path == "/v1/snapshot"
        || path
            .strip_prefix("/v1/tasks/")
            .is_some_and(|rest| rest.ends_with("/output") || rest.ends_with("/logs"))
}

pub(crate) async fn check(
    State(access): State<Arc<Access>>,
    mut req: Request,
    next: Next,
) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let valid = presented(req.headers(), req.uri(), read).is_some_and(|t| same(t, &access.token));
    if valid {
        req.extensions_mut().insert(Authenticated);
        return next.run(req).await;
    }
    let private = private(req.uri().path());
    if read && (access.open_reads || probe(req.uri().path())) && !private {
        return next.run(req).await;
    }
    match presented(req.headers(), req.uri(), read) {
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the API token is wrong",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            if private {
                "a task's output and a snapshot need the API token, on loopback too \
                 (Authorization: Bearer TOKEN; the CLI reads it from --token, SHOAL_TOKEN or \
                 the node's data directory)"
            } else if read {
                "this API is not on loopback: reads need a token too (Authorization: Bearer TOKEN)"
            } else {
                "writes need the API token (Authorization: Bearer TOKEN; the CLI reads it from \
                 --token, SHOAL_TOKEN or the node's data directory)"
            },
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{private, same};

    #[test]
    fn task_output_is_private_and_the_rest_is_not() {
        assert!(private("/v1/tasks/t-1/output"));
        assert!(private("/v1/tasks/t-1/logs"));
        assert!(!private("/v1/tasks/t-1"));
        assert!(!private("/v1/tasks"));
        assert!(!private("/v1/kv/logs"));
        assert!(private("/v1/snapshot"));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }
}

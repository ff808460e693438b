//! API tokens: every write needs `Authorization: Bearer TOKEN`; reads are
//! open when the API listens on loopback only, else they need it too.

use crate::ApiError;
use crate::ErrorCode;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
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

fn presented(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(str::trim)
}

/// Compares without leaking where the first difference is.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(crate) async fn check(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    if read && access.open_reads {
        return next.run(req).await;
    }
    match presented(req.headers()) {
        Some(t) if same(t, &access.token) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the API token is wrong",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            if read {
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
    use super::same;

    #[test]
    fn tokens_compare_exactly() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }
}

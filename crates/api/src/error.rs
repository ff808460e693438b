//! Errors as the API reports them: `{"error": {"code": C, "message": M}}`
//! with an HTTP status. `ErrorCode` is the closed list of codes; clients
//! (the CLI among them) match on it, never on the message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use shoal_model::Rejection;
use shoal_proto::wire::Refusal;
use utoipa::ToSchema;

/// What went wrong, as a client should act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A majority of voters is unreachable: the write cannot commit.
    NoQuorum,
    NotMaster,
    /// Too many commands in flight: retry later.
    Busy,
    /// The request or command is malformed.
    Invalid,
    /// Not answered in time: retry under the same idempotency key.
    Timeout,
    NotJoined,
    Stopping,
    Unauthorized,
    NotFound,
    NoRoute,
    MethodNotAllowed,
    TooLarge,
    UnsupportedMediaType,
    WrongType,
    Overflow,
    StaleToken,
    LockHeld,
    NotFinished,
    Full,
    /// User commands are off on every live node.
    ExecDisabled,
    /// The request's `Host` is not a name of this node (see `host.rs`).
    WrongHost,
    /// The node's disk does not take writes (full, or failing); the
    /// message says which. Retry under the same idempotency key.
    Storage,
    /// The Idempotency-Key was used before for another request.
    IdempotencyKeyReused,
    /// Anything else (and codes this client does not know yet).
    #[serde(other)]
    Error,
}

impl std::fmt::Display for ErrorCode {
    /// Its name on the wire (`no_quorum`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => f.write_str(&name),
            _ => f.write_str("error"),
        }
    }
}

impl ErrorCode {
    /// Whether the same request may succeed if sent again as it is.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::Timeout | ErrorCode::Busy)
    }
}

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// For 405: the methods the path takes (`Allow`, RFC 9110).
    allow: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    /// 405: `method` is not one `path` takes; `allow` lists those it does.
    pub(crate) fn method_not_allowed(message: impl Into<String>, allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Invalid, message)
        }
    }

    /// 400 `invalid`: a parameter, header or body the route cannot take.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Invalid, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(allow) = self.allow {
            let allow = axum::http::HeaderValue::from_static(allow);
            response
                .headers_mut()
                .insert(axum::http::header::ALLOW, allow);
        }
        response
    }
}

/// An error's body: `{"error": {"code": C, "message": M}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, snake_case: what a client acts on.
    code: ErrorCode,
    /// For people: what went wrong, and often what to do.
    message: String,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let (status, code) = match r {
            Refusal::NoQuorum => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NoQuorum),
            Refusal::NotMaster => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotMaster),
            Refusal::Busy => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::Busy),
            Refusal::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::Invalid),
            Refusal::Timeout => (StatusCode::GATEWAY_TIMEOUT, ErrorCode::Timeout),
            Refusal::NotJoined => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotJoined),
            Refusal::Storage(_) => (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::Storage),
        };
        ApiError::new(status, code, r.to_string())
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        // A refused transaction answers as its refused op would, and says
        // which op it was.
        let mut cause = &r;
        while let Rejection::InTxn { reason, .. } = cause {
            cause = reason;
        }
        let (status, code) = match cause {
            Rejection::InTxn { .. } => unreachable!("unwrapped above"),
            Rejection::WrongType => (StatusCode::CONFLICT, ErrorCode::WrongType),
            Rejection::Overflow => (StatusCode::CONFLICT, ErrorCode::Overflow),
            Rejection::StaleToken => (StatusCode::CONFLICT, ErrorCode::StaleToken),
            Rejection::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Rejection::LockHeld { .. } => (StatusCode::CONFLICT, ErrorCode::LockHeld),
            Rejection::NotFinished => (StatusCode::CONFLICT, ErrorCode::NotFinished),
            Rejection::Full { .. } => (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::Full),
            Rejection::Invalid { .. } => (StatusCode::BAD_REQUEST, ErrorCode::Invalid),
            Rejection::IdReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
            ),
        };
        ApiError::new(status, code, r.to_string())
    }
}

impl From<shoal_request::Invalid> for ApiError {
    fn from(e: shoal_request::Invalid) -> Self {
        ApiError::invalid(e.0)
    }
}

/// A JSON body must say so (`Content-Type: application/json`, or a
/// `+json` type): 415 otherwise.
pub(crate) fn json_content(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let mime = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match mime.as_deref() {
        Some(m)
            if m == "application/json"
                || (m.starts_with("application/") && m.ends_with("+json")) =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON, sent with Content-Type: application/json",
        )),
    }
}

pub(crate) async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NoRoute,
        format!("no endpoint {} (see /v1/openapi.json)", uri.path()),
    )
}

pub(crate) async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

pub(crate) fn stopped() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Stopping,
        "the node is stopping",
    )
}

/// Errors that do not come from a handler (a body over the limit, a body
/// that does not parse) are plain text from the framework; they are
/// rewritten into the API's JSON error shape.
pub(crate) async fn json_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .unwrap_or_default();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => ErrorCode::Invalid,
        _ => ErrorCode::Error,
    };
    let message = String::from_utf8_lossy(&body).trim().to_owned();
    let message = if message.is_empty() {
        status.to_string()
    } else {
        message
    };
    ApiError::new(status, code, message).into_response()
}

/// Answers 503 `timeout` when a handler has not answered within `limit`
/// (a stream has answered once it starts).
pub(crate) async fn within(
    limit: std::time::Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout,
            format!("not answered within {} s; retry", limit.as_secs()),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_have_snake_case_names_and_unknown_ones_read_as_error() {
        assert_eq!(json!(ErrorCode::NoQuorum), json!("no_quorum"));
        assert_eq!(json!(ErrorCode::StaleToken), json!("stale_token"));
        let known: ErrorCode = serde_json::from_value(json!("lock_held")).unwrap();
        assert_eq!(known, ErrorCode::LockHeld);
        let unknown: ErrorCode = serde_json::from_value(json!("from_the_future")).unwrap();
        assert_eq!(unknown, ErrorCode::Error);
        assert!(ErrorCode::Busy.retryable() && !ErrorCode::NoQuorum.retryable());
        assert_eq!(ErrorCode::NotMaster.to_string(), "not_master");
    }
}

//! The one place that knows HTTP status codes. Handlers return [`ApiError`]; the client gets
//! a status and an RFC 9457 problem body, the details go to the log. [`problem_shape`] gives
//! every other error answer (axum's own rejections, 404 and 405 of the router) the same
//! shape, and [`shown`] is how a client's input is echoed (quoted, truncated).

use std::time::Duration;

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Longest part of a client's input (a stream name) echoed in an error, in characters.
const SHOWN_CHARS: usize = 64;

/// Every way a signalling request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not what the content type says.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or wrong Bearer token.
    #[error("a valid Bearer token is required")]
    Unauthorized,
    /// 403: not allowed, and no credential would help (publishing from a remote address
    /// when no publish token is configured).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such stream or session.
    #[error("{0}")]
    NotFound(String),
    /// 405: the resource exists, not with this method (the `Allow` header says which).
    #[error("method not allowed here; the Allow header lists the methods")]
    MethodNotAllowed,
    /// 408: the request's body did not arrive in time.
    #[error("the request body did not arrive within {} s", .0.as_secs_f64())]
    RequestTimeout(Duration),
    /// 413: the body is larger than this many bytes.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 412: If-Match does not match the session's ETag.
    #[error("If-Match does not match the session's ETag")]
    PreconditionFailed,
    /// 415: wrong Content-Type.
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    /// 422: a well-formed request we cannot serve.
    #[error("{0}")]
    Unprocessable(String),
    /// 428: If-Match is required.
    #[error("If-Match is required")]
    PreconditionRequired,
    /// 503: over capacity; retry after this many seconds.
    #[error("{0}")]
    Overloaded(String, u32),
    /// 500: a broken invariant inside the server.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::Overloaded(..) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The client's answer; the log line is `signal::refusal`'s, which knows who asked.
impl From<super::auth::AuthError> for ApiError {
    fn from(e: super::auth::AuthError) -> ApiError {
        use super::auth::AuthError;
        match e {
            AuthError::Missing | AuthError::Malformed | AuthError::WrongToken => {
                ApiError::Unauthorized
            }
            AuthError::NotLoopback => ApiError::Forbidden(format!(
                "{e}; the operator can set --publish-token or --allow-public-publish"
            )),
            AuthError::CrossOrigin => {
                ApiError::Forbidden(format!("{e}; the operator can set --publish-token"))
            }
            AuthError::MetricsNotLocal => {
                ApiError::Forbidden(format!("{e}; the operator can set --metrics-token"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!("signalling: {detail}");
        } else {
            tracing::debug!("signalling: {status}: {self}");
        }
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or(""),
            "status": status.as_u16(),
            "detail": self.to_string(),
        })
        .to_string();
        let mut res = (status, body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::Overloaded(_, secs) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            ApiError::Unauthorized => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        res
    }
}

/// `name` as an error echoes it: quoted and escaped, at most [`SHOWN_CHARS`] characters
/// (then `…`).
pub fn shown(name: &str) -> String {
    match name.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}…", &name[..cut]),
        None => format!("{name:?}"),
    }
}

/// `fallback`: a path no route knows.
pub async fn no_route() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

/// Middleware: an error answer that is not problem+json already (axum's rejections of a
/// path, query or body, the router's 405) is replaced by one of ours with the same status
/// and headers. Its text is not passed on: it can quote the client's input at any length.
pub async fn problem_shape(req: Request<axum::body::Body>, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return res;
    }
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(super::listen::MAX_BODY),
        StatusCode::NOT_FOUND => ApiError::NotFound("no such resource".into()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType("application/sdp"),
        s if s.is_server_error() => ApiError::Internal(format!("{s} from the router")),
        _ => ApiError::BadRequest(
            "the request is malformed (path, query or body not as expected)".into(),
        ),
    };
    let (mut parts, _) = res.into_parts();
    let mut ours = error.into_response();
    *ours.status_mut() = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in ours.headers() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, ours.into_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut() {
        assert_eq!(shown("live"), "\"live\"");
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert!(s.chars().count() < 70, "{s}");
        assert!(s.ends_with('…'));
        let multi = "é".repeat(100);
        assert_eq!(shown(&multi).chars().filter(|&c| c == 'é').count(), 64);
        assert_eq!(shown("a\u{0}b"), "\"a\\0b\"");
    }
}

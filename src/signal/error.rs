//! The one place that knows HTTP status codes. Handlers return [`ApiError`]; the client gets
//! a status and an RFC 9457 problem body, the details go to the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

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
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::Overloaded(..) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<super::auth::AuthError> for ApiError {
    fn from(e: super::auth::AuthError) -> ApiError {
        use super::auth::AuthError;
        match e {
            AuthError::Missing | AuthError::Malformed | AuthError::WrongToken => {
                tracing::info!("refused: {e}");
                ApiError::Unauthorized
            }
            AuthError::NotLoopback => {
                tracing::warn!("refused a remote publisher: {e}");
                ApiError::Forbidden(format!(
                    "{e}; the operator can set --publish-token or --allow-public-publish"
                ))
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

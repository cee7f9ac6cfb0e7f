//! The one place where errors become HTTP answers: a status, a stable code, a message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_protocol::{ErrorBody, ErrorDetail};
use ferry_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UriTooLong(String),
    /// A write made on an older version of a row (409 `stale`), with the current version.
    #[error("{0}")]
    Stale(String, Option<Box<serde_json::Value>>),
    /// `If-Match`/`If-None-Match` did not hold (412), with the current version.
    #[error("{0}")]
    PreconditionFailed(String, Option<Box<serde_json::Value>>),
    /// The write needs a version precondition (428).
    #[error("{0}")]
    PreconditionRequired(String),
    /// A resumable upload sent from another offset than the bytes the server holds (409
    /// `upload_offset`); the answer says where to resume.
    #[error("{0}")]
    UploadOffset(String, u64),
    /// Another request is uploading the same file now (409 `upload_in_progress`).
    #[error("{0}")]
    UploadInProgress(String),
    /// The bytes of an upload do not hash to the file's name (422 `hash_mismatch`).
    #[error("{0}")]
    HashMismatch(String),
    /// A `Range` the file cannot satisfy (416).
    #[error("{0}")]
    RangeNotSatisfiable(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            ApiError::Stale(..) => (StatusCode::CONFLICT, "stale"),
            ApiError::PreconditionFailed(..) => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            ApiError::PreconditionRequired(_) => (StatusCode::PRECONDITION_REQUIRED, "precondition_required"),
            ApiError::UploadOffset(..) => (StatusCode::CONFLICT, "upload_offset"),
            ApiError::UploadInProgress(_) => (StatusCode::CONFLICT, "upload_in_progress"),
            ApiError::HashMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch"),
            ApiError::RangeNotSatisfiable(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => ApiError::BadRequest(m),
            StoreError::Forbidden(m) => ApiError::Forbidden(m),
            StoreError::NotFound(m) => ApiError::NotFound(m),
            StoreError::Exists(m) => ApiError::Conflict(m),
            e @ StoreError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            e @ StoreError::Internal(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A 5xx is logged, and its message hidden, with the request id by `crate::guard`.
        let (status, code) = self.status_and_code();
        let current = match &self {
            ApiError::Stale(_, c) | ApiError::PreconditionFailed(_, c) => c.as_deref().cloned(),
            _ => None,
        };
        let offset = match &self {
            ApiError::UploadOffset(_, o) => Some(*o),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail { code: code.to_owned(), message: bounded(self.to_string()) },
            current,
            offset,
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(o) = offset {
            resp.headers_mut().insert("upload-offset", o.into());
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("5"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The most characters an error message carries: messages name the bad value, and a value
/// can be megabytes long.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// `message`, cut to [`MAX_MESSAGE_CHARS`] with a note of how much was left out.
fn bounded(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => message,
        Some((cut, _)) => format!("{}… ({} more bytes)", &message[..cut], message.len() - cut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_to_a_bounded_length() {
        let resp = ApiError::BadRequest(format!("unknown table '{}'", "t".repeat(1_000_000))).into_response();
        let (_, body) = resp.into_parts();
        let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(body, 100_000)).unwrap().unwrap();
        assert!(body.len() < 4000, "{} bytes", body.len());
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert!(body.error.message.ends_with("… (998016 more bytes)"), "{}", &body.error.message[1900..]);
    }
}

//! The one place where errors become HTTP answers: a status, a stable code, a message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_protocol::{ErrorBody, ErrorCode, ErrorDetail};
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
    /// A cursor older than the compaction horizon (410 `cursor_expired`).
    #[error("{0}")]
    CursorExpired(String),
    /// A `Range` the file cannot satisfy (416).
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// A job that runs one at a time is running (409 `busy`).
    #[error("{0}")]
    Busy(String),
    /// A peer this request needed failed (502 `peer_failed`): the message is about the
    /// peer, nothing of this server's internals, and is shown.
    #[error("{0}")]
    PeerFailed(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The answer's code; its status is the code's.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::UriTooLong(_) => ErrorCode::UriTooLong,
            ApiError::Stale(..) => ErrorCode::Stale,
            ApiError::PreconditionFailed(..) => ErrorCode::PreconditionFailed,
            ApiError::PreconditionRequired(_) => ErrorCode::PreconditionRequired,
            ApiError::UploadOffset(..) => ErrorCode::UploadOffset,
            ApiError::UploadInProgress(_) => ErrorCode::UploadInProgress,
            ApiError::HashMismatch(_) => ErrorCode::HashMismatch,
            ApiError::RangeNotSatisfiable(_) => ErrorCode::RangeNotSatisfiable,
            ApiError::CursorExpired(_) => ErrorCode::CursorExpired,
            ApiError::Busy(_) => ErrorCode::Busy,
            ApiError::PeerFailed(_) => ErrorCode::PeerFailed,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
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
            StoreError::Expired(m) => ApiError::CursorExpired(m),
            e @ StoreError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            e @ StoreError::Internal(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A 5xx is logged, and its message hidden, with the request id by `crate::guard`.
        let code = self.code();
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let current = match &self {
            ApiError::Stale(_, c) | ApiError::PreconditionFailed(_, c) => c.as_deref().cloned(),
            _ => None,
        };
        let offset = match &self {
            ApiError::UploadOffset(_, o) => Some(*o),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail::new(code, bounded(self.to_string())), current, offset };
        let mut resp = (status, Json(body)).into_response();
        if let Some(o) = offset {
            resp.headers_mut().insert("upload-offset", o.into());
        }
        if code == ErrorCode::PeerFailed {
            resp.extensions_mut().insert(crate::guard::Deliberate);
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

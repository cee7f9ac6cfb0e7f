//! The error body every refusal carries, and its stable codes.

use serde::{Deserialize, Serialize};

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`; a refused write of
/// one row (409 `stale`, 412 `precondition_failed`) also carries the row's `current` version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<serde_json::Value>,
    /// A resumable upload sent from the wrong offset (409 `upload_offset`): where to resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl ErrorBody {
    /// A body with only the error's code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail::new(code, message), current: None, offset: None }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// One of [`ErrorCode`]'s names. A string, not the enum, so that a client reads the
    /// codes of a newer server too; [`ErrorDetail::code`] reads it as an [`ErrorCode`].
    pub code: String,
    pub message: String,
}

impl ErrorDetail {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorDetail {
        ErrorDetail { code: code.as_str().to_owned(), message: message.into() }
    }

    /// The code, when it is one this version knows.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }
}

/// The stable, machine-readable code of an error answer. Each code has one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: a malformed request, or data that breaks a rule.
    BadRequest,
    /// 401: a missing or bad token.
    Unauthorized,
    /// 403: a write to another user's row, an admin endpoint with a non-admin token, …
    Forbidden,
    /// 404: no such endpoint, table, row or conflict.
    NotFound,
    /// 405: a method the path does not take.
    MethodNotAllowed,
    /// 409: resolving a conflict that is already resolved.
    Conflict,
    /// 409: a write made on an older version of a row; the body's `current` is the row now.
    Stale,
    /// 409: an upload sent from another offset than the server holds; the body's `offset`
    /// says where to resume.
    UploadOffset,
    /// 409: another request is uploading the same file now.
    UploadInProgress,
    /// 409: a job that runs one at a time (a full sync) is running; the message names it.
    Busy,
    /// 410: a cursor older than the server's compaction horizon: deletions it has not seen
    /// are gone; the client starts over with a full re-sync.
    CursorExpired,
    /// 412: `If-Match`/`If-None-Match` did not hold; the body's `current` is the row now.
    PreconditionFailed,
    /// 413: a body over the server's limit.
    PayloadTooLarge,
    /// 414: a URI over the server's limit.
    UriTooLong,
    /// 415: a body of the wrong media type, or an unknown `Content-Encoding`.
    UnsupportedMediaType,
    /// 416: a `Range` the file cannot satisfy.
    RangeNotSatisfiable,
    /// 422: an upload whose bytes do not hash to the file's name.
    HashMismatch,
    /// 422: a request the framework refused as unprocessable.
    Unprocessable,
    /// 428: a write that needs a version precondition.
    PreconditionRequired,
    /// 431: more or larger headers than the server reads.
    HeadersTooLarge,
    /// 500: a bug; the message names only the request id.
    Internal,
    /// 502: a peer server this request needed failed or could not be reached; the message
    /// says which and why.
    PeerFailed,
    /// 503: the store cannot serve now (`Retry-After`).
    Unavailable,
    /// 505: an HTTP version other than 1.x.
    HttpVersionNotSupported,
}

impl ErrorCode {
    /// Every code, in the order of their statuses.
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::Stale,
        ErrorCode::UploadOffset,
        ErrorCode::UploadInProgress,
        ErrorCode::Busy,
        ErrorCode::CursorExpired,
        ErrorCode::PreconditionFailed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UriTooLong,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RangeNotSatisfiable,
        ErrorCode::HashMismatch,
        ErrorCode::Unprocessable,
        ErrorCode::PreconditionRequired,
        ErrorCode::HeadersTooLarge,
        ErrorCode::Internal,
        ErrorCode::PeerFailed,
        ErrorCode::Unavailable,
        ErrorCode::HttpVersionNotSupported,
    ];

    /// The code as it travels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Stale => "stale",
            ErrorCode::UploadOffset => "upload_offset",
            ErrorCode::UploadInProgress => "upload_in_progress",
            ErrorCode::Busy => "busy",
            ErrorCode::CursorExpired => "cursor_expired",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::HashMismatch => "hash_mismatch",
            ErrorCode::Unprocessable => "unprocessable",
            ErrorCode::PreconditionRequired => "precondition_required",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::Internal => "internal",
            ErrorCode::PeerFailed => "peer_failed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::HttpVersionNotSupported => "http_version_not_supported",
        }
    }

    /// The HTTP status an answer with this code has.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict
            | ErrorCode::Stale
            | ErrorCode::UploadOffset
            | ErrorCode::UploadInProgress
            | ErrorCode::Busy => 409,
            ErrorCode::CursorExpired => 410,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UriTooLong => 414,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RangeNotSatisfiable => 416,
            ErrorCode::HashMismatch | ErrorCode::Unprocessable => 422,
            ErrorCode::PreconditionRequired => 428,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::Internal => 500,
            ErrorCode::PeerFailed => 502,
            ErrorCode::Unavailable => 503,
            ErrorCode::HttpVersionNotSupported => 505,
        }
    }

    /// The code named `s`, if this version knows it.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// The code of an error answer that no handler chose a code for (a framework's
    /// rejection), by its status.
    pub fn of_status(status: u16) -> ErrorCode {
        match status {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            413 => ErrorCode::PayloadTooLarge,
            414 => ErrorCode::UriTooLong,
            415 => ErrorCode::UnsupportedMediaType,
            422 => ErrorCode::Unprocessable,
            431 => ErrorCode::HeadersTooLarge,
            505 => ErrorCode::HttpVersionNotSupported,
            500..=599 => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_travels_as_its_name_and_reads_back() {
        for &code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(code.as_str().into()).unwrap(), code);
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        let body = serde_json::to_string(&ErrorBody::new(ErrorCode::Stale, "m")).unwrap();
        assert_eq!(body, r#"{"error":{"code":"stale","message":"m"}}"#);
    }
}

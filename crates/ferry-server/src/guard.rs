//! What every request passes through, whatever its route: a request id, a body announced
//! over the limit refused before it arrives, and every error answer made JSON with no
//! internal detail.
//!
//! - Every answer carries `x-request-id`; the server's log names the same id.
//! - A request whose `Content-Length` is over `max_body_bytes` gets 413 at once, before its
//!   body is read (and so before a client waiting on `Expect: 100-continue` sends it); the
//!   guard runs outside request decompression, so this holds for compressed bodies too. File
//!   uploads have their own limit, `max_upload_bytes`, checked the same way here (and against
//!   `Upload-Length` by their handler, also before the body).
//! - An error answer that is not JSON (made by axum or tower for a rejected request) becomes
//!   Ferry's `{"error": {"code", "message"}}`.
//! - A 5xx answer never shows its message, which may hold a store's internals: the message
//!   is logged with the request id, and the body says only that id.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_protocol::{ErrorBody, ErrorCode};

use crate::ApiError;

/// The longest URI served (414 above it, as JSON).
pub const MAX_URI_BYTES: usize = 16 * 1024;

/// The largest error body read back to be rewritten; larger ones are replaced whole.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The request body limits: `max_body_bytes`, and `max_upload_bytes` for file uploads.
#[derive(Clone, Copy)]
pub struct Limits {
    pub body: usize,
    pub upload: u64,
}

pub async fn guard(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let id = request_id();
    let early = early_refusal(&req, limits);
    let unread_body = early.is_some();
    let mut resp = match early {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    };
    if unread_body {
        // The body is never read, so this connection cannot carry another request: saying so
        // keeps a client from sending its next one into a connection that is closing.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let deliberate = resp.extensions().get::<Deliberate>().is_some();
    if (resp.status().is_client_error() || resp.status().is_server_error()) && !deliberate {
        resp = json_error(resp, &id).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Marks an error status that is an answer, not a failure (`GET /health/sync`'s 503, whose
/// JSON body names the unhealthy links and nothing internal): its body passes as made.
#[derive(Clone, Copy)]
pub(crate) struct Deliberate;

/// A refusal the request's head alone decides.
fn early_refusal(req: &Request, limits: Limits) -> Option<ApiError> {
    let uri = req.uri().to_string();
    if uri.len() > MAX_URI_BYTES {
        return Some(ApiError::UriTooLong(format!(
            "the request's URI is {} bytes, over the limit of {MAX_URI_BYTES}; send long data in a request body",
            uri.len()
        )));
    }
    let upload = req.uri().path().starts_with("/v1/files/") && req.method() == axum::http::Method::PUT;
    let length = req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok()?;
    if upload {
        return (length > limits.upload).then(|| {
            ApiError::PayloadTooLarge(format!(
                "upload body of {length} bytes is over this server's upload limit of {} bytes; raise max_upload_bytes in [files] of ferry.toml to accept it",
                limits.upload
            ))
        });
    }
    (length > limits.body as u64).then(|| {
        ApiError::PayloadTooLarge(format!(
            "request body of {length} bytes is over the server's limit of {} bytes (max_body_bytes); send less per request (smaller push batches)",
            limits.body
        ))
    })
}

/// `resp` (an error answer) as Ferry's JSON error body, without internals when it is a 5xx.
async fn json_error(resp: Response, id: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    let is_json =
        parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json && !parts.status.is_server_error() {
        return Response::from_parts(parts, body);
    }
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY).await.unwrap_or_default();
    let mut out: ErrorBody = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(b) if is_json => b,
        _ => {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            let message = if text.is_empty() {
                parts.status.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                ferry_core::shown(text).into_owned()
            };
            ErrorBody {
                error: ferry_protocol::ErrorDetail::new(ErrorCode::of_status(parts.status.as_u16()), message),
                current: None,
                offset: None,
            }
        }
    };
    if parts.status.is_server_error() {
        tracing::error!(request_id = id, status = parts.status.as_u16(), error = %out.error.message, "request failed");
        out.error.message = format!("internal error; the server logged it as request {id}");
        out.current = None;
    }
    let body = serde_json::to_vec(&out).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    Response::from_parts(parts, Body::from(body))
}

/// A new request id: 16 random hex digits.
pub(crate) fn request_id() -> String {
    crate::random_hex(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn a_5xx_body_names_the_request_id_and_never_the_internal_message() {
        let resp = ApiError::Internal("internal store error: disk I/O error at /var/secret".into()).into_response();
        let resp = json_error(resp, "0123456789abcdef").await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 10_000).await.unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error.code, "internal");
        assert_eq!(body.error.message, "internal error; the server logged it as request 0123456789abcdef");
    }

    #[tokio::test]
    async fn a_plain_text_rejection_becomes_a_json_error() {
        let resp = (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Expected request with `Content-Type: application/json`")
            .into_response();
        let resp = json_error(resp, "x").await;
        let body = axum::body::to_bytes(resp.into_body(), 10_000).await.unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error.code, "unsupported_media_type");
        assert!(body.error.message.contains("Content-Type"), "{}", body.error.message);
    }
}

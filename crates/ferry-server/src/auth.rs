//! Bearer tokens: `Authorization: Bearer fry_…`. Missing or unknown tokens get 401.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ferry_store::{Principal, Store};

use crate::{ApiError, AppState};

/// The authenticated device of a request.
pub struct Authed(pub Principal);

impl<S: Store> FromRequestParts<Arc<AppState<S>>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState<S>>) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        match state.store.authenticate(token).await? {
            Some(mut p) => {
                if let Some(link) = parts.headers.get(ferry_protocol::PEER_HEADER) {
                    p.peer = true;
                    crate::peer::admit(&p, link.to_str().unwrap_or(""))?;
                    state.peers.heard(&state.store, &p).await;
                }
                if state.seen.due(&p.device_id)
                    && let Err(e) = state.store.device_seen(&p.device_id).await
                {
                    // Bookkeeping only: the request goes on.
                    tracing::warn!("cannot record that device {} was seen: {e}", p.device_id);
                }
                Ok(Authed(p))
            }
            None => Err(ApiError::Unauthorized(
                "bad token: unknown or revoked; create a new one with `ferry token create`".into(),
            )),
        }
    }
}

/// When this process last recorded each device as seen: the store hears of a device at most
/// once a minute.
#[derive(Default)]
pub struct Seen(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

impl Seen {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// Whether `device` is due to be recorded (and from now on, not for a minute).
    fn due(&self, device: &str) -> bool {
        let now = std::time::Instant::now();
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(device) {
            Some(at) if now.duration_since(*at) < Self::EVERY => false,
            _ => {
                seen.insert(device.to_owned(), now);
                true
            }
        }
    }
}

/// The bearer token of a request.
///
/// # Errors
/// 401 when the header is missing or is not `Bearer <token>`.
pub fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "missing bearer token; send `Authorization: Bearer <token>` (create one with `ferry token create`)".into(),
        ));
    };
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("malformed Authorization header; expected `Bearer <token>`".into()))
}

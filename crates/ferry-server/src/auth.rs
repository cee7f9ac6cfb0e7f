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
            Some(p) => Ok(Authed(p)),
            None => Err(ApiError::Unauthorized(
                "bad token: unknown or revoked; create a new one with `ferry token create`".into(),
            )),
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

//! `/v1/admin/…`: operator endpoints, for tokens created with `ferry token create --admin`.
//! Other tokens get 403.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Query, State};
use ferry_protocol::{ConflictRecord, DevicesResponse, ResolveRequest, RevokeResponse};
use ferry_store::{ConflictFilter, Store};

use crate::auth::Authed;
use crate::{ApiError, AppState};

pub(crate) fn require_admin(who: &Authed) -> Result<(), ApiError> {
    if who.0.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "device '{}' has no admin rights; this endpoint needs a token from `ferry token create --admin`",
            who.0.device_name
        )))
    }
}

/// `GET /v1/admin/conflicts?status=open|resolved|all` (default all), newest first.
pub async fn list<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<ConflictRecord>>, ApiError> {
    require_admin(&who)?;
    if let Some(unknown) = q.keys().find(|k| k.as_str() != "status") {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter '{}'; use status=open|resolved|all",
            ferry_core::shown(unknown)
        )));
    }
    let filter = match q.get("status").map(String::as_str) {
        None | Some("all") => ConflictFilter::All,
        Some("open") => ConflictFilter::Open,
        Some("resolved") => ConflictFilter::Resolved,
        Some(other) => {
            let other = ferry_core::shown(other);
            return Err(ApiError::BadRequest(format!("status '{other}' is not one of open, resolved, all")));
        }
    };
    Ok(Json(state.store.conflicts(filter).await?))
}

/// `GET /v1/admin/conflicts/{id}`.
pub async fn show<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ConflictRecord>, ApiError> {
    require_admin(&who)?;
    let id = parse_id(id)?;
    match state.store.conflict(id).await? {
        Some(c) => Ok(Json(c)),
        None => Err(ApiError::NotFound(format!("no conflict with id {id}"))),
    }
}

/// `POST /v1/admin/conflicts/{id}/resolve` with `{"use": "stored" | "incoming"}`.
pub async fn resolve<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ConflictRecord>, ApiError> {
    require_admin(&who)?;
    let id = parse_id(id)?;
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let body: ResolveRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "malformed resolve body: {e}; send {{\"use\": \"stored\"}} or {{\"use\": \"incoming\"}}"
        ))
    })?;
    Ok(Json(state.store.resolve_conflict(id, body.keep).await?))
}

fn parse_id(id: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(format!("bad conflict id in the path: {e}")))?;
    conflict_id(&id)
}

/// A conflict's id as a path names it (the API's and the dashboard's).
pub(crate) fn conflict_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::BadRequest(format!("conflict id '{}' is not a number", ferry_core::shown(id))))
}

/// Revokes device `id`: its tokens stop working, and this process's streams of it close.
pub(crate) async fn revoke<S: Store>(state: &AppState<S>, id: &str) -> Result<Vec<String>, ApiError> {
    let revoked = state.store.revoke_devices(None, id).await?;
    state.revocations.announce(revoked.clone());
    Ok(revoked)
}

/// `GET /v1/admin/devices?user=NAME_OR_ID`: every device (of that user), by user, oldest first.
pub async fn devices<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<DevicesResponse>, ApiError> {
    require_admin(&who)?;
    if let Some(unknown) = q.keys().find(|k| k.as_str() != "user") {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter '{}'; use user=NAME (or the user's id)",
            ferry_core::shown(unknown)
        )));
    }
    Ok(Json(DevicesResponse { devices: state.store.devices(q.get("user").map(String::as_str)).await? }))
}

/// `POST /v1/admin/devices/{id}/revoke`: the device's tokens stop working, its streams close.
pub async fn revoke_device<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<RevokeResponse>, ApiError> {
    require_admin(&who)?;
    let Path(id) = id.map_err(|e| ApiError::BadRequest(format!("bad device id: {e}")))?;
    Ok(Json(RevokeResponse { revoked: revoke(&state, &id).await? }))
}

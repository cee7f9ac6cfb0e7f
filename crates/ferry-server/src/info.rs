//! Small read-only endpoints: liveness, the schema, who a token belongs to.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use ferry_protocol::{SchemaResponse, WhoAmI};
use ferry_store::Store;

use crate::auth::Authed;
use crate::{ApiError, AppState};

pub async fn live() -> &'static str {
    "ok\n"
}

pub async fn schema<S: Store>(State(state): State<Arc<AppState<S>>>, _who: Authed) -> Json<SchemaResponse> {
    Json(SchemaResponse::from_schema(state.store.device_schema()))
}

pub async fn me<S: Store>(State(state): State<Arc<AppState<S>>>, Authed(p): Authed) -> Json<WhoAmI> {
    Json(WhoAmI {
        store_id: state.store.id().to_owned(),
        user_id: p.user_id,
        user_name: p.user_name,
        device_id: p.device_id,
        device_name: p.device_name,
        role: p.role,
        server_role: state.store.role().map(str::to_owned),
    })
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no endpoint at '{}'; see docs/protocol.md", uri.path()))
}

pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on '{}'; see docs/protocol.md", uri.path()))
}

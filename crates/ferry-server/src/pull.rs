//! `GET /v1/pull?cursor=N&limit=M`: the rows a device may read that changed after `cursor`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use ferry_protocol::{DEFAULT_PAGE_ROWS, MAX_PAGE_ROWS, PageOut, RowOut};
use ferry_store::Store;

use crate::auth::Authed;
use crate::{ApiError, AppState};

pub async fn pull<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    if let Some(unknown) = q.keys().find(|k| !matches!(k.as_str(), "cursor" | "limit" | "tables" | "subscriptions")) {
        return Err(ApiError::BadRequest(format!(
            "unknown pull parameter '{unknown}'; use cursor, limit, tables and subscriptions"
        )));
    }
    // `subscriptions=["formations WHERE group_id = '…'", …]` (JSON): only those rows of those
    // tables (docs/sharing.md, "Subscriptions").
    let subscriptions: Vec<String> = match q.get("subscriptions") {
        None => Vec::new(),
        Some(s) => serde_json::from_str(s).map_err(|e| {
            ApiError::BadRequest(format!(
                "subscriptions must be a JSON array of \"TABLE WHERE PREDICATE\" strings ({e})"
            ))
        })?,
    };
    // `tables=a,b`: only rows of these tables (a cursor belongs to its selection).
    let tables: Option<Vec<String>> =
        q.get("tables").map(|t| t.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect());
    if tables.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::BadRequest(
            "tables is empty; name the tables to pull (tables=a,b) or leave it out".into(),
        ));
    }
    let cursor = q.get("cursor").map_or("", String::as_str);
    if cursor.len() > 4096 {
        return Err(ApiError::BadRequest("cursor is too long; start over with cursor=0".into()));
    }
    let limit = parse_limit(q.get("limit"))?;
    let started = std::time::Instant::now();
    let page =
        state.store.pull_subscribed(&who, cursor, limit, tables.as_deref(), &subscriptions).await.inspect_err(|e| {
            if matches!(e, ferry_store::StoreError::Expired(_)) {
                tracing::error!(
                    device = %who.device_id,
                    user = %who.user_name,
                    peer = who.peer,
                    "a cursor older than the compaction horizon: the device or peer link catches up by difference"
                );
            }
        })?;
    let schema = state.store.schema();
    let rows = || {
        page.rows.iter().filter_map(|r| {
            let table = schema.table(&r.table)?;
            Some(RowOut { table, key: &r.key, state: &r.state, base: None, seen: None })
        })
    };
    let body = serde_json::to_vec(&PageOut { rows, cursor: &page.cursor, more: page.more, removed: &page.removed })
        .map_err(|e| ApiError::Internal(format!("encoding a pull page: {e}")))?;
    metrics::histogram!("ferry_pull_duration_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("ferry_pull_rows_total").increment(page.rows.len() as u64);
    metrics::counter!("ferry_pull_bytes_total").increment(body.len() as u64);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A page size: absent for the default, else 1 to [`MAX_PAGE_ROWS`].
pub(crate) fn parse_limit(limit: Option<&String>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE_ROWS),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_ROWS).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!("limit '{l}' must be a number from 1 to {MAX_PAGE_ROWS}"))),
        },
    }
}

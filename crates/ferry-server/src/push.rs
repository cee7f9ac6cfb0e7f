//! `POST /v1/push`: a batch of row states from a device.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use ferry_protocol::{MAX_PUSH_ROWS, PushResponse, RejectedRow};
use ferry_store::{IncomingRow, Store};

use crate::auth::Authed;
use crate::{ApiError, AppState};

pub async fn push<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PushResponse>, ApiError> {
    let body = body.map_err(|e| body_error(&state, &e))?;
    let schema = state.store.schema();
    let req = ferry_protocol::decode_push(schema, &body).map_err(|e| match e {
        ferry_protocol::PushError::Malformed(e) => ApiError::BadRequest(format!("malformed push body: {e}")),
        ferry_protocol::PushError::Refused(message) => ApiError::BadRequest(message),
    })?;
    if req.batch_id.is_empty() || req.batch_id.len() > 100 {
        return Err(ApiError::BadRequest(format!(
            "batch_id '{}' must be 1 to 100 characters",
            req.batch_id.chars().take(120).collect::<String>()
        )));
    }
    if req.rows.len() > MAX_PUSH_ROWS {
        return Err(ApiError::PayloadTooLarge(format!(
            "push of {} rows is over the limit of {MAX_PUSH_ROWS}; send smaller batches",
            req.rows.len()
        )));
    }
    let rows: Vec<IncomingRow> = req
        .rows
        .into_iter()
        .map(|r| IncomingRow { table: r.table, key: r.key, state: r.state, seen: Some(r.seen), if_version: None })
        .collect();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    for r in &rows {
        let seen = r.seen.as_ref().map_or(ferry_core::Hlc::ZERO, |s| s.cols.values().copied().fold(s.exists, Ord::max));
        for (what, clock) in [("clock", r.state.max_clock()), ("seen clock", seen)] {
            let ahead = u128::from(clock.wall_ms()).saturating_sub(now_ms);
            if ahead > u128::from(ferry_core::hlc::MAX_DRIFT_MS) {
                return Err(ApiError::BadRequest(format!(
                    "{} '{}': its {what} {clock} is {ahead} ms ahead of the server's, more than the {} ms allowed; fix the device's system time",
                    r.table,
                    ferry_core::shown(&r.key),
                    ferry_core::hlc::MAX_DRIFT_MS
                )));
            }
        }
    }
    let started = std::time::Instant::now();
    let outcome = state.store.push(&who, &req.batch_id, req.cursor.as_deref(), rows).await?;
    metrics::histogram!("ferry_push_duration_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("ferry_push_bytes_total").increment(body.len() as u64);
    metrics::counter!("ferry_push_rows_total").increment(outcome.received as u64);
    metrics::counter!("ferry_push_changed_rows_total").increment(outcome.changed as u64);
    for r in &outcome.refused {
        metrics::counter!("ferry_refused_changes_total", "table" => r.table.clone(), "reason" => "stale").increment(1);
    }
    let rejected = outcome
        .refused
        .iter()
        .filter_map(|r| {
            let table = schema.table(&r.table)?;
            Some(RejectedRow {
                table: r.table.clone(),
                key: r.key.clone(),
                status: 409,
                code: "stale".to_owned(),
                message: format!(
                    "{} '{}' changed on the server since this device's version (table conflict = \"reject-stale\"); the change was not applied: keep it and push again on top of `current`, or take `current`",
                    r.table, r.key
                ),
                current: ferry_protocol::encode_row(table, &r.key, &r.current),
            })
        })
        .collect();
    Ok(Json(PushResponse {
        batch_id: req.batch_id,
        received: outcome.received,
        changed: outcome.changed,
        replayed: outcome.replayed,
        cursor: outcome.cursor,
        rejected,
    }))
}

/// A request body that could not be read: over the limit (413, naming it) or undecodable.
pub(crate) fn body_error<S>(state: &AppState<S>, e: &BytesRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!(
            "request body is over the server's limit of {} bytes (max_body_bytes); send less per request (smaller push batches)",
            state.max_body_bytes
        ))
    } else {
        ApiError::BadRequest(format!("cannot read the request body: {e}"))
    }
}

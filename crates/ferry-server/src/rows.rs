//! The REST data API, for clients in other languages that do not run a replica: one row at
//! a time, with its version.
//!
//! - `GET /v1/rows/{table}/{key}`: the row and its version (`ETag`).
//! - `PUT /v1/rows/{table}/{key}`: writes the given columns (creating the row if needed).
//!   `If-Match: "<version>"` makes it conditional (412 on another version), as does a
//!   `version` field in the body (409 `stale`, the journaling seed's form); `If-None-Match: *`
//!   creates only. Tables with `conflict = "reject-stale"` require one of these (428).
//! - `DELETE /v1/rows/{table}/{key}`: deletes, with the same preconditions.
//! - `GET /v1/changes?since=CURSOR&limit=N`: every readable change since a cursor, deletes
//!   as tombstones, in bounded pages.
//!
//! A write goes through the store's push with the version it read as precondition, so a
//! write landing in between is never overwritten unseen: without a precondition from the
//! client the request is read and applied again; with one, it fails.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_core::schema::{ConflictStrategy, Table};
use ferry_core::{Clock, RowState, SiteId, Value};
use ferry_protocol::{ChangesResponse, PutRowRequest, RowDoc};
use ferry_store::{IncomingRow, Principal, Refusal, Store};

use crate::auth::Authed;
use crate::{ApiError, AppState};

fn doc_json(doc: &RowDoc) -> Box<serde_json::Value> {
    Box::new(serde_json::to_value(doc).expect("rows serialize"))
}

fn table_of<'s, S: Store>(state: &'s AppState<S>, name: &str) -> Result<&'s Table, ApiError> {
    let schema = state.store.schema();
    schema.table(name).ok_or_else(|| {
        if state.store.device_schema().table(name).is_some() {
            return ApiError::NotFound(format!(
                "no table '{name}' on the server: it is local_only, kept on devices and never synced"
            ));
        }
        ApiError::NotFound(format!("no table '{name}'; the schema has: {}", schema.table_names().join(", ")))
    })
}

fn with_etag(status: StatusCode, doc: &RowDoc) -> Response {
    let mut resp = (status, Json(doc)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", doc.version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

pub async fn get_row<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (table, key) = row_path(path)?;
    let t = table_of(&state, &table)?;
    match state.store.get_row(&who, &t.name, &key).await? {
        Some(row) if row.is_alive() => Ok(with_etag(StatusCode::OK, &RowDoc::new(t, &key, &row))),
        Some(_) => Err(ApiError::NotFound(format!("{table} '{key}' was deleted; GET /v1/changes shows the tombstone"))),
        None => Err(ApiError::NotFound(format!("no row {table} '{key}'"))),
    }
}

fn row_path(path: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), ApiError> {
    let Path(p) = path.map_err(|e| ApiError::BadRequest(format!("bad row path (/v1/rows/TABLE/KEY): {e}")))?;
    Ok(p)
}

/// What a write wants: the client's preconditions.
struct Preconditions {
    /// `If-Match`: the version the row must have (412 otherwise).
    if_match: Option<String>,
    /// `version` in the body: the same, answered with 409 `stale`.
    body_version: Option<String>,
    /// `If-None-Match: *`: the row must not exist (alive).
    create_only: bool,
}

impl Preconditions {
    fn read(headers: &HeaderMap, body_version: Option<String>) -> Result<Preconditions, ApiError> {
        let text = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
            headers
                .get(&name)
                .map(|v| {
                    v.to_str().map(|s| s.trim().to_owned()).map_err(|_| {
                        ApiError::BadRequest(format!("header {name} is not text; send a quoted version like \"ab12…\""))
                    })
                })
                .transpose()
        };
        let if_match = text(header::IF_MATCH)?.map(|v| v.trim_start_matches("W/").trim_matches('"').to_owned());
        let create_only = match text(header::IF_NONE_MATCH)?.as_deref() {
            None => false,
            Some("*") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "If-None-Match '{other}' is not supported; use If-None-Match: * to create only"
                )));
            }
        };
        Ok(Preconditions { if_match, body_version, create_only })
    }

    fn any(&self) -> bool {
        self.if_match.is_some() || self.body_version.is_some() || self.create_only
    }

    /// Checks the preconditions against the current row.
    fn check(&self, t: &Table, key: &str, current: Option<&RowState>) -> Result<(), ApiError> {
        let version = current.map(RowState::version);
        let doc = || current.map(|c| doc_json(&RowDoc::new(t, key, c)));
        let here = format!("{} '{key}'", t.name);
        // `If-Match: *` holds for any existing row.
        if let Some(want) = &self.if_match
            && !(if want == "*" {
                current.is_some_and(RowState::is_alive)
            } else {
                version.as_deref() == Some(want.as_str())
            })
        {
            return Err(ApiError::PreconditionFailed(
                format!(
                    "{here} is at version {}, not {want} (If-Match); read it again and retry on top of it",
                    version.as_deref().unwrap_or("none (no such row)")
                ),
                doc(),
            ));
        }
        if let Some(want) = &self.body_version
            && version.as_deref() != Some(want.as_str())
        {
            return Err(ApiError::Stale(
                format!(
                    "{here} is at version {}, not {want}; the change was made on an older version: read it again and retry on top of it",
                    version.as_deref().unwrap_or("none (no such row)")
                ),
                doc(),
            ));
        }
        if self.create_only && current.is_some_and(RowState::is_alive) {
            return Err(ApiError::PreconditionFailed(
                format!("{here} already exists (If-None-Match: *); use If-Match with its version to change it"),
                doc(),
            ));
        }
        Ok(())
    }
}

/// The site id of REST writes by a device: fixed per device.
fn device_site(who: &Principal) -> SiteId {
    SiteId::named(&format!("rest/{}", who.device_id))
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The columns of a PUT body, typed and checked against the table.
fn decode_values(
    t: &Table,
    key: &str,
    values: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<(String, Value)>, ApiError> {
    let here = format!("{} '{key}'", t.name);
    let mut out = Vec::new();
    for (name, json) in values {
        let Some(col) = t.column(name) else {
            return Err(ApiError::BadRequest(format!(
                "{here}: unknown column '{name}'; the table has: {}",
                t.column_names().join(", ")
            )));
        };
        if col.name == t.pk_column().name {
            if json.as_str() != Some(key) {
                return Err(ApiError::BadRequest(format!(
                    "{here}: the key column '{name}' is {json}, not the key in the path; leave it out"
                )));
            }
            continue;
        }
        let v = ferry_protocol::value_from_json(col.ty, json)
            .map_err(|rule| ApiError::BadRequest(format!("{here}: column '{name}': {rule}")))?;
        t.check_value(col, &v).map_err(|e| ApiError::BadRequest(format!("{here}: {e}")))?;
        out.push((name.clone(), v));
    }
    Ok(out)
}

pub async fn put_row<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (table, key) = row_path(path)?;
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let body: PutRowRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("malformed row body: {e}; send {{\"values\": {{\"column\": value, …}}}}"))
    })?;
    let pre = Preconditions::read(&headers, body.version.clone())?;
    let t = table_of(&state, &table)?;
    t.check_value(t.pk_column(), &Value::Text(key.clone()))
        .map_err(|e| ApiError::BadRequest(format!("{table} '{key}': key {}", e.rule)))?;
    let values = decode_values(t, &key, &body.values)?;
    write(&state, &who, t, &key, &pre, Change::Put(values)).await
}

pub async fn delete_row<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (table, key) = row_path(path)?;
    let pre = Preconditions::read(&headers, None)?;
    let t = table_of(&state, &table)?;
    write(&state, &who, t, &key, &pre, Change::Delete).await
}

enum Change {
    Put(Vec<(String, Value)>),
    Delete,
}

/// Applies one REST write through the store's push, conditional on the version read.
async fn write<S: Store>(
    state: &AppState<S>,
    who: &Principal,
    t: &Table,
    key: &str,
    pre: &Preconditions,
    change: Change,
) -> Result<Response, ApiError> {
    if t.options.conflict == ConflictStrategy::RejectStale && !pre.any() {
        let create = if matches!(change, Change::Put(_)) { ", or If-None-Match: * to create" } else { "" };
        return Err(ApiError::PreconditionRequired(format!(
            "table '{}' uses conflict = \"reject-stale\": send If-Match with the row's version (from GET){create}",
            t.name
        )));
    }
    // A write that lands between our read and our push makes the push refuse ours: read again.
    for _ in 0..5 {
        let current = state.store.get_row(who, &t.name, key).await?;
        pre.check(t, key, current.as_ref())?;
        let before = current.clone().unwrap_or_default();
        let mut next = before.clone();
        let at = Clock::new(device_site(who), before.max_clock()).tick(wall_ms());
        let created = !before.is_alive();
        match &change {
            // A new row gets every column, as an SQL INSERT would: the given values, else the
            // column's default, else NULL.
            Change::Put(values) if created => {
                let given: HashMap<&str, &Value> = values.iter().map(|(c, v)| (c.as_str(), v)).collect();
                let full = t.data_columns().map(|c| {
                    let v = given.get(c.name.as_str()).map(|v| (*v).clone());
                    (c.name.clone(), v.or_else(|| c.default.clone()).unwrap_or(Value::Null))
                });
                next.insert(full.collect::<Vec<_>>(), at);
            }
            Change::Put(values) => next.update(values.clone(), at),
            Change::Delete if created => {
                return Err(ApiError::NotFound(format!("no row {} '{key}' to delete", t.name)));
            }
            Change::Delete => next.delete(at),
        }
        if let Some(missing) = t
            .data_columns()
            .find(|c| c.not_null && next.is_alive() && next.cols.get(&c.name).is_none_or(|s| s.value == Value::Null))
        {
            return Err(ApiError::BadRequest(format!(
                "{} '{key}': column '{}' is NOT NULL; give it a value",
                t.name, missing.name
            )));
        }
        let row = IncomingRow {
            seen: Some(before.clocks()),
            if_version: Some(before.version()),
            ..IncomingRow::new(&t.name, key, next)
        };
        let batch = format!("rest-{}", crate::random_hex(16));
        let outcome = state.store.push(who, &batch, None, vec![row]).await?;
        match outcome.refused.first() {
            None => {
                let stored = state.store.get_row(who, &t.name, key).await?.unwrap_or_default();
                let doc = RowDoc::new(t, key, &stored);
                return Ok(match change {
                    Change::Delete => {
                        let mut resp = StatusCode::NO_CONTENT.into_response();
                        if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", doc.version)) {
                            resp.headers_mut().insert(header::ETAG, v);
                        }
                        resp
                    }
                    Change::Put(_) => with_etag(if created { StatusCode::CREATED } else { StatusCode::OK }, &doc),
                });
            }
            Some(r) if r.reason == Refusal::Stale => {
                return Err(ApiError::Stale(
                    format!(
                        "{} '{key}' changed on the server since the version this write was based on (reject-stale); read it again",
                        t.name
                    ),
                    Some(doc_json(&RowDoc::new(t, key, &r.current))),
                ));
            }
            // Another write landed in between: with a client precondition that is its
            // answer (checked on the next read); without one, apply again on top of it.
            Some(_) => continue,
        }
    }
    Err(ApiError::Unavailable(format!("{} '{key}' keeps changing under this write; retry", t.name)))
}

pub async fn changes<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ChangesResponse>, ApiError> {
    if let Some(unknown) = q.keys().find(|k| !matches!(k.as_str(), "since" | "limit")) {
        return Err(ApiError::BadRequest(format!("unknown parameter '{unknown}'; use since and limit")));
    }
    let since = q.get("since").map_or("", String::as_str);
    if since.len() > 4096 {
        return Err(ApiError::BadRequest("since is too long; start over with since=0".into()));
    }
    let limit = crate::pull::parse_limit(q.get("limit"))?;
    let page = state.store.pull(&who, since, limit).await?;
    let schema = state.store.schema();
    let changes =
        page.rows.iter().filter_map(|r| schema.table(&r.table).map(|t| RowDoc::new(t, &r.key, &r.state))).collect();
    let removed = page.removed.into_iter().map(|(table, key)| ferry_protocol::RemovedRow { table, key }).collect();
    Ok(Json(ChangesResponse { changes, cursor: page.cursor, more: page.more, removed }))
}

//! A device's first hydrate from a snapshot (docs/protocol.md, "A first hydrate from a
//! snapshot"): `POST /v1/snapshot` reads the rows the device may read as of one moment
//! (`Store::feed_snapshot`) into checksummed chunks on this server's disk, while the device
//! fetches them (`GET /v1/snapshot/{id}?after=N`, `GET /v1/snapshot/{id}/chunks/{n}`) and
//! applies each as it comes; a broken download resumes at the chunk it lacks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ferry_protocol::full_sync::CHUNK_SHA256_HEADER;
use ferry_protocol::{ChunkInfo, DeviceSnapshot, DeviceSnapshotRequest};
use ferry_store::{FeedRow, Store};

use crate::auth::Authed;
use crate::{ApiError, AppState};

/// Rows per chunk.
const CHUNK_ROWS: usize = 5000;
/// Snapshots being written at once; a device asking beyond it pulls page by page instead.
const RUNNING_AT_MOST: usize = 4;
/// How long a snapshot is kept after its device last asked for it.
const KEPT: Duration = Duration::from_secs(3600);
/// How long `GET /v1/snapshot/{id}?after=N` waits for chunk N to be written.
const WAIT: Duration = Duration::from_secs(10);

/// The devices' snapshots in this process, and where their chunks are kept.
pub struct Snapshots {
    spool: PathBuf,
    taken: std::sync::Mutex<HashMap<String, Arc<Taken>>>,
}

/// One device's snapshot.
struct Taken {
    device: String,
    dir: PathBuf,
    state: tokio::sync::watch::Sender<DeviceSnapshot>,
    asked: std::sync::Mutex<Instant>,
    task: tokio::task::AbortHandle,
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Snapshots {
    /// Snapshots kept under `spool`; what an earlier process left there is removed (no
    /// device can ask for it here any more).
    pub fn new(spool: PathBuf) -> Snapshots {
        let _ = std::fs::remove_dir_all(&spool);
        Snapshots { spool, taken: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Taken>>> {
        self.taken.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device's snapshot `id`; expired ones go first.
    fn get(&self, device: &str, id: &str) -> Result<Arc<Taken>, ApiError> {
        let mut taken = self.lock();
        taken.retain(|_, t| t.asked.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < KEPT);
        match taken.get(id) {
            Some(t) if t.device == device => {
                *t.asked.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                Ok(t.clone())
            }
            _ => Err(ApiError::NotFound(format!(
                "no snapshot '{}' of this device here (it expired, was ended, or another server process took it); ask for a new one with POST /v1/snapshot",
                ferry_core::shown(id)
            ))),
        }
    }
}

fn new_id() -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(format!("hs-{}", ferry_core::to_hex(&b)))
}

/// `POST /v1/snapshot`: starts writing a snapshot of what the device may read (202, and the
/// snapshot as it starts). A device's earlier snapshot is dropped.
pub async fn start<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<DeviceSnapshot>), ApiError> {
    if who.peer {
        return Err(ApiError::Forbidden(
            "a peer server moves a whole data set by full sync (POST /v1/admin/full-sync), not by a device's snapshot"
                .into(),
        ));
    }
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let req: DeviceSnapshotRequest = if body.is_empty() {
        DeviceSnapshotRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("malformed snapshot request: {e}; send {{\"tables\": [\"name\", …]}} or {{}}"))
        })?
    };
    let schema = state.store.schema();
    if let Some(tables) = &req.tables {
        if tables.is_empty() {
            return Err(ApiError::BadRequest("tables is empty; name the tables or leave it out".into()));
        }
        if let Some(unknown) = tables.iter().find(|t| schema.table(t).is_none()) {
            return Err(ApiError::NotFound(format!(
                "unknown table '{}'; the synced tables are: {}",
                ferry_core::shown(unknown),
                schema.table_names().join(", ")
            )));
        }
    }
    let snaps = &state.snapshots;
    let id = new_id()?;
    let dir = snaps.spool.join(&id);
    {
        let mut taken = snaps.lock();
        taken.retain(|_, t| {
            t.device != who.device_id && t.asked.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < KEPT
        });
        let running = taken.values().filter(|t| t.state.borrow().state == "running").count();
        if running >= RUNNING_AT_MOST {
            return Err(ApiError::Unavailable(format!(
                "{running} snapshots are being written now; pull page by page (GET /v1/pull?cursor=0) or ask again later"
            )));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::Internal(format!("creating the snapshot directory {}: {e}", dir.display())))?;
        let first = DeviceSnapshot { id: id.clone(), state: "running".into(), ..DeviceSnapshot::default() };
        let (tx, _) = tokio::sync::watch::channel(first);
        let task = tokio::spawn(write(state.clone(), who.clone(), req.tables, dir.clone(), tx.clone()));
        let t = Taken {
            device: who.device_id.clone(),
            dir,
            state: tx,
            asked: std::sync::Mutex::new(Instant::now()),
            task: task.abort_handle(),
        };
        taken.insert(id.clone(), Arc::new(t));
    }
    let now = snaps.get(&who.device_id, &id)?.state.borrow().clone();
    Ok((StatusCode::ACCEPTED, Json(now)))
}

/// Writes the snapshot's chunks as the store reads them, and its outcome.
async fn write<S: Store>(
    state: Arc<AppState<S>>,
    who: ferry_store::Principal,
    tables: Option<Vec<String>>,
    dir: PathBuf,
    out: tokio::sync::watch::Sender<DeviceSnapshot>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<FeedRow>>(2);
    let writing = {
        let (state, out) = (state.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            let schema = state.store.schema();
            while let Some(rows) = rx.blocking_recv() {
                if rows.is_empty() {
                    continue;
                }
                let mut names: Vec<&str> = rows.iter().map(|r| r.table.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                let table = names.join(",");
                let json = ferry_peer::full_sync::encode_chunk(schema, &rows, false)?;
                let n = out.borrow().written;
                let sha256 = ferry_peer::full_sync::sha256_hex(&json);
                ferry_peer::full_sync::write_chunk(&dir, n, &json)?;
                let chunk = ChunkInfo { n, table, rows: rows.len() as u64, bytes: json.len() as u64, sha256 };
                out.send_modify(|s| {
                    s.written += 1;
                    s.rows += chunk.rows;
                    s.bytes += chunk.bytes;
                    s.chunks.push(chunk);
                });
            }
            Ok::<_, String>(())
        })
    };
    let read = state.store.feed_snapshot(&who, tables, CHUNK_ROWS, tx).await;
    let written = writing.await.map_err(|e| format!("the chunk writer failed: {e}")).and_then(|r| r);
    out.send_modify(|s| match (read, written) {
        (Ok(cursor), Ok(())) => {
            s.state = "done".into();
            s.cursor = Some(cursor);
        }
        (_, Err(e)) => {
            tracing::error!(device = %who.device_id, "writing a device's snapshot failed: {e}");
            s.state = "failed".into();
            s.error = Some("writing the snapshot failed on the server; ask for a new one".into());
        }
        (Err(e), Ok(())) => {
            tracing::error!(device = %who.device_id, "a device's snapshot failed: {e}");
            s.state = "failed".into();
            s.error = Some("reading the snapshot failed on the server; ask for a new one".into());
        }
    });
}

/// `GET /v1/snapshot/{id}?after=N`: the snapshot as it stands, with the chunks from N on;
/// waits up to 10 s for chunk N while the snapshot is being written.
pub async fn show<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<DeviceSnapshot>, ApiError> {
    if let Some(unknown) = q.keys().find(|k| k.as_str() != "after") {
        return Err(ApiError::BadRequest(format!("unknown parameter '{}'; use after", ferry_core::shown(unknown))));
    }
    let after = match q.get("after") {
        None => 0,
        Some(a) => a.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("after '{}' must be a chunk number (0 or more)", ferry_core::shown(a)))
        })?,
    };
    let taken = state.snapshots.get(&who.device_id, &id)?;
    let mut seen = taken.state.subscribe();
    let _ = tokio::time::timeout(WAIT, seen.wait_for(|s| s.written > after || s.state != "running")).await;
    let mut now = seen.borrow().clone();
    now.chunks.retain(|c| c.n >= after);
    Ok(Json(now))
}

/// `GET /v1/snapshot/{id}/chunks/{n}`: one chunk, with its SHA-256 in `ferry-chunk-sha256`.
pub async fn chunk<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    Path((id, n)): Path<(String, u64)>,
) -> Result<axum::response::Response, ApiError> {
    let taken = state.snapshots.get(&who.device_id, &id)?;
    let sha = {
        let now = taken.state.borrow();
        let found = now.chunks.iter().find(|c| c.n == n).ok_or_else(|| {
            ApiError::NotFound(format!("snapshot {id} has no chunk {n} (yet): it has {} so far", now.written))
        })?;
        found.sha256.clone()
    };
    let bytes = tokio::fs::read(ferry_peer::full_sync::chunk_path(&taken.dir, n))
        .await
        .map_err(|e| ApiError::Internal(format!("reading chunk {n} of {id}: {e}")))?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/json".to_owned()),
            (axum::http::HeaderName::from_static(CHUNK_SHA256_HEADER), sha),
        ],
        bytes,
    )
        .into_response())
}

/// `DELETE /v1/snapshot/{id}`: the device is done with it (or gives up): it stops and its
/// chunks go.
pub async fn end<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.snapshots.get(&who.device_id, &id)?;
    state.snapshots.lock().remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

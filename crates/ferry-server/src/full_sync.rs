//! Full sync (`docs/full-sync.md`): an operator's runs (`/v1/admin/full-sync…`, carried out by
//! `ferry_peer::full_sync` in this process) and a peer's side of its runs
//! (`/v1/peer/full-sync/{id}…`: chunks kept here, this store's snapshot taken, or the peer's
//! restored here).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use ferry_peer::full_sync::{self as fs, Direction, Plan};
use ferry_protocol::full_sync::CHUNK_SHA256_HEADER;
use ferry_protocol::{FullSyncList, FullSyncRequest, FullSyncRun, PeerFullSync, PeerSnapshotRequest, SnapshotManifest};
use ferry_store::Store;

use crate::admin::require_admin;
use crate::auth::Authed;
use crate::peer::require_peer;
use crate::{ApiError, AppState};

/// The full syncs of this process: where chunks are kept, the peers' runs this server takes
/// part in, and a lock that makes "is one running?" and starting one a single step.
pub struct FullSyncs {
    pub spool: PathBuf,
    /// `[full_sync.exclude]`, as configured (checked at start-up).
    pub exclude: std::collections::BTreeMap<String, String>,
    peers: std::sync::Mutex<HashMap<String, Arc<PeerSide>>>,
    starting: tokio::sync::Mutex<()>,
}

/// A peer's run, this server's side of it.
struct PeerSide {
    state: std::sync::Mutex<PeerFullSync>,
    cancel: AtomicBool,
    /// The snapshot or restore task, while it runs.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FullSyncs {
    pub fn new(spool: PathBuf, exclude: std::collections::BTreeMap<String, String>) -> FullSyncs {
        FullSyncs { spool, exclude, peers: Default::default(), starting: Default::default() }
    }

    fn exclude(&self, schema: &ferry_core::schema::Schema) -> Result<fs::Exclude, ApiError> {
        fs::Exclude::parse(schema, &self.exclude).map_err(ApiError::Internal)
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.spool.join(id)
    }

    fn side(&self, id: &str) -> Option<Arc<PeerSide>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    fn new_side(&self, id: &str, state: &str) -> Arc<PeerSide> {
        let side = Arc::new(PeerSide {
            state: std::sync::Mutex::new(PeerFullSync {
                id: id.to_owned(),
                state: state.into(),
                ..PeerFullSync::default()
            }),
            cancel: AtomicBool::new(false),
            task: std::sync::Mutex::new(None),
        });
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned(), side.clone());
        side
    }
}

impl PeerSide {
    fn update(&self, f: impl FnOnce(&mut PeerFullSync)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn snapshot(&self) -> PeerFullSync {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `work` (the side's `what`: a snapshot or a restore) as this side's task, which
    /// `DELETE` stops; a failure marks the side FAILED with why.
    fn spawn(
        self: &Arc<Self>,
        what: &'static str,
        work: impl std::future::Future<Output = Result<(), ferry_peer::Failure>> + Send + 'static,
    ) {
        let side = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = work.await {
                let id = side.snapshot().id;
                tracing::warn!(id = %id, "a peer's {what} failed: {e}");
                side.update(|s| {
                    s.state = "FAILED".into();
                    s.error = Some(e.to_string());
                });
            }
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if fs::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "full sync id '{}' must be 1 to 80 letters, digits and '-'",
            ferry_core::shown(id)
        )))
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str, shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("malformed {what}: {e}; send {shape}")))
}

/// `POST /v1/admin/full-sync`: starts a full sync with a peer in this process (202); 409
/// `busy` while another runs.
pub async fn start<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<FullSyncRun>), ApiError> {
    require_admin(&who)?;
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let req: FullSyncRequest = json_body(
        &body,
        "full sync request",
        "{\"direction\": \"push\"|\"pull\", \"peer\": \"NAME\", \"options\": {\"tables\", \"compress\", \"verify\", \"notify\"}}",
    )?;
    Ok((StatusCode::ACCEPTED, Json(begin(&state, req).await?)))
}

/// Starts the full sync `req` asks for, in this process (the API's and the dashboard's): the
/// run as first recorded; `busy` while another runs.
pub(crate) async fn begin<S: Store>(state: &Arc<AppState<S>>, req: FullSyncRequest) -> Result<FullSyncRun, ApiError> {
    let direction = Direction::parse(&req.direction).map_err(ApiError::BadRequest)?;
    let link = crate::integrity::link_for(state, &req.peer, None)?;
    let whole = link.tables.clone();
    let link = match req.options.tables.as_deref() {
        Some(only) => crate::integrity::link_for(state, &req.peer, Some(only))?,
        None => link,
    };
    if let Some(url) = &req.options.notify
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ApiError::BadRequest(format!(
            "notify '{}' is not an http:// or https:// URL",
            ferry_core::shown(url)
        )));
    }
    let plan = Plan {
        id: fs::new_id(),
        direction,
        whole_link: link.tables == whole,
        tables: link.tables.clone(),
        compress: req.options.compress,
        verify: req.options.verify,
        notify: req.options.notify.clone(),
        exclude: state.full_syncs.exclude(state.store.schema())?,
        hooks: state.webhooks.clone(),
    };
    let starting = state.full_syncs.starting.lock().await;
    if let Some(r) = fs::running(&state.store).await? {
        return Err(busy(&r));
    }
    let (app, id) = (state.clone(), plan.id.clone());
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let first = std::sync::Mutex::new(Some(first_tx));
    tokio::spawn(async move {
        fs::run(&app.store, &link, plan, &app.full_syncs.spool, &|run| {
            if let Some(tx) = first.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(run.clone());
            }
        })
        .await;
    });
    // The run is recorded before it is answered: a second request sees it running.
    let run = first_rx.await.map_err(|_| ApiError::Internal(format!("full sync {id} stopped before it started")))?;
    drop(starting);
    Ok(run)
}

/// The 409 a second full sync gets while `run` runs.
pub fn busy(run: &FullSyncRun) -> ApiError {
    let percent = run.phases.iter().find(|p| p.name == run.phase).map_or(0.0, |p| p.percent);
    ApiError::Busy(format!(
        "full sync {} ({} with '{}', phase {}, {percent:.0}%) is running; one runs at a time: wait for it, or cancel it (`ferry full-sync cancel {}`, POST /v1/admin/full-sync/{}/cancel)",
        run.id, run.direction, run.peer, run.phase, run.id, run.id
    ))
}

/// `GET /v1/admin/full-sync`: the runs, newest first (`limit`, default 50).
pub async fn list<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<FullSyncList>, ApiError> {
    require_admin(&who)?;
    if let Some(unknown) = q.keys().find(|k| *k != "limit") {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter '{}'; the only one is limit",
            ferry_core::shown(unknown)
        )));
    }
    let limit = match q.get("limit") {
        None => 50,
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
            ApiError::BadRequest(format!("limit '{}' must be a number from 1 to 1000", ferry_core::shown(l)))
        })?,
    };
    Ok(Json(FullSyncList { runs: state.store.full_syncs(limit).await? }))
}

/// `GET /v1/admin/full-sync/{id}`: one run, as it stands.
pub async fn show<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Path(id): Path<String>,
) -> Result<Json<FullSyncRun>, ApiError> {
    require_admin(&who)?;
    Ok(Json(found(&state, &id).await?))
}

pub(crate) async fn found<S: Store>(state: &AppState<S>, id: &str) -> Result<FullSyncRun, ApiError> {
    state.store.full_sync(id).await?.ok_or_else(|| {
        ApiError::NotFound(format!("no full sync '{}'; GET /v1/admin/full-sync lists them", ferry_core::shown(id)))
    })
}

/// `POST /v1/admin/full-sync/{id}/cancel`: asks a run to stop; it does within a second
/// (a restore in progress rolls back its table).
pub async fn cancel<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Path(id): Path<String>,
) -> Result<Json<FullSyncRun>, ApiError> {
    require_admin(&who)?;
    Ok(Json(stop(&state, &id).await?))
}

/// Asks run `id` to stop (the API's and the dashboard's cancel): the run as it stands then.
pub(crate) async fn stop<S: Store>(state: &AppState<S>, id: &str) -> Result<FullSyncRun, ApiError> {
    let run = found(state, id).await?;
    if run.state != "RUNNING" {
        return Err(ApiError::Conflict(format!("full sync {id} is not running (it ended {})", run.state)));
    }
    state.store.cancel_full_sync(id).await?;
    found(state, id).await
}

/// `POST /v1/admin/full-sync/clear`: marks runs whose process stopped reporting as failed.
pub async fn clear<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
) -> Result<Json<FullSyncList>, ApiError> {
    require_admin(&who)?;
    Ok(Json(FullSyncList { runs: fs::clear_stuck(&state.store).await? }))
}

/// `GET /v1/peer/full-sync/{id}`: this server's side of a peer's run: the chunks it holds,
/// its snapshot's or restore's progress.
pub async fn peer_state<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Path(id): Path<String>,
) -> Result<Json<PeerFullSync>, ApiError> {
    require_peer(&who)?;
    check_id(&id)?;
    let dir = state.full_syncs.dir(&id);
    let mut out = match state.full_syncs.side(&id) {
        Some(side) => side.snapshot(),
        None if dir.exists() => PeerFullSync { id: id.clone(), state: "RECEIVING".into(), ..PeerFullSync::default() },
        None => return Err(ApiError::NotFound(format!("no full sync '{id}' here"))),
    };
    out.held = fs::held_chunks(&dir);
    Ok(Json(out))
}

/// `PUT /v1/peer/full-sync/{id}/chunks/{n}`: a chunk of a peer's snapshot, kept only if its
/// bytes hash to the `ferry-chunk-sha256` header.
pub async fn put_chunk<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Path((id, n)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    require_peer(&who)?;
    check_id(&id)?;
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let sha = headers.get(CHUNK_SHA256_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        ApiError::BadRequest(format!("a chunk needs its SHA-256 in the {CHUNK_SHA256_HEADER} header"))
    })?;
    if state.full_syncs.side(&id).is_some_and(|s| s.snapshot().state != "RECEIVING") {
        return Err(ApiError::Conflict(format!("full sync {id} is past receiving chunks here")));
    }
    let dir = state.full_syncs.dir(&id);
    let sha = sha.to_owned();
    tokio::task::spawn_blocking(move || fs::save_chunk(&dir, n, &body, &sha))
        .await
        .map_err(|e| ApiError::Internal(format!("chunk task failed: {e}")))?
        .map_err(|e| if e.contains("hashes to") { ApiError::HashMismatch(e) } else { ApiError::Internal(e) })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/peer/full-sync/{id}/chunks/{n}`: a chunk of this server's snapshot.
pub async fn get_chunk<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Path((id, n)): Path<(String, u64)>,
) -> Result<axum::response::Response, ApiError> {
    require_peer(&who)?;
    check_id(&id)?;
    let dir = state.full_syncs.dir(&id);
    let manifest =
        fs::read_manifest(&dir).ok_or_else(|| ApiError::NotFound(format!("no snapshot '{id}' is ready here")))?;
    let chunk = manifest.chunks.iter().find(|c| c.n == n).ok_or_else(|| {
        ApiError::NotFound(format!("snapshot {id} has no chunk {n} (it has {})", manifest.chunks.len()))
    })?;
    let bytes = tokio::fs::read(fs::chunk_path(&dir, n))
        .await
        .map_err(|e| ApiError::Internal(format!("reading chunk {n} of {id}: {e}")))?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (axum::http::HeaderName::from_static(CHUNK_SHA256_HEADER), chunk.sha256.clone()),
        ],
        bytes,
    )
        .into_response())
}

/// `POST /v1/peer/full-sync/{id}/restore`: restores the peer's snapshot whose chunks are held
/// here, as the peer's push (202; progress by `GET /v1/peer/full-sync/{id}`).
pub async fn restore<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PeerFullSync>), ApiError> {
    require_peer(&who)?;
    check_id(&id)?;
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let manifest: SnapshotManifest = json_body(&body, "snapshot manifest", "the manifest of the snapshot's chunks")?;
    if manifest.id != id {
        return Err(ApiError::BadRequest(format!("the manifest is of {}, not {id}", ferry_core::shown(&manifest.id))));
    }
    for t in &manifest.tables {
        if state.store.schema().table(t).is_none() {
            return Err(ApiError::BadRequest(format!(
                "the snapshot holds table '{}', which this server does not sync",
                ferry_core::shown(t)
            )));
        }
    }
    let dir = state.full_syncs.dir(&id);
    let held = fs::held_chunks(&dir);
    if let Some(c) = manifest.chunks.iter().find(|c| !held.contains(&c.n)) {
        return Err(ApiError::Conflict(format!("chunk {} of {id} has not arrived; send it first", c.n)));
    }
    if let Some(side) = state.full_syncs.side(&id)
        && matches!(side.snapshot().state.as_str(), "RESTORING" | "RESTORED")
    {
        return Ok((StatusCode::ACCEPTED, Json(side.snapshot())));
    }
    let side = state.full_syncs.new_side(&id, "RESTORING");
    side.update(|s| s.rows_total = manifest.rows);
    let exclude = state.full_syncs.exclude(state.store.schema())?;
    let (app, peer, task_side) = (state.clone(), who.0.clone(), side.clone());
    side.spawn("restore", async move {
        let progress = |rows, changed| {
            task_side.update(|s| {
                s.rows_done = rows;
                s.changed = changed;
            })
        };
        let (rows, changed, _) =
            fs::restore_snapshot(&app.store, &peer, &manifest, &dir, &exclude, &task_side.cancel, &progress).await?;
        task_side.update(|s| {
            s.state = "RESTORED".into();
            s.rows_done = rows;
            s.changed = changed;
        });
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(())
    });
    Ok((StatusCode::ACCEPTED, Json(side.snapshot())))
}

/// `POST /v1/peer/full-sync/{id}/snapshot`: takes a snapshot of this store for a peer
/// (202; progress and manifest by `GET /v1/peer/full-sync/{id}`).
pub async fn snapshot<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PeerFullSync>), ApiError> {
    require_peer(&who)?;
    check_id(&id)?;
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let req: PeerSnapshotRequest = json_body(&body, "snapshot request", "{\"tables\": [\"…\"], \"compress\": false}")?;
    if req.tables.is_empty() {
        return Err(ApiError::BadRequest("a snapshot needs at least one table".into()));
    }
    for t in &req.tables {
        if state.store.schema().table(t).is_none() {
            return Err(ApiError::BadRequest(format!(
                "unknown table '{}'; the synced tables are: {}",
                ferry_core::shown(t),
                state.store.schema().table_names().join(", ")
            )));
        }
    }
    if let Some(side) = state.full_syncs.side(&id) {
        return Ok((StatusCode::ACCEPTED, Json(side.snapshot())));
    }
    let total = state.store.count_rows(req.tables.clone()).await?;
    let side = state.full_syncs.new_side(&id, "SNAPSHOT");
    side.update(|s| s.rows_total = total);
    let exclude = state.full_syncs.exclude(state.store.schema())?;
    let (app, dir, task_side) = (state.clone(), state.full_syncs.dir(&id), side.clone());
    side.spawn("snapshot", async move {
        let progress = |rows, _bytes, _excluded| task_side.update(|s| s.rows_done = rows);
        let how = fs::Snapshot { id: &id, compress: req.compress, dir: &dir, exclude: &exclude };
        let manifest = fs::take_snapshot(&app.store, req.tables, &how, &task_side.cancel, &progress).await?;
        task_side.update(|s| {
            s.state = "READY".into();
            s.rows_done = manifest.rows;
            s.manifest = Some(manifest);
        });
        Ok(())
    });
    Ok((StatusCode::ACCEPTED, Json(side.snapshot())))
}

/// `DELETE /v1/peer/full-sync/{id}`: the peer is done (or cancelled): a snapshot or restore
/// still running here stops (a restore rolls back its table) and the chunks go.
pub async fn end<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_peer(&who)?;
    check_id(&id)?;
    let side = state.full_syncs.peers.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    if let Some(side) = side {
        side.cancel.store(true, Ordering::SeqCst);
        let task = side.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
    let _ = tokio::fs::remove_dir_all(state.full_syncs.dir(&id)).await;
    Ok(StatusCode::NO_CONTENT)
}

//! `/v1/files`: the files rows point to, named by the SHA-256 of their content.
//!
//! An upload is staged in the data directory as it arrives, hashed on the way, and reaches
//! the file store only when its bytes hash to its name; a broken upload keeps what arrived
//! and resumes from there (`Upload-Offset`). A file is as private as its rows: a device may
//! upload or read a hash only when a row it may read references it (404 otherwise, so a
//! hash does not tell whether another user's file exists).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_files::{AnyFileStore, FileStore};
use ferry_protocol::{FileCheckRequest, FileCheckResponse, FileState, FileStateKind, FileStored, MAX_FILE_CHECK};
use ferry_protocol::{FilesStatus, ServerStatus};
use ferry_store::Store;
use futures_util::{StreamExt, TryStreamExt};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use crate::auth::Authed;
use crate::{ApiError, AppState};

/// The default largest upload: 1 GiB (`max_upload_bytes` in `[files]`).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// The server's file side: the store of verified files, the staging directory of uploads
/// in progress, and counters for the status.
pub struct Files {
    store: AnyFileStore,
    staging: PathBuf,
    max_upload_bytes: u64,
    /// Hashes being uploaded now: one writer per file.
    uploading: Mutex<HashSet<String>>,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    uploads: AtomicU64,
    downloads: AtomicU64,
    refused: AtomicU64,
    /// Files stored, for the stream (`{"type": "files"}`): whose devices may want them.
    notices: tokio::sync::broadcast::Sender<ferry_store::Notice>,
}

impl Files {
    /// `staging` holds uploads in progress (created if missing).
    ///
    /// # Errors
    /// When the staging directory cannot be created.
    pub fn new(store: AnyFileStore, staging: PathBuf, max_upload_bytes: u64) -> std::io::Result<Files> {
        std::fs::create_dir_all(&staging)?;
        Ok(Files {
            store,
            staging,
            max_upload_bytes,
            uploading: Mutex::new(HashSet::new()),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            notices: tokio::sync::broadcast::channel(1024).0,
        })
    }

    /// The largest file this server accepts (`max_upload_bytes` in `[files]`).
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// Files stored from now on (by this process): the uploading user's, for the stream.
    pub fn notices(&self) -> tokio::sync::broadcast::Receiver<ferry_store::Notice> {
        self.notices.subscribe()
    }

    fn partial(&self, hash: &str) -> (PathBuf, PathBuf) {
        (self.staging.join(format!("{hash}.part")), self.staging.join(format!("{hash}.length")))
    }

    /// Bytes held of an upload of `hash`. With `total` (only by the upload holding the
    /// hash's lock): a partial declared with another length is dropped (the device starts
    /// over). Without (a look from outside the lock): what is there, touching nothing.
    async fn held(&self, hash: &str, total: Option<u64>) -> Result<u64, ApiError> {
        let (part, length) = self.partial(hash);
        let size = tokio::fs::metadata(&part).await.map(|m| m.len()).ok();
        let Some(total) = total else { return Ok(size.unwrap_or(0)) };
        let declared = tokio::fs::read_to_string(&length).await.ok().and_then(|s| s.trim().parse::<u64>().ok());
        match (size, declared) {
            (Some(size), Some(d)) if total == d && size <= d => Ok(size),
            (None, _) => Ok(0),
            _ => {
                let _ = tokio::fs::remove_file(&part).await;
                let _ = tokio::fs::remove_file(&length).await;
                Ok(0)
            }
        }
    }

    fn flight(self: &Arc<Self>) -> Flight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Flight(self.clone())
    }

    fn lock(self: &Arc<Self>, hash: &str) -> Result<UploadLock, ApiError> {
        let mut set = self.uploading.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(hash.to_owned()) {
            return Err(ApiError::UploadInProgress(format!(
                "file {hash} is being uploaded by another request right now; retry in a few seconds"
            )));
        }
        Ok(UploadLock(self.clone(), hash.to_owned()))
    }

    /// Transfers running on this process now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The status's file section (the API's and the dashboard's).
    pub(crate) async fn status<S: Store>(&self, store: &S) -> Result<FilesStatus, ApiError> {
        let stats = self.store.stats().await.map_err(file_err)?;
        let (mut uploading, mut uploading_pending) = (0, 0);
        let mut dir = tokio::fs::read_dir(&self.staging).await.map_err(io_err)?;
        while let Some(entry) = dir.next_entry().await.map_err(io_err)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(hash) = name.strip_suffix(".part") {
                let held = entry.metadata().await.map(|m| m.len()).unwrap_or(0);
                let (_, length) = self.partial(hash);
                let total = tokio::fs::read_to_string(&length).await.ok().and_then(|s| s.trim().parse::<u64>().ok());
                uploading += 1;
                uploading_pending += total.unwrap_or(held).saturating_sub(held);
            }
        }
        let referenced = store.referenced_files().await?;
        let store = &self.store;
        let sizes: Vec<_> = futures_util::stream::iter(referenced.iter().cloned())
            .map(|h| async move { store.size(&h).await })
            .buffer_unordered(16)
            .try_collect()
            .await
            .map_err(file_err)?;
        Ok(FilesStatus {
            store: self.store.describe(),
            stored: stats.files,
            stored_bytes: stats.bytes,
            referenced: referenced.len() as u64,
            missing: sizes.iter().filter(|s| s.is_none()).count() as u64,
            uploading,
            uploading_bytes_pending: uploading_pending,
            in_flight: self.in_flight.load(Ordering::SeqCst),
            peak_in_flight: self.peak_in_flight.load(Ordering::SeqCst),
            uploads_completed: self.uploads.load(Ordering::SeqCst),
            downloads_completed: self.downloads.load(Ordering::SeqCst),
            uploads_refused: self.refused.load(Ordering::SeqCst),
            max_upload_bytes: self.max_upload_bytes,
        })
    }
}

/// A transfer in progress, for the in-flight count.
struct Flight(Arc<Files>);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct UploadLock(Arc<Files>, String);

impl Drop for UploadLock {
    fn drop(&mut self) {
        self.0.uploading.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
    }
}

fn file_err(e: ferry_files::Error) -> ApiError {
    match e {
        ferry_files::Error::Invalid(m) => ApiError::BadRequest(m),
        ferry_files::Error::Unavailable(m) => ApiError::Unavailable(format!("file store: {m}")),
        other => ApiError::Internal(format!("file store: {other}")),
    }
}

fn io_err(e: std::io::Error) -> ApiError {
    ApiError::Internal(format!("file staging: {e}"))
}

fn check_hash(hash: &str) -> Result<(), ApiError> {
    ferry_files::check_hash(hash).map_err(file_err)
}

/// Whether a row `who` may read references `hash`.
async fn readable<S: Store>(state: &AppState<S>, who: &Authed, hash: &str) -> Result<bool, ApiError> {
    Ok(state.store.file_refs(&who.0, &[hash.to_owned()]).await?.contains(hash))
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest(format!("header {name}: {v:?} is not a whole number of bytes")))
        })
        .transpose()
}

/// `POST /v1/files/check`: what the server holds of each file.
pub async fn check<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    body: Result<Json<FileCheckRequest>, JsonRejection>,
) -> Result<Json<FileCheckResponse>, ApiError> {
    let Json(req) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("file check body: {}; ask about fewer files at once", e.body_text()))
        } else {
            ApiError::BadRequest(format!("file check body: {}", e.body_text()))
        }
    })?;
    if req.hashes.len() > MAX_FILE_CHECK {
        return Err(ApiError::BadRequest(format!(
            "asked about {} files; ask about at most {MAX_FILE_CHECK} per request",
            req.hashes.len()
        )));
    }
    for h in &req.hashes {
        check_hash(h)?;
    }
    let refs = state.store.file_refs(&who.0, &req.hashes).await?;
    let files = &state.files;
    let states: Vec<FileState> = futures_util::stream::iter(req.hashes)
        .map(|hash| {
            let known = refs.contains(&hash);
            async move {
                if !known {
                    return Ok(FileState { hash, state: FileStateKind::Unreferenced, size: None, offset: None });
                }
                if let Some(size) = files.store.size(&hash).await.map_err(file_err)? {
                    return Ok(FileState { hash, state: FileStateKind::Stored, size: Some(size), offset: None });
                }
                let held = files.held(&hash, None).await?;
                Ok::<_, ApiError>(if held > 0 {
                    FileState { hash, state: FileStateKind::Partial, size: None, offset: Some(held) }
                } else {
                    FileState { hash, state: FileStateKind::Missing, size: None, offset: None }
                })
            }
        })
        .buffered(16)
        .try_collect()
        .await?;
    Ok(Json(FileCheckResponse { files: states, max_upload_bytes: Some(files.max_upload_bytes) }))
}

/// `PUT /v1/files/{hash}`: an upload, or the rest of one. `Upload-Length` is the whole
/// file's size; `Upload-Offset` (default 0) is where this body starts and must equal what
/// the server holds.
pub async fn upload<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    UrlPath(hash): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_hash(&hash)?;
    let files = &state.files;
    let total = header_u64(&headers, "upload-length")?.ok_or_else(|| {
        ApiError::BadRequest(format!("upload of {hash} has no Upload-Length header; send the file's size in bytes"))
    })?;
    if total > files.max_upload_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "file {hash} is {total} bytes, over this server's upload limit of {} bytes; raise max_upload_bytes in [files] of ferry.toml to accept it",
            files.max_upload_bytes
        )));
    }
    let offset = header_u64(&headers, "upload-offset")?.unwrap_or(0);
    if offset > total {
        return Err(ApiError::BadRequest(format!(
            "Upload-Offset {offset} is past the end of file {hash} (Upload-Length {total})"
        )));
    }
    if !readable(&state, &who, &hash).await? {
        return Err(ApiError::Forbidden(format!(
            "no row you may read references file {hash}; sync the row that references it, then upload"
        )));
    }
    if let Some(size) = files.store.size(&hash).await.map_err(file_err)? {
        return Ok((StatusCode::OK, Json(FileStored { hash, size })).into_response());
    }
    let _lock = files.lock(&hash)?;
    let _flight = files.flight();
    let held = files.held(&hash, Some(total)).await?;
    if offset != held {
        return Err(ApiError::UploadOffset(
            format!("upload of {hash} must continue at byte {held} (the bytes this server holds), not {offset}"),
            held,
        ));
    }
    let (part, length) = files.partial(&hash);
    tokio::fs::write(&length, total.to_string()).await.map_err(io_err)?;
    // Written as it arrives, unbuffered: what a check or the status reports of an upload in
    // progress is what is on disk (a buffer of 1 MiB made no measurable difference).
    let mut out = tokio::fs::OpenOptions::new().create(true).append(true).open(&part).await.map_err(io_err)?;
    // From the first byte the hash is taken on the way; a resumed upload is hashed whole
    // at its end.
    let mut hasher = (held == 0).then(sha2::Sha256::new);
    let mut received = held;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                out.flush().await.map_err(io_err)?;
                return Err(ApiError::BadRequest(format!(
                    "upload of {hash} broke after {received} of {total} bytes ({e}); resume with Upload-Offset: {received}"
                )));
            }
        };
        if received + chunk.len() as u64 > total {
            drop(out);
            discard(&part, &length).await;
            return Err(ApiError::BadRequest(format!(
                "upload of {hash} sent more than its Upload-Length of {total} bytes; nothing was kept"
            )));
        }
        out.write_all(&chunk).await.map_err(io_err)?;
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        received += chunk.len() as u64;
        metrics::counter!("ferry_file_bytes_total", "direction" => "in").increment(chunk.len() as u64);
    }
    out.flush().await.map_err(io_err)?;
    drop(out);
    if received < total {
        return Err(ApiError::BadRequest(format!(
            "upload of {hash} ended after {received} of {total} bytes; send the rest with Upload-Offset: {received}"
        )));
    }
    let digest = match hasher {
        Some(h) => ferry_core::to_hex(&h.finalize()),
        None => hash_file(&part).await.map_err(io_err)?,
    };
    if digest != hash {
        discard(&part, &length).await;
        files.refused.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("ferry_file_transfers_total", "direction" => "in", "outcome" => "refused").increment(1);
        return Err(ApiError::HashMismatch(format!(
            "the uploaded bytes hash to {digest}, not {hash}: the file changed on the device or on the way; nothing was stored, upload it again"
        )));
    }
    files.store.put_file(&hash, &part, total).await.map_err(file_err)?;
    let _ = tokio::fs::remove_file(&length).await;
    files.uploads.fetch_add(1, Ordering::SeqCst);
    metrics::counter!("ferry_file_transfers_total", "direction" => "in", "outcome" => "completed").increment(1);
    // The uploader's other devices may be waiting for it. (Devices of other users whose
    // shared rows reference it learn at their next look.)
    let _ = files.notices.send(ferry_store::Notice {
        owners: Some(vec![Some(who.0.user_id.clone())]),
        reaches: Vec::new(),
        tables: Vec::new(),
        origin: Some(who.0.device_id.clone()),
    });
    Ok((StatusCode::CREATED, Json(FileStored { hash, size: total })).into_response())
}

async fn discard(part: &Path, length: &Path) {
    let _ = tokio::fs::remove_file(part).await;
    let _ = tokio::fs::remove_file(length).await;
}

/// SHA-256 of a file, hex.
async fn hash_file(path: &Path) -> std::io::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(ferry_core::to_hex(&h.finalize()));
            }
            h.update(&buf[..n]);
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The start of an open-ended `Range: bytes=N-` (`bytes=N-M` reaching the end counts too);
/// `None` for no range or one this server serves whole instead (RFC 9110 lets it).
fn range_start(headers: &HeaderMap, size: u64) -> Option<u64> {
    let spec = headers.get(header::RANGE)?.to_str().ok()?.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    match end.trim() {
        "" => Some(start),
        e => e.parse::<u64>().ok().filter(|e| *e + 1 >= size).map(|_| start),
    }
}

/// `GET /v1/files/{hash}` (and `HEAD`): the file, or from `Range: bytes=N-` on (206).
pub async fn download<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    UrlPath(hash): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_hash(&hash)?;
    let files = &state.files;
    let not_found = || ApiError::NotFound(format!("no file {hash} among the files of rows you may read"));
    if !readable(&state, &who, &hash).await? {
        return Err(not_found());
    }
    let Some(size) = files.store.size(&hash).await.map_err(file_err)? else {
        return Err(ApiError::NotFound(format!(
            "file {hash} is referenced but not uploaded yet; the device that added it uploads it when it is online"
        )));
    };
    let start = range_start(&headers, size);
    // A range must start inside the file (RFC 9110 §14.1.2): from its length on, nothing
    // can be sent.
    if start.is_some_and(|s| s >= size) {
        let mut resp = ApiError::RangeNotSatisfiable(format!(
            "range starts at byte {} but file {hash} has {size} bytes",
            start.unwrap_or_default()
        ))
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return Ok(resp);
    }
    let from = start.unwrap_or(0);
    let stream = files.store.get(&hash, from).await.map_err(file_err)?.ok_or_else(not_found)?;
    // The in-flight count follows the body, not the handler; a download counts as
    // completed when its last byte has been handed over.
    let flight = files.flight();
    let done = files.clone();
    let completed = move || {
        done.downloads.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("ferry_file_transfers_total", "direction" => "out", "outcome" => "completed").increment(1);
    };
    if from == size {
        completed();
    }
    let mut sent = from;
    let stream = stream.map(move |chunk| {
        let _keep = &flight;
        if let Ok(c) = &chunk {
            sent += c.len() as u64;
            metrics::counter!("ferry_file_bytes_total", "direction" => "out").increment(c.len() as u64);
            if sent == size {
                completed();
            }
        }
        chunk
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, (size - from).into());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{hash}\"")) {
        h.insert(header::ETAG, v);
    }
    if start.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let last = size.saturating_sub(1);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {from}-{last}/{size}")) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// `GET /v1/admin/status`: the server's file store and transfer queue.
pub async fn status<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
) -> Result<Json<ServerStatus>, ApiError> {
    crate::admin::require_admin(&who)?;
    Ok(Json(ServerStatus { files: state.files.status(&state.store).await? }))
}

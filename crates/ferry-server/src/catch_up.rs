//! Catching up by difference (`docs/integrity.md`): a device whose cursor the compaction
//! horizon passed compares its rows with the ones it may read, by the digest tree, and fetches
//! only those that differ (`POST /v1/catch-up`, `POST /v1/catch-up/rows`), instead of
//! downloading everything again.
//!
//! The server reads the device's rows from its snapshot (its tables, its owner and `read`
//! rules exactly, as of one moment: `Store::feed_snapshot`), once per catch-up session, and
//! keeps the cursor that snapshot ends at: the device reads on from there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use ferry_core::digest::{self, Entry, Tree};
use ferry_protocol::{CatchUpRequest, CatchUpResponse};
use ferry_store::{Principal, Store};

use crate::auth::Authed;
use crate::{ApiError, AppState};

/// How long a session's walk is kept after it was made.
const WALK_KEPT: Duration = Duration::from_secs(120);
/// Walks kept at most.
const WALKS_KEPT: usize = 8;
/// Rows per batch of a walk.
const WALK_PAGE: usize = 5000;

/// The walks of running catch-ups, by device and session.
#[derive(Default)]
pub struct Walks(tokio::sync::Mutex<Vec<Walk>>);

struct Walk {
    device: String,
    session: String,
    at: Instant,
    /// Where the device reads on from.
    cursor: String,
    trees: Arc<BTreeMap<String, Tree>>,
}

impl Walks {
    async fn get<S: Store>(
        &self,
        store: &S,
        who: &Principal,
        req: &CatchUpRequest,
    ) -> Result<(String, Arc<BTreeMap<String, Tree>>), ApiError> {
        {
            let mut kept = self.0.lock().await;
            kept.retain(|w| w.at.elapsed() < WALK_KEPT);
            if let Some(w) = kept.iter().find(|w| w.device == who.device_id && w.session == req.session) {
                return Ok((w.cursor.clone(), w.trees.clone()));
            }
        }
        let (cursor, trees) = walk(store, who, req.tables.as_deref()).await?;
        let trees = Arc::new(trees);
        let mut kept = self.0.lock().await;
        if kept.len() >= WALKS_KEPT {
            kept.remove(0);
        }
        kept.push(Walk {
            device: who.device_id.clone(),
            session: req.session.clone(),
            at: Instant::now(),
            cursor: cursor.clone(),
            trees: trees.clone(),
        });
        Ok((cursor, trees))
    }
}

/// The device's rows, by table, as digest trees, and the cursor to read on from: its
/// snapshot (`Store::feed_snapshot`), one read of what it may read as of one moment.
async fn walk<S: Store>(
    store: &S,
    who: &Principal,
    tables: Option<&[String]>,
) -> Result<(String, BTreeMap<String, Tree>), ApiError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<ferry_store::FeedRow>>(2);
    let digesting = async {
        let mut entries: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        while let Some(rows) = rx.recv().await {
            for r in rows {
                let s = &r.state;
                let d = digest::row_digest(
                    &r.key,
                    s.is_alive(),
                    s.exists.at,
                    s.cols.iter().map(|(c, v)| (c.as_str(), v.at)),
                );
                entries.entry(r.table).or_default().push(Entry::new(r.key, d, !s.is_alive()));
            }
        }
        entries
    };
    let (cursor, entries) =
        tokio::join!(store.feed_snapshot(who, tables.map(<[String]>::to_vec), WALK_PAGE, tx), digesting);
    Ok((cursor?, entries.into_iter().map(|(t, e)| (t, Tree::new(e))).collect()))
}

/// `POST /v1/catch-up`: summaries of nodes of the digest tree of the rows the device may read
/// in one table, the rows under others, and the cursor to read on from.
pub async fn digests<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CatchUpResponse>, ApiError> {
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let req: CatchUpRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "malformed catch-up request: {e}; send {{\"session\", \"table\", \"tables\", \"nodes\": [prefix…], \"rows\": [prefix…]}}"
        ))
    })?;
    crate::integrity::check_ask("catch-up request", "catch-up", &req.session, &req.nodes, &req.rows)?;
    if state.store.schema().table(&req.table).is_none() {
        return Err(ApiError::NotFound(format!(
            "unknown table '{}'; the synced tables are: {}",
            ferry_core::shown(&req.table),
            state.store.schema().table_names().join(", ")
        )));
    }
    let (cursor, trees) = state.catch_ups.get(&state.store, &who, &req).await?;
    let empty = Tree::default();
    let tree = trees.get(&req.table).unwrap_or(&empty);
    let (nodes, rows) = crate::integrity::answer(tree, &req.nodes, &req.rows)?;
    Ok(Json(CatchUpResponse { cursor, nodes, rows }))
}

/// `POST /v1/catch-up/rows`: the states of these keys the device may read (a pull page; keys
/// it may not read, or that do not exist, are left out).
pub async fn rows<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, ApiError> {
    let req = crate::integrity::rows_request(&state, body)?;
    let mut states = Vec::with_capacity(req.keys.len());
    for key in req.keys {
        if let Some(s) = state.store.get_row(&who, &req.table, &key).await? {
            states.push((key, s));
        }
    }
    crate::integrity::rows_page(state.store.schema(), &req.table, &states)
}

//! Integrity checks (`docs/integrity.md`): a peer's questions about this store's digest tree
//! (`POST /v1/peer/digests`), the rows it fetches for a repair (`POST /v1/peer/rows`), and an
//! operator's check of this store against a peer (`POST /v1/admin/integrity`, carried out by
//! `ferry_peer::integrity`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::IntoResponse;
use ferry_core::digest::{self, Tree};
use ferry_protocol::integrity::{MAX_DIGEST_ASK, MAX_PEER_ROWS};
use ferry_protocol::{
    DigestNode, DigestRequest, DigestResponse, DigestRow, IntegrityReport, IntegrityRequest, PageOut, PeerRowsRequest,
    RowOut,
};
use ferry_store::Store;

use crate::admin::require_admin;
use crate::auth::Authed;
use crate::peer::require_peer;
use crate::{ApiError, AppState};

/// How long a session's tree is kept after it was read.
const TREE_KEPT: Duration = Duration::from_secs(120);
/// Trees kept at most (one per table of a running comparison).
const TREES_KEPT: usize = 16;

/// The digest trees of running comparisons: a table is read once per session, and the
/// session's later requests (each a level further down) are answered from it.
#[derive(Default)]
pub struct Trees(tokio::sync::Mutex<Vec<Kept>>);

struct Kept {
    session: String,
    table: String,
    from_ms: u64,
    at: Instant,
    tree: Arc<Tree>,
    /// The feed position taken before the table was read.
    cursor: String,
}

impl Trees {
    async fn get<S: Store>(&self, store: &S, req: &DigestRequest) -> Result<(Arc<Tree>, String), ApiError> {
        let found = {
            let mut kept = self.0.lock().await;
            kept.retain(|k| k.at.elapsed() < TREE_KEPT);
            kept.iter()
                .find(|k| k.session == req.session && k.table == req.table && k.from_ms == req.tombstones_from_ms)
                .map(|k| (k.tree.clone(), k.cursor.clone()))
        };
        if let Some(found) = found {
            return Ok(found);
        }
        // The position first: whatever changes while the table is read comes after it.
        let cursor = store.feed_position().await?;
        let tree = Arc::new(Tree::new(store.row_digests(&req.table, req.tombstones_from_ms).await?));
        let mut kept = self.0.lock().await;
        if kept.len() >= TREES_KEPT {
            kept.remove(0);
        }
        kept.push(Kept {
            session: req.session.clone(),
            table: req.table.clone(),
            from_ms: req.tombstones_from_ms,
            at: Instant::now(),
            tree: tree.clone(),
            cursor: cursor.clone(),
        });
        Ok((tree, cursor))
    }
}

/// `POST /v1/peer/digests`: summaries of nodes of a table's digest tree, and the rows under
/// the nodes asked to be listed.
pub async fn digests<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DigestResponse>, ApiError> {
    require_peer(&who)?;
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let req: DigestRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "malformed digest request: {e}; send {{\"table\", \"session\", \"tombstones_from_ms\", \"nodes\": [prefix…], \"rows\": [prefix…]}}"
        ))
    })?;
    check_ask("digest request", "comparison", &req.session, &req.nodes, &req.rows)?;
    let (tree, cursor) = state.trees.get(&state.store, &req).await?;
    let (nodes, rows) = answer(&tree, &req.nodes, &req.rows)?;
    let compacted_before_ms = state.store.compacted_before().await?;
    Ok(Json(DigestResponse { nodes, rows, compacted_before_ms, cursor }))
}

/// Checks a question about a digest tree (`what` it is, what its session `names`): the
/// session's name, how much it asks at once, and its prefixes.
pub(crate) fn check_ask(
    what: &str,
    names: &str,
    session: &str,
    nodes: &[String],
    rows: &[String],
) -> Result<(), ApiError> {
    if session.is_empty() || session.len() > 200 {
        return Err(ApiError::BadRequest(format!(
            "session '{}' must be 1 to 200 characters naming one {names}",
            ferry_core::shown(session)
        )));
    }
    if nodes.len() > MAX_DIGEST_ASK || rows.len() > MAX_DIGEST_ASK {
        return Err(ApiError::BadRequest(format!(
            "a {what} asks for {} nodes and {} row lists; at most {MAX_DIGEST_ASK} of each, send the rest in another request",
            nodes.len(),
            rows.len()
        )));
    }
    for p in nodes.iter().chain(rows) {
        digest::prefix_range(p).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    Ok(())
}

/// The answer from `tree`: the summary of each prefix in `nodes`, and the rows under every
/// prefix in `rows`.
pub(crate) fn answer(
    tree: &Tree,
    nodes: &[String],
    rows: &[String],
) -> Result<(Vec<DigestNode>, Vec<DigestRow>), ApiError> {
    let mut summaries = Vec::with_capacity(nodes.len());
    for p in nodes {
        let n = tree.node(p).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        summaries.push(DigestNode { prefix: p.clone(), count: n.count, digest: digest::hex(n.digest) });
    }
    let mut listed = Vec::new();
    for p in rows {
        for e in tree.rows(p).map_err(|e| ApiError::BadRequest(e.to_string()))? {
            listed.push(DigestRow { key: e.key.clone(), version: digest::hex(e.digest), deleted: e.deleted });
        }
    }
    Ok((summaries, listed))
}

/// `POST /v1/peer/rows`: the stored states of keys (tombstones too), as a pull page, for a
/// peer that repairs differences.
pub async fn rows<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, ApiError> {
    require_peer(&who)?;
    let req = rows_request(&state, body)?;
    let states = state.store.states(&req.table, req.keys).await?;
    rows_page(state.store.schema(), &req.table, &states)
}

/// A request for rows by key, read and checked: its size, and its table in the schema.
pub(crate) fn rows_request<S: Store>(
    state: &AppState<S>,
    body: Result<Bytes, BytesRejection>,
) -> Result<PeerRowsRequest, ApiError> {
    let body = body.map_err(|e| crate::push::body_error(state, &e))?;
    let req: PeerRowsRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("malformed rows request: {e}; send {{\"table\": \"…\", \"keys\": [\"…\"]}}"))
    })?;
    if req.keys.len() > MAX_PEER_ROWS {
        return Err(ApiError::BadRequest(format!(
            "{} keys asked for; at most {MAX_PEER_ROWS} per request",
            req.keys.len()
        )));
    }
    let schema = state.store.schema();
    if schema.table(&req.table).is_none() {
        return Err(ApiError::NotFound(format!(
            "unknown table '{}'; the synced tables are: {}",
            ferry_core::shown(&req.table),
            schema.table_names().join(", ")
        )));
    }
    Ok(req)
}

/// Rows of `table` (checked by [`rows_request`]) answered as a pull page.
pub(crate) fn rows_page(
    schema: &ferry_core::schema::Schema,
    table: &str,
    states: &[(String, ferry_core::RowState)],
) -> Result<axum::response::Response, ApiError> {
    let table = schema.table(table).ok_or_else(|| ApiError::Internal(format!("table '{table}' left the schema")))?;
    let rows = || states.iter().map(|(k, s)| RowOut { table, key: k, state: s, base: None, seen: None });
    let body = serde_json::to_vec(&PageOut { rows, cursor: "", more: false, removed: &[] })
        .map_err(|e| ApiError::Internal(format!("encoding rows: {e}")))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `POST /v1/admin/integrity`: compares this store with a peer's (`[peers.NAME]`), and with
/// `repair`, sends the newer versions of differing rows both ways.
pub async fn run<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IntegrityReport>, ApiError> {
    require_admin(&who)?;
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let req: IntegrityRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "malformed integrity request: {e}; send {{\"peer\": \"NAME\", \"tables\": [\"…\"], \"repair\": false}}"
        ))
    })?;
    Ok(Json(check(&state, &req).await?))
}

/// The check `req` asks for (the API's and the dashboard's), repairing with `repair`.
pub(crate) async fn check<S: Store>(state: &AppState<S>, req: &IntegrityRequest) -> Result<IntegrityReport, ApiError> {
    let link = link_for(state, &req.peer, req.tables.as_deref())?;
    ferry_peer::integrity::check(&state.store, &link, &link.tables, req.repair, &|step| {
        tracing::info!(peer = %req.peer, "integrity: {step}");
    })
    .await
    .map_err(|e| ApiError::PeerFailed(format!("integrity check with peer '{}' failed: {e}", req.peer)))
}

/// The link of `[peers.NAME]`, its tables narrowed to `tables` when given.
pub(crate) fn link_for<S: Store>(
    state: &AppState<S>,
    name: &str,
    tables: Option<&[String]>,
) -> Result<ferry_peer::Link, ApiError> {
    let synced = state.store.schema().table_names();
    crate::config::peer_link(&state.links, name, tables, &synced, state.sync_log_keep).map_err(|e| match e {
        crate::config::PeerLinkError::Unknown(m) => ApiError::NotFound(m),
        crate::config::PeerLinkError::Invalid(m) => ApiError::BadRequest(m),
    })
}

//! Server peering, the server's side: requests from a peer (a token with a server role that
//! sends the `ferry-peer` header), the users two servers share (`/v1/peer/users`), and the
//! links' state and sync log for operators (`/v1/admin/sync/…`). The link itself (the side
//! that connects) is `ferry-peer`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use ferry_protocol::{AdoptUsersResponse, PeerStatus, PeerUser, PeerUsers, SyncLogResponse, SyncStatusResponse};
use ferry_store::{Principal, SERVER_ROLES, Store, User};

use crate::admin::require_admin;
use crate::auth::Authed;
use crate::{ApiError, AppState};

/// A link the peer started is shown as down once it has not called for this long.
const INCOMING_QUIET_MS: u64 = 120_000;
/// How often a peer's calls are written down (its heartbeat), at most.
const HEARD_EVERY_MS: u64 = 5_000;

/// Checks that a request asking to be served as a peer (`link`: the header's value) comes
/// with a server's token.
pub(crate) fn admit(who: &Principal, link: &str) -> Result<(), ApiError> {
    if link.is_empty() || link.len() > 200 {
        return Err(ApiError::BadRequest(
            "the ferry-peer header must name the link (1 to 200 characters), e.g. `ferry-peer: cloud`".into(),
        ));
    }
    match who.role.as_deref() {
        Some(r) if SERVER_ROLES.contains(&r) => Ok(()),
        other => Err(ApiError::Forbidden(format!(
            "device '{}' (role {}) cannot link as a peer: a peer's token needs a server role; create one on this server with `ferry token create --user USER --device NAME --role main` (or cloud)",
            who.device_name,
            other.map_or("none".to_owned(), |r| format!("'{r}'"))
        ))),
    }
}

/// When each peer that links to this server last called.
#[derive(Default)]
pub struct Heard(tokio::sync::Mutex<HashMap<String, u64>>);

impl Heard {
    /// Notes a call from a peer: its heartbeat, written down at most every few seconds.
    pub(crate) async fn heard<S: Store>(&self, store: &S, who: &Principal) {
        let now = now_ms();
        let mut heard = self.0.lock().await;
        if heard.get(&who.device_id).is_some_and(|at| now.saturating_sub(*at) < HEARD_EVERY_MS) {
            return;
        }
        heard.insert(who.device_id.clone(), now);
        drop(heard);
        let status = PeerStatus {
            name: who.device_name.clone(),
            direction: "incoming".into(),
            role: store.role().unwrap_or_default().to_owned(),
            peer_role: who.role.clone(),
            enabled: true,
            state: "CONNECTED".into(),
            last_heartbeat_ms: Some(now),
            last_success_ms: Some(now),
            ..PeerStatus::default()
        };
        if let Err(e) = store.save_link(status).await {
            tracing::warn!("cannot record peer {}'s heartbeat: {e}", who.device_name);
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn require_peer(who: &Authed) -> Result<(), ApiError> {
    if who.0.peer {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this endpoint is for peer servers: send the ferry-peer header with a token holding a server role".into(),
        ))
    }
}

/// `GET /v1/peer/users`: every user, for a peer to adopt.
pub async fn users<S: Store>(State(state): State<Arc<AppState<S>>>, who: Authed) -> Result<Json<PeerUsers>, ApiError> {
    require_peer(&who)?;
    let users = state.store.users().await?;
    Ok(Json(PeerUsers { users: users.into_iter().map(|u| PeerUser { id: u.id, name: u.name }).collect() }))
}

/// `POST /v1/peer/users`: adopts the peer's users this server lacks, with their ids.
pub async fn adopt_users<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AdoptUsersResponse>, ApiError> {
    require_peer(&who)?;
    let body = body.map_err(|e| crate::push::body_error(&state, &e))?;
    let req: PeerUsers = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("malformed users body: {e}; send {{\"users\": [{{\"id\", \"name\"}}]}}"))
    })?;
    if let Some(u) = req.users.iter().find(|u| u.id.is_empty() || u.id.len() > 200) {
        return Err(ApiError::BadRequest(format!(
            "user '{}' has an id of {} characters; ids are 1 to 200",
            ferry_core::shown(&u.name),
            u.id.len()
        )));
    }
    let users = req.users.into_iter().map(|u| User { id: u.id, name: u.name }).collect();
    let (added, refused) = state.store.adopt_users(users).await?;
    Ok(Json(AdoptUsersResponse { added, refused }))
}

/// `GET /v1/admin/sync/status`: this server's role and every link, as last recorded; a link
/// the peer started shows as down when it has not called for two minutes.
pub async fn status<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
) -> Result<Json<SyncStatusResponse>, ApiError> {
    require_admin(&who)?;
    let now = now_ms();
    Ok(Json(SyncStatusResponse {
        role: state.store.role().map(str::to_owned),
        peers: state.store.links().await?.into_iter().map(|p| seen_at(p, now)).collect(),
    }))
}

/// A link's state as of `now`: an incoming link that went quiet is down since its last call.
pub fn seen_at(mut p: PeerStatus, now: u64) -> PeerStatus {
    if p.direction == "incoming"
        && let Some(at) = p.last_heartbeat_ms
        && now.saturating_sub(at) > INCOMING_QUIET_MS
    {
        p.state = "DISCONNECTED".into();
        p.down_since_ms = Some(at);
    }
    p
}

/// `GET /v1/admin/sync/log?peer=NAME&limit=N` (default 100, at most 1 000): newest first.
pub async fn log<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<SyncLogResponse>, ApiError> {
    require_admin(&who)?;
    if let Some(unknown) = q.keys().find(|k| !matches!(k.as_str(), "peer" | "limit")) {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter '{}'; use peer=NAME and limit=N",
            ferry_core::shown(unknown)
        )));
    }
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit '{}' must be a number from 1 to 1000",
                    ferry_core::shown(l)
                )));
            }
        },
    };
    Ok(Json(SyncLogResponse { entries: state.store.sync_log(q.get("peer").map(String::as_str), limit).await? }))
}

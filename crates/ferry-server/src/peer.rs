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
use ferry_protocol::{
    AdoptUsersResponse, Alert, AlertsResponse, PeerStatus, PeerUser, PeerUsers, SyncHealth, SyncLogEntry,
    SyncLogResponse, SyncStatusResponse,
};
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

pub(crate) fn require_peer(who: &Authed) -> Result<(), ApiError> {
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

/// Whether a link is up (it syncs, by the stream or by polling).
pub(crate) fn is_up(p: &PeerStatus) -> bool {
    matches!(p.state.as_str(), "CONNECTED" | "DEGRADED")
}

/// How long changes have waited to cross a link at `now`: its recorded lag while it is up,
/// else the time since it last succeeded (or went down).
pub fn lag_at(p: &PeerStatus, now: u64) -> u64 {
    if is_up(p) {
        p.lag_ms_out.max(p.lag_ms_in)
    } else {
        now.saturating_sub(p.last_success_ms.or(p.down_since_ms).unwrap_or(now))
    }
}

/// The kinds of alert [`alerts`] raises, with their severity (the one place it is set).
pub const ALERT_KINDS: &[(&str, &str)] = &[("disconnected", "CRITICAL"), ("lag", "WARNING"), ("file_queue", "WARNING")];

/// The alerts the links' state raises at `now` (`links` as [`seen_at`] shows them),
/// critical first.
pub fn alerts(links: &[PeerStatus], t: &crate::config::AlertThresholds, now: u64) -> Vec<Alert> {
    let mut out = Vec::new();
    for p in links.iter().filter(|p| p.enabled) {
        let alert = |kind: &str, message: String, since_ms: u64| Alert {
            peer: p.name.clone(),
            kind: kind.into(),
            severity: ALERT_KINDS.iter().find(|k| k.0 == kind).expect("every kind is in ALERT_KINDS").1.into(),
            message,
            since_ms,
        };
        if !is_up(p)
            && let Some(since) = p.down_since_ms
            && now.saturating_sub(since) >= t.disconnected_critical.as_millis() as u64
        {
            let message = format!(
                "link '{}' has been {} for {} (over {}); last error: {}",
                p.name,
                p.state,
                shown_ms(now.saturating_sub(since)),
                shown_ms(t.disconnected_critical.as_millis() as u64),
                p.last_error.as_deref().unwrap_or("none recorded")
            );
            out.push(alert("disconnected", message, since));
        }
        let lag = lag_at(p, now);
        if lag >= t.lag_warning.as_millis() as u64 {
            let message = format!(
                "changes wait {} to cross link '{}' (over {})",
                shown_ms(lag),
                p.name,
                shown_ms(t.lag_warning.as_millis() as u64)
            );
            out.push(alert("lag", message, now.saturating_sub(lag)));
        }
        if p.file_queue > t.file_queue_warning {
            let message =
                format!("{} files wait to cross link '{}' (over {})", p.file_queue, p.name, t.file_queue_warning);
            out.push(alert("file_queue", message, now));
        }
    }
    out.sort_by(|a, b| (a.severity != "CRITICAL", &a.peer, &a.kind).cmp(&(b.severity != "CRITICAL", &b.peer, &b.kind)));
    out
}

/// Why `/health/sync` is unhealthy at `now`; empty when every enabled link is connected and
/// its lag is under the limit.
pub fn unhealthy(links: &[PeerStatus], t: &crate::config::AlertThresholds, now: u64) -> Vec<String> {
    let mut reasons = Vec::new();
    for p in links.iter().filter(|p| p.enabled) {
        if !is_up(p) {
            // Not the last error: this answer needs no token, and errors may name internals.
            let since =
                p.down_since_ms.map(|at| format!(" for {}", shown_ms(now.saturating_sub(at)))).unwrap_or_default();
            reasons.push(format!("link '{}' is {}{since}", p.name, p.state));
            continue;
        }
        let lag = lag_at(p, now);
        if lag >= t.health_max_lag.as_millis() as u64 {
            reasons.push(format!(
                "link '{}' lags {} (the limit is {})",
                p.name,
                shown_ms(lag),
                shown_ms(t.health_max_lag.as_millis() as u64)
            ));
        }
    }
    reasons
}

/// "3 h 5 min", "42 s", "250 ms".
fn shown_ms(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..120_000 => format!("{} s", ms / 1000),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The links as of now, incoming ones judged by their last call.
async fn links_now<S: Store>(store: &S) -> Result<Vec<PeerStatus>, ApiError> {
    let now = now_ms();
    Ok(store.links().await?.into_iter().map(|p| seen_at(p, now)).collect())
}

/// `GET /v1/admin/alerts`: the alerts that hold now.
pub async fn list_alerts<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    who: Authed,
) -> Result<Json<AlertsResponse>, ApiError> {
    require_admin(&who)?;
    let links = links_now(&state.store).await?;
    Ok(Json(AlertsResponse { alerts: alerts(&links, &state.alerts, now_ms()) }))
}

/// `GET /health/sync`: 200 when every enabled link is connected and under the lag limit,
/// else 503 naming why. No token: for load balancers and monitors.
pub async fn health<S: Store>(State(state): State<Arc<AppState<S>>>) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let links = links_now(&state.store).await?;
    let reasons = unhealthy(&links, &state.alerts, now_ms());
    let status =
        if reasons.is_empty() { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    let body = SyncHealth { status: if reasons.is_empty() { "ok" } else { "unhealthy" }.into(), reasons };
    let mut answer = (status, Json(body)).into_response();
    answer.extensions_mut().insert(crate::guard::Deliberate);
    Ok(answer)
}

/// Watches the links' alerts until `stop` turns true, writing each alert to the sync log
/// when it is raised and when it clears (every `every`), and telling `hooks` of both; each
/// look is a sample of the links' lag for the dashboard's chart ([`crate::lag`]).
pub async fn watch_alerts<S: Store + Clone>(
    store: S,
    thresholds: crate::config::AlertThresholds,
    hooks: ferry_peer::webhooks::Hooks,
    keep: std::time::Duration,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut active: Vec<Alert> = Vec::new();
    loop {
        let now = now_ms();
        if let Ok(links) = store.links().await {
            let links: Vec<PeerStatus> = links.into_iter().map(|p| seen_at(p, now)).collect();
            crate::lag::HISTORY.record(&links, now);
            let found = alerts(&links, &thresholds, now);
            let same = |a: &Alert, b: &Alert| a.peer == b.peer && a.kind == b.kind;
            let raised = found.iter().filter(|a| !active.iter().any(|b| same(a, b)));
            let cleared = active.iter().filter(|a| !found.iter().any(|b| same(a, b)));
            if !hooks.is_empty() {
                let news =
                    raised.clone().map(|a| ("alert.raised", a)).chain(cleared.clone().map(|a| ("alert.cleared", a)));
                for (name, alert) in news {
                    // Retries take minutes: the watch goes on meanwhile.
                    let (store, hooks) = (store.clone(), hooks.clone());
                    let event = ferry_peer::webhooks::Event {
                        name,
                        peer: alert.peer.clone(),
                        data: serde_json::to_value(alert).expect("an alert serializes"),
                    };
                    tokio::spawn(async move { hooks.deliver(&store, event, keep.as_millis() as u64).await });
                }
            }
            let entries: Vec<SyncLogEntry> = raised
                .map(|a| (a, a.severity.clone(), a.message.clone()))
                .chain(cleared.map(|a| (a, "SUCCESS".to_owned(), format!("cleared: {}", a.message))))
                .map(|(a, status, message)| SyncLogEntry {
                    at_ms: now,
                    peer: a.peer.clone(),
                    kind: "alert".into(),
                    direction: "both".into(),
                    status,
                    error: Some(message),
                    ..SyncLogEntry::default()
                })
                .collect();
            for entry in entries {
                if entry.status == "CRITICAL" {
                    tracing::error!(peer = %entry.peer, "{}", entry.error.as_deref().unwrap_or_default());
                } else {
                    tracing::warn!(peer = %entry.peer, "{}", entry.error.as_deref().unwrap_or_default());
                }
                if let Err(e) = store.log_sync(entry, keep.as_millis() as u64).await {
                    tracing::warn!("cannot write an alert to the sync log: {e}");
                }
            }
            active = found;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlertThresholds;

    const HOUR: u64 = 3_600_000;

    fn link(state: &str) -> PeerStatus {
        PeerStatus { name: "cloud".into(), state: state.into(), enabled: true, ..PeerStatus::default() }
    }

    #[test]
    fn a_day_down_is_critical_and_an_hour_behind_is_a_warning() {
        let t = AlertThresholds::default();
        let start = 1_800_000_000_000;
        let mut down = link("DISCONNECTED");
        down.down_since_ms = Some(start);
        down.last_success_ms = Some(start - 1000);
        // Injected time: an outage of 23 h lags, one of 24 h is critical.
        let at_23h = alerts(std::slice::from_ref(&down), &t, start + 23 * HOUR);
        assert_eq!(at_23h.iter().map(|a| a.kind.as_str()).collect::<Vec<_>>(), ["lag"]);
        let at_24h = alerts(std::slice::from_ref(&down), &t, start + 24 * HOUR);
        assert_eq!(
            at_24h.iter().map(|a| (a.kind.as_str(), a.severity.as_str())).collect::<Vec<_>>(),
            [("disconnected", "CRITICAL"), ("lag", "WARNING")]
        );
        assert_eq!(at_24h[0].since_ms, start);
        assert!(at_24h[0].message.contains("24 h 0 min"), "{}", at_24h[0].message);
        assert_eq!(unhealthy(&[down], &t, start + 1000), ["link 'cloud' is DISCONNECTED for 1 s"]);

        let mut up = link("CONNECTED");
        up.file_queue = 501;
        up.lag_ms_in = 61_000;
        assert_eq!(
            alerts(std::slice::from_ref(&up), &t, start).iter().map(|a| a.kind.as_str()).collect::<Vec<_>>(),
            ["file_queue"]
        );
        assert_eq!(unhealthy(std::slice::from_ref(&up), &t, start), ["link 'cloud' lags 61 s (the limit is 60 s)"]);
        up.lag_ms_in = 59_000;
        assert!(unhealthy(std::slice::from_ref(&up), &t, start).is_empty());
        up.enabled = false;
        up.state = "DISCONNECTED".into();
        assert!(alerts(std::slice::from_ref(&up), &t, start).is_empty() && unhealthy(&[up], &t, start).is_empty());
    }

    #[test]
    fn a_link_the_peer_started_goes_down_when_it_stops_calling() {
        let mut p = link("CONNECTED");
        p.direction = "incoming".into();
        p.last_heartbeat_ms = Some(1000);
        assert_eq!(seen_at(p.clone(), 1000 + INCOMING_QUIET_MS).state, "CONNECTED");
        let quiet = seen_at(p, 1001 + INCOMING_QUIET_MS);
        assert_eq!((quiet.state.as_str(), quiet.down_since_ms), ("DISCONNECTED", Some(1000)));
    }
}

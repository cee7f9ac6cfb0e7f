//! `GET /v1/stream`: a WebSocket that tells a device, within milliseconds of a commit, that
//! rows it may read changed; the device then pulls. It carries notifications only, never
//! rows, so a missed message costs at most a later pull (devices also pull on reconnect and
//! at an interval).
//!
//! Messages from the server, JSON text:
//! - `{"type": "hello", "ping_interval_ms": 15000}` once, on connect;
//! - `{"type": "changed"}` after commits touching rows the device's user may read, other than
//!   the device's own pushes (a burst of commits while one message is being sent becomes one
//!   message);
//! - `{"type": "files"}` after another device of the user uploaded a file to this server
//!   process (its file worker may fetch it now; bursts coalesce the same way).
//!
//! A stream whose device is revoked is closed within [`REAUTH_INTERVAL`] with close code
//! [`CLOSE_REVOKED`] (4401) and a reason.
//!
//! The server sends a WebSocket ping every `ping_interval_ms`; a client that hears nothing
//! for three intervals should treat the stream as down. Which process accepted a change does
//! not matter: on PostgreSQL every server process LISTENs to the database's notifications.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use ferry_store::{Notice, Store};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::auth::Authed;
use crate::{ApiError, AppState};

pub const PING_INTERVAL: Duration = Duration::from_secs(15);

pub async fn stream<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Authed(who): Authed,
    headers: axum::http::HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let token = crate::auth::bearer(&headers)?.to_owned();
    let ws = ws.map_err(|e| {
        ApiError::BadRequest(format!("GET /v1/stream is a WebSocket: send the upgrade handshake ({e})"))
    })?;
    let notices = state.store.notices();
    let files = state.files.notices();
    // The messages are tiny: small buffers keep thousands of open streams cheap (the
    // defaults, 128 KiB to read per connection, cost ~130 KB of memory per stream).
    let ws = ws.read_buffer_size(4096).write_buffer_size(4096).max_message_size(64 * 1024);
    Ok(ws.on_upgrade(move |socket| {
        serve(socket, notices, files, who.user_id, who.device_id, Revocation::new(state, token))
    }))
}

/// How often an open stream checks that its device's token still holds. Revoking a device
/// (`ferry token revoke`, `POST /v1/admin/devices/{id}/revoke`, possibly by another process)
/// closes its streams within this time.
pub const REAUTH_INTERVAL: Duration = Duration::from_secs(5);

/// The close code sent to a stream whose device was revoked (4000–4999: the application's).
pub const CLOSE_REVOKED: u16 = 4401;

/// Whether a stream's token still holds, checked at most every [`REAUTH_INTERVAL`].
struct Revocation<S> {
    state: Arc<AppState<S>>,
    token: String,
}

impl<S: Store> Revocation<S> {
    fn new(state: Arc<AppState<S>>, token: String) -> Self {
        Revocation { state, token }
    }

    /// The token no longer authenticates (a store that cannot answer now is no proof).
    async fn revoked(&self) -> bool {
        matches!(self.state.store.authenticate(&self.token).await, Ok(None))
    }
}

/// Whether a notice concerns the device; drains the ones already queued (one message covers
/// them). `None`: the channel closed.
fn concerning(
    n: Result<Notice, RecvError>,
    rx: &mut tokio::sync::broadcast::Receiver<Notice>,
    user: &str,
    device: &str,
) -> Option<bool> {
    let relevant = match n {
        Ok(n) => n.concerns(user, device),
        // Fell behind: something may have been relevant.
        Err(RecvError::Lagged(_)) => true,
        Err(RecvError::Closed) => return None,
    };
    if relevant {
        loop {
            match rx.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return None,
            }
        }
    }
    Some(relevant)
}

async fn serve<S: Store>(
    mut socket: WebSocket,
    mut notices: tokio::sync::broadcast::Receiver<Notice>,
    mut files: tokio::sync::broadcast::Receiver<Notice>,
    user: String,
    device: String,
    revocation: Revocation<S>,
) {
    let hello = serde_json::json!({"type": "hello", "ping_interval_ms": PING_INTERVAL.as_millis() as u64});
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    let changed = Message::Text(r#"{"type":"changed"}"#.into());
    let files_changed = Message::Text(r#"{"type":"files"}"#.into());
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    let mut reauth = tokio::time::interval(REAUTH_INTERVAL);
    reauth.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reauth.tick().await;
    loop {
        tokio::select! {
            _ = reauth.tick() => {
                if revocation.revoked().await {
                    let frame = axum::extract::ws::CloseFrame {
                        code: CLOSE_REVOKED,
                        reason: "device revoked: its token no longer holds; create a new one with `ferry token create`".into(),
                    };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
            n = notices.recv() => match concerning(n, &mut notices, &user, &device) {
                None => return,
                Some(false) => {}
                Some(true) => {
                    if socket.send(changed.clone()).await.is_err() {
                        return;
                    }
                }
            },
            n = files.recv() => match concerning(n, &mut files, &user, &device) {
                None => return,
                Some(false) => {}
                Some(true) => {
                    if socket.send(files_changed.clone()).await.is_err() {
                        return;
                    }
                }
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            m = socket.recv() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

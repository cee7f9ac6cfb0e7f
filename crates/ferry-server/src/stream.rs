//! `GET /v1/stream`: a WebSocket that tells a device, within milliseconds of a commit, that
//! rows it may read changed; the device then pulls. It carries notifications only, never
//! rows, so a missed message costs at most a later pull (devices also pull on reconnect and
//! at an interval).
//!
//! Messages from the server, JSON text ([`StreamMessage`]):
//! - `{"type": "hello", "ping_interval_ms": 15000}` once, on connect;
//! - `{"type": "changed"}` after commits touching rows the device's user may read, other than
//!   the device's own pushes (a burst of commits while one message is being sent becomes one
//!   message);
//! - `{"type": "files"}` after another device of the user uploaded a file to this server
//!   process (its file worker may fetch it now; bursts coalesce the same way).
//!
//! A stream whose device is revoked is closed with close code [`CLOSE_REVOKED`] (4401) and a
//! reason: at once when revoked through this process, within [`REAUTH_INTERVAL`] otherwise.
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
use ferry_protocol::StreamMessage;
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
    // What the user may read now, to judge which notices concern them.
    let scope = state.store.scope(&who.user_id).await?;
    Ok(ws.on_upgrade(move |socket| {
        let client = crate::metrics::StreamClient::open();
        let reader =
            Reader { state: state.clone(), user: who.user_id, device: who.device_id.clone(), peer: who.peer, scope };
        let watched = Watched::new(state, who.device_id.clone(), token);
        async move {
            let _counted = client;
            serve(socket, notices, files, reader, watched).await;
        }
    }))
}

/// How often a server process checks that the devices of its open streams are still live.
/// A device revoked through this process (`POST /v1/admin/devices/{id}/revoke`) has its
/// streams closed at once; one revoked elsewhere (`ferry token revoke`, another server
/// process) within this time.
pub const REAUTH_INTERVAL: Duration = Duration::from_secs(2);

/// The close code sent to a stream whose device was revoked (4000–4999: the application's).
pub const CLOSE_REVOKED: u16 = 4401;

/// The devices with open streams in this process, and the news of their revocation.
///
/// One task per process asks the store every [`REAUTH_INTERVAL`] which of these devices are
/// no longer live, in one query however many streams are open (a check per stream would cost
/// thousands of queries a second), and announces them; so does the admin endpoint that
/// revokes. Each stream closes when its device is announced.
pub struct Revocations {
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    news: tokio::sync::broadcast::Sender<Arc<[String]>>,
    watching: std::sync::atomic::AtomicBool,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            open: std::sync::Mutex::default(),
            news: tokio::sync::broadcast::channel(64).0,
            watching: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Revocations {
    /// Tells the open streams of `devices` that they were revoked.
    pub fn announce(&self, devices: Vec<String>) {
        if !devices.is_empty() {
            let _ = self.news.send(devices.into());
        }
    }

    fn devices(&self) -> Vec<String> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }

    fn count(&self, device: &str, open: bool) {
        let mut map = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if open {
            *map.entry(device.to_owned()).or_default() += 1;
        } else if let Some(n) = map.get_mut(device) {
            *n -= 1;
            if *n == 0 {
                map.remove(device);
            }
        }
    }
}

/// A stream's place in [`Revocations`]: counted while it lives.
struct Watched<S: Store> {
    state: Arc<AppState<S>>,
    device: String,
    token: String,
    news: tokio::sync::broadcast::Receiver<Arc<[String]>>,
}

impl<S: Store> Watched<S> {
    fn new(state: Arc<AppState<S>>, device: String, token: String) -> Self {
        let revocations = &state.revocations;
        let news = revocations.news.subscribe();
        revocations.count(&device, true);
        if !revocations.watching.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tokio::spawn(watch(Arc::downgrade(&state)));
        }
        Watched { state, device, token, news }
    }

    /// Resolves when the device is revoked; `false` when this process stops announcing.
    async fn revoked(&mut self) -> bool {
        loop {
            match self.news.recv().await {
                Ok(ids) if ids.contains(&self.device) => return true,
                Ok(_) => {}
                // Missed news: ask about this token itself (a store that cannot answer now
                // is no proof).
                Err(RecvError::Lagged(_)) => {
                    if matches!(self.state.store.authenticate(&self.token).await, Ok(None)) {
                        return true;
                    }
                }
                Err(RecvError::Closed) => return false,
            }
        }
    }
}

impl<S: Store> Drop for Watched<S> {
    fn drop(&mut self) {
        self.state.revocations.count(&self.device, false);
    }
}

/// The process's watch over its streams' devices (see [`Revocations`]); ends with the server.
async fn watch<S: Store>(state: std::sync::Weak<AppState<S>>) {
    let mut every = tokio::time::interval(REAUTH_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(state) = state.upgrade() else { return };
        let devices = state.revocations.devices();
        if devices.is_empty() {
            continue;
        }
        match state.store.revoked_among(&devices).await {
            Ok(revoked) => state.revocations.announce(revoked),
            Err(e) => tracing::warn!(error = %e, "cannot check the devices of open streams; trying again"),
        }
    }
}

/// A stream's device and what its user may read (their scope under the `read` rules), kept
/// up to date as notices about the tables the rules' subqueries read arrive.
struct Reader<S> {
    state: Arc<AppState<S>>,
    user: String,
    device: String,
    /// A peer server: every change is news but its own.
    peer: bool,
    scope: ferry_store::Scope,
}

impl<S: Store> Reader<S> {
    /// Whether a change is news for the device: it touched a row the user may read, or it
    /// changed what the user may read (rows moved in or out).
    async fn judge(&mut self, n: &Notice) -> bool {
        if self.peer {
            return n.origin.as_deref() != Some(self.device.as_str());
        }
        let schema = self.state.store.schema();
        let mut moved = false;
        if n.moves_scopes(schema) {
            match self.state.store.scope(&self.user).await {
                Ok(now) if now != self.scope => {
                    self.scope = now;
                    moved = true;
                }
                Ok(_) => {}
                // Unknown: something may have moved.
                Err(_) => moved = true,
            }
        }
        moved || n.concerns(&self.user, &self.device, schema, &self.scope)
    }
}

/// Whether a notice concerns the device; drains the ones already queued (one message covers
/// them). `None`: the channel closed.
async fn concerning<S: Store>(
    n: Result<Notice, RecvError>,
    rx: &mut tokio::sync::broadcast::Receiver<Notice>,
    reader: &mut Reader<S>,
) -> Option<bool> {
    let relevant = match n {
        Ok(n) => reader.judge(&n).await,
        // Fell behind: something may have been relevant.
        Err(RecvError::Lagged(_)) => true,
        Err(RecvError::Closed) => return None,
    };
    if relevant {
        // The skipped notices may have changed what the user may read: the scope is read
        // again, so that later notices are judged by what holds now.
        let mut stale = false;
        loop {
            match rx.try_recv() {
                Ok(n) => stale |= n.moves_scopes(reader.state.store.schema()),
                Err(TryRecvError::Lagged(_)) => stale = true,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return None,
            }
        }
        if stale && let Ok(now) = reader.state.store.scope(&reader.user).await {
            reader.scope = now;
        }
    }
    Some(relevant)
}

async fn serve<S: Store>(
    mut socket: WebSocket,
    mut notices: tokio::sync::broadcast::Receiver<Notice>,
    mut files: tokio::sync::broadcast::Receiver<Notice>,
    mut reader: Reader<S>,
    mut watched: Watched<S>,
) {
    let hello = StreamMessage::Hello { ping_interval_ms: PING_INTERVAL.as_millis() as u64 };
    if socket.send(Message::Text(hello.to_text().into())).await.is_err() {
        return;
    }
    let changed = Message::Text(StreamMessage::Changed.to_text().into());
    let files_changed = Message::Text(StreamMessage::Files.to_text().into());
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            revoked = watched.revoked() => {
                if revoked {
                    let frame = axum::extract::ws::CloseFrame {
                        code: CLOSE_REVOKED,
                        reason: "device revoked: its token no longer holds; create a new one with `ferry token create`".into(),
                    };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                }
                return;
            }
            n = notices.recv() => match concerning(n, &mut notices, &mut reader).await {
                None => return,
                Some(false) => {}
                Some(true) => {
                    if socket.send(changed.clone()).await.is_err() {
                        return;
                    }
                }
            },
            n = files.recv() => match concerning(n, &mut files, &mut reader).await {
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

//! Server peering: the state of each link, its sync log, and the users two servers share
//! (`docs/peering.md`).

use serde::{Deserialize, Serialize};

/// The connection states of a link, as `ferry sync --watch` names a device's.
pub const LINK_STATES: [&str; 4] = ["CONNECTED", "DEGRADED", "DISCONNECTED", "RECONNECTING"];

/// One link between this server and a peer, as `GET /v1/admin/sync/status` and `ferry peer
/// status` show it. Times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerStatus {
    /// The `[peers.NAME]` section, or for a link the peer started, the peer's device name.
    pub name: String,
    /// `outgoing` when this server starts the link (it has the `[peers.NAME]` section),
    /// `incoming` when the peer does.
    pub direction: String,
    /// This server's role (`[server] role`).
    pub role: String,
    /// The peer's role, once known.
    pub peer_role: Option<String>,
    /// The peer's address (outgoing links).
    pub url: Option<String>,
    pub enabled: bool,
    /// `CONNECTED`, `DEGRADED` (it syncs, but some rows were refused), `DISCONNECTED` or
    /// `RECONNECTING` (see [`LINK_STATES`]).
    pub state: String,
    /// The retry schedule after failures, in milliseconds (the last repeats).
    pub backoff_ms: Vec<u64>,
    /// Failures in a row.
    pub failures: u32,
    /// When the next attempt is due, while retrying.
    pub next_attempt_ms: Option<u64>,
    /// When the peer last answered (outgoing), or last called (incoming).
    pub last_heartbeat_ms: Option<u64>,
    /// When a run last finished without failing.
    pub last_success_ms: Option<u64>,
    /// Since when the link has been down (not connected), while it is.
    pub down_since_ms: Option<u64>,
    /// How long changes have waited to cross, each way: 0 when caught up, else the time
    /// since that direction was last caught up.
    pub lag_ms_out: u64,
    pub lag_ms_in: u64,
    /// Changes known to be waiting to cross, each way (at the last run).
    pub lag_changes_out: u64,
    pub lag_changes_in: u64,
    /// Rows sent and received since the link was set up.
    pub rows_out: u64,
    pub rows_in: u64,
    /// Files waiting to cross.
    pub file_queue: u64,
    /// The last failure's message, while failing.
    pub last_error: Option<String>,
    /// Outgoing links: the peer's store id, and how far each way has crossed (this store's
    /// feed cursor out, the peer's in).
    #[serde(default)]
    pub far_store_id: Option<String>,
    #[serde(default)]
    pub cursor_out: String,
    #[serde(default)]
    pub cursor_in: String,
    /// Which way a compaction horizon passed this link's cursor (`in`: the peer's history,
    /// `out`: this store's), until the link caught up by difference at its next attempt
    /// (`ferry peer resync` starts that way over from the start instead).
    #[serde(default)]
    pub behind: Option<String>,
}

/// `GET /v1/admin/sync/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncStatusResponse {
    /// This server's role, when it has one.
    pub role: Option<String>,
    pub peers: Vec<PeerStatus>,
}

/// One run of a link (or a warning about one), as the sync log keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncLogEntry {
    /// Set by the store.
    #[serde(default)]
    pub id: i64,
    pub at_ms: u64,
    pub peer: String,
    /// `rows`, `users`, `files`, `alert`, `integrity`, `repair`, `full-sync`, `resync`,
    /// `catch-up` or `webhook`.
    pub kind: String,
    /// `push` (to the peer), `pull` (from it) or `both`.
    pub direction: String,
    /// `SUCCESS`, `WARNING`, `FAILED` or `CRITICAL`.
    pub status: String,
    pub rows: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// `GET /v1/admin/sync/log`: newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncLogResponse {
    pub entries: Vec<SyncLogEntry>,
}

/// A user as two peers share it: the same id on both sides, so that owner columns and
/// sharing rules mean the same.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerUser {
    pub id: String,
    pub name: String,
}

/// `GET /v1/peer/users` (the answer) and `POST /v1/peer/users` (the request): every user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerUsers {
    pub users: Vec<PeerUser>,
}

/// `POST /v1/peer/users`: the users this server did not take, each with why (a name another
/// user already has here).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptUsersResponse {
    pub added: usize,
    pub refused: Vec<String>,
}

/// The request header a server linking as a peer sends, naming itself (its `[peers.NAME]`
/// link): its token must hold a server role (`main` or `cloud`).
pub const PEER_HEADER: &str = "ferry-peer";

/// An alert about a link, as `GET /v1/admin/alerts` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub peer: String,
    /// `lag`, `file_queue` or `disconnected`.
    pub kind: String,
    /// `WARNING` or `CRITICAL`.
    pub severity: String,
    pub message: String,
    /// Since when the condition holds (milliseconds since the Unix epoch).
    pub since_ms: u64,
}

/// `GET /v1/admin/alerts`: the alerts that hold now, critical first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsResponse {
    pub alerts: Vec<Alert>,
}

/// `GET /health/sync`: `ok` (200) when every enabled link is connected and its lag is under
/// the limit, else `unhealthy` (503) with the reasons.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncHealth {
    pub status: String,
    pub reasons: Vec<String>,
}

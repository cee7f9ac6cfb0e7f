//! Full sync (`docs/full-sync.md`): a whole data set moved between two servers as a
//! snapshot, in phases (`snapshot`, `transfer`, `restore`, `verify`), with progress, cancel,
//! resume and history. The operator's side (`/v1/admin/full-sync…`, `ferry full-sync`) and
//! the peer's side (`/v1/peer/full-sync/…`: chunks, the peer's snapshot or restore).

use serde::{Deserialize, Serialize};

/// The phases of a full sync, in order.
pub const FULL_SYNC_PHASES: [&str; 4] = ["snapshot", "transfer", "restore", "verify"];

/// The header carrying a chunk's SHA-256 (lowercase hex) on `PUT` and `GET` of a chunk.
pub const CHUNK_SHA256_HEADER: &str = "ferry-chunk-sha256";

/// `POST /v1/admin/full-sync`: start a full sync with a peer (`[peers.NAME]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullSyncRequest {
    /// `push` (this server's data set to the peer) or `pull` (the peer's to this server).
    pub direction: String,
    pub peer: String,
    #[serde(default)]
    pub options: FullSyncOptions,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullSyncOptions {
    /// Only these tables (default: every table that crosses the link).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Compress the snapshot's chunks (zstd).
    #[serde(default)]
    pub compress: bool,
    /// Compare both sides after the restore (an integrity check, no repair).
    #[serde(default)]
    pub verify: bool,
    /// A URL told of the outcome: the finished run is POSTed to it as JSON.
    #[serde(default)]
    pub notify: Option<String>,
}

/// One phase's progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseProgress {
    /// `snapshot`, `transfer`, `restore` or `verify` ([`FULL_SYNC_PHASES`]).
    pub name: String,
    /// `pending`, `running`, `done`, `skipped` or `failed`.
    pub state: String,
    pub percent: f64,
    pub rows_done: u64,
    pub rows_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second (rows per second where the phase moves no bytes), so far.
    pub speed: f64,
    /// The time left at that speed.
    pub eta_ms: Option<u64>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
}

/// A full sync, as it runs (`GET /v1/admin/full-sync/{id}`) and as the history keeps it.
/// Times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullSyncRun {
    pub id: String,
    /// `push` or `pull`.
    pub direction: String,
    pub peer: String,
    /// How the rows moved: `snapshot` (a consistent snapshot in checksummed chunks, restored
    /// through the merge rules).
    pub method: String,
    pub tables: Vec<String>,
    pub compress: bool,
    pub verify: bool,
    /// `RUNNING`, `SUCCESS`, `FAILED` or `CANCELLED`.
    pub state: String,
    /// The phase running (or where it ended).
    pub phase: String,
    pub phases: Vec<PhaseProgress>,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// When the process running it last reported (a run that stopped reporting is stuck and
    /// may be cleared).
    pub heartbeat_ms: u64,
    /// Rows in the snapshot, and rows the restore changed on the target.
    pub rows: u64,
    pub changed: u64,
    /// Rows left out by this server's `[full_sync.exclude]` (demo data).
    #[serde(default)]
    pub excluded: u64,
    /// The snapshot's size (as stored and sent), and the bytes actually sent (chunks sent
    /// again after a broken transfer included).
    pub bytes: u64,
    pub bytes_sent: u64,
    /// Transfer attempts, and chunks a later attempt did not send again (it resumed).
    pub attempts: u32,
    pub resumed_chunks: u64,
    /// Bytes per second over the whole run.
    pub speed: f64,
    /// The source's feed position the snapshot stands for.
    pub cursor: Option<String>,
    /// With `verify`: whether both sides held the same rows after the restore, and how many
    /// differed (the target may hold newer versions of some).
    pub verified_equal: Option<bool>,
    pub differences: Option<u64>,
    /// An operator asked to cancel it.
    #[serde(default)]
    pub cancel_requested: bool,
    pub error: Option<String>,
    /// The URL told of the outcome, and how that went.
    #[serde(default)]
    pub notify: Option<String>,
    #[serde(default)]
    pub notified: Option<String>,
}

/// `GET /v1/admin/full-sync`: the runs, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullSyncList {
    pub runs: Vec<FullSyncRun>,
}

/// One chunk of a snapshot: rows of one table, as a pull page body (zstd-compressed when the
/// snapshot is).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkInfo {
    pub n: u64,
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// What a snapshot holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotManifest {
    pub id: String,
    pub tables: Vec<String>,
    /// The source's feed position the snapshot stands for.
    pub cursor: String,
    pub compressed: bool,
    pub chunks: Vec<ChunkInfo>,
    pub rows: u64,
    pub bytes: u64,
}

/// `POST /v1/peer/full-sync/{id}/snapshot`: the peer takes a snapshot of these tables (a
/// pull); its progress and manifest are read with `GET /v1/peer/full-sync/{id}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSnapshotRequest {
    pub tables: Vec<String>,
    #[serde(default)]
    pub compress: bool,
}

/// `GET /v1/peer/full-sync/{id}`: the peer's side of a full sync.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerFullSync {
    pub id: String,
    /// `RECEIVING` (chunks arrive), `SNAPSHOT` (taking one), `READY` (the snapshot can be
    /// fetched), `RESTORING`, `RESTORED` or `FAILED`.
    pub state: String,
    /// The chunks this side holds, verified (a transfer resumes after them).
    pub held: Vec<u64>,
    pub rows_done: u64,
    pub rows_total: u64,
    /// Rows the restore changed.
    pub changed: u64,
    pub manifest: Option<SnapshotManifest>,
    pub error: Option<String>,
}

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

/// `POST /v1/snapshot`: a device asks for a snapshot of the rows it may read, for its first
/// hydrate (docs/protocol.md, "A first hydrate from a snapshot").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSnapshotRequest {
    /// Only these tables (every table when absent); the device's pull cursor of the same
    /// selection reads on from the snapshot's.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
}

/// `POST /v1/snapshot` and `GET /v1/snapshot/{id}?after=N`: a device's snapshot as it is
/// taken. Its chunks are pages of the device's feed as of one moment, each a pull page's
/// JSON (`cursor` `""`, `more` false); `table` of a chunk names the tables its rows are of,
/// comma-separated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSnapshot {
    pub id: String,
    /// `running` (chunks are being written), `done` or `failed`.
    pub state: String,
    /// The chunks written so far, from chunk `after` on (every one without it).
    pub chunks: Vec<ChunkInfo>,
    /// Chunks, rows and bytes written so far.
    pub written: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Once `done`: the pull cursor to read on from, after every chunk is applied.
    pub cursor: Option<String>,
    pub error: Option<String>,
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

/// The register clocks of every row of a pull page (a full sync's chunk), without reading
/// the values: what both sides hold after a restore, recorded for the link. The same clocks
/// [`decode_page`](crate::decode_page) gives each row's state (`clock` for every column with
/// a value, unless `clocks` names its own); rows are not checked against a schema.
///
/// # Errors
/// Malformed JSON, or a row without its clocks, or a clock that is not one.
pub fn page_clocks(json: &[u8]) -> Result<Vec<(String, String, ferry_core::strategy::RowClocks)>, String> {
    use std::collections::BTreeMap;

    use serde::de::IgnoredAny;

    #[derive(Deserialize)]
    struct Page {
        rows: Vec<Row>,
    }
    #[derive(Deserialize)]
    struct Row {
        table: String,
        key: String,
        exists_at: String,
        clock: String,
        #[serde(default)]
        clocks: BTreeMap<String, String>,
        #[serde(default)]
        values: BTreeMap<String, IgnoredAny>,
    }
    let page: Page = serde_json::from_slice(json).map_err(|e| format!("a chunk is not a page of rows: {e}"))?;
    let hlc = |s: &str| s.parse::<ferry_core::Hlc>().map_err(|e| format!("a chunk holds a bad clock: {e}"));
    page.rows
        .into_iter()
        .map(|r| {
            let clock = hlc(&r.clock)?;
            let mut cols = BTreeMap::new();
            for name in r.values.into_keys() {
                let at = match r.clocks.get(&name) {
                    Some(c) => hlc(c)?,
                    None => clock,
                };
                cols.insert(name, at);
            }
            let exists = hlc(&r.exists_at)?;
            Ok((r.table, r.key, ferry_core::strategy::RowClocks { exists, cols }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_core::schema::Schema;
    use ferry_core::{Hlc, RowState, SiteId, Value};

    use crate::{PageOut, RowOut};

    #[test]
    fn page_clocks_are_the_clocks_of_the_decoded_states() {
        let schema =
            Schema::parse("CREATE TABLE t (id text PRIMARY KEY, a text, b integer, c real);", &BTreeMap::new())
                .unwrap();
        let at = |ms: u64, site: u64| Hlc::new(1_700_000_000_000 + ms, 0, SiteId(site));
        let mut one = RowState::inserted([("a".to_owned(), Value::Text("x".into()))], at(1, 1));
        one.update([("b".to_owned(), Value::Integer(2))], at(5, 2));
        let mut gone =
            RowState::inserted([("a".to_owned(), Value::Null), ("c".to_owned(), Value::Real(0.5))], at(2, 1));
        gone.delete(at(9, 3));
        let states = [("k1", one), ("k2", gone), ("k3", RowState::inserted([], at(4, 4)))];
        let table = schema.table("t").unwrap();
        let rows = || states.iter().map(|(k, s)| RowOut { table, key: k, state: s, base: None, seen: None });
        let json = serde_json::to_vec(&PageOut { rows, cursor: "", more: false, removed: &[] }).unwrap();
        let decoded = crate::decode_page(&schema, &json).unwrap();
        let clocks = super::page_clocks(&json).unwrap();
        assert_eq!(clocks.len(), 3);
        for ((t, k, c), (dt, dk, ds)) in clocks.iter().zip(&decoded.rows) {
            assert_eq!((t, k), (dt, dk));
            assert_eq!(c, &ds.clocks(), "{k}");
        }
        assert!(super::page_clocks(b"{\"rows\": [{\"table\": \"t\"}]}").is_err());
    }
}

//! Integrity checks between two servers (`docs/integrity.md`): the digest tree a peer
//! answers about (`POST /v1/peer/digests`), the rows it hands over for a repair
//! (`POST /v1/peer/rows`), and the report of a check (`POST /v1/admin/integrity`,
//! `ferry integrity`).

use serde::{Deserialize, Serialize};

/// The most node summaries or row lists one digest request may ask for.
pub const MAX_DIGEST_ASK: usize = 4096;
/// The most keys one `POST /v1/peer/rows` may name.
pub const MAX_PEER_ROWS: usize = 10_000;

/// `POST /v1/peer/digests`: summaries of nodes of one table's digest tree, and the rows under
/// others (`ferry_core::digest`: a node is a prefix of key hashes in hex, `""` the root).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestRequest {
    pub table: String,
    /// Names one comparison: the answering server reads the table once per session, and
    /// answers the session's later requests from what it read.
    pub session: String,
    /// Tombstones of deletions before this wall time (ms since the epoch) are left out: either
    /// side may have compacted them.
    #[serde(default)]
    pub tombstones_from_ms: u64,
    /// Prefixes to summarise.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Prefixes whose rows to list.
    #[serde(default)]
    pub rows: Vec<String>,
}

/// A node of the tree: how many rows it holds and the sum of their digests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestNode {
    pub prefix: String,
    pub count: u64,
    /// 16 hex digits.
    pub digest: String,
}

/// A row under a listed node: its key and the digest of its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestRow {
    pub key: String,
    /// 16 hex digits.
    pub version: String,
    /// The row is a tombstone.
    #[serde(default)]
    pub deleted: bool,
}

/// The answer to a [`DigestRequest`]: the nodes in the order asked, and the rows of every
/// listed node together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestResponse {
    pub nodes: Vec<DigestNode>,
    pub rows: Vec<DigestRow>,
    /// The answering store's newest compaction bound (ms; 0 when never compacted).
    pub compacted_before_ms: u64,
    /// The answering store's feed position taken just before it read the table for this
    /// session: a link catching up by difference reads on from it.
    #[serde(default)]
    pub cursor: String,
}

/// `POST /v1/peer/rows`: the stored states of these keys (answered as a pull page).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRowsRequest {
    pub table: String,
    pub keys: Vec<String>,
}

/// `POST /v1/admin/integrity`: compare this server's store with a peer's (`[peers.NAME]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityRequest {
    pub peer: String,
    /// The tables to compare (default: every table that crosses the link).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Send the newer versions of differing rows both ways, through the merge rules.
    #[serde(default)]
    pub repair: bool,
}

/// What an integrity check found (and repaired).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityReport {
    pub peer: String,
    pub started_ms: u64,
    pub duration_ms: u64,
    /// `SUCCESS` (every table equal), `FAILED` (differences, not repaired) or `REPAIRED`
    /// (differences found and repaired; a check after it finds none).
    pub status: String,
    pub tables: Vec<TableIntegrity>,
    /// Requests made to the peer, and the bytes of their bodies each way.
    pub requests: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// One table's comparison.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableIntegrity {
    pub table: String,
    /// Rows (tombstones included) on this server and on the peer.
    pub here_rows: u64,
    pub there_rows: u64,
    /// The order-independent digests over keys and versions (16 hex digits each).
    pub here_digest: String,
    pub there_digest: String,
    pub equal: bool,
    /// Every row that differs.
    pub differences: Vec<RowDifference>,
    /// Rows sent each way by a repair.
    #[serde(default)]
    pub repaired_out: u64,
    #[serde(default)]
    pub repaired_in: u64,
    /// Rows a repair could not mend, with why.
    #[serde(default)]
    pub repair_warnings: Vec<String>,
}

/// One row that differs between this server and the peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowDifference {
    pub key: String,
    /// `changed` (both hold it, in different versions), `only_here` or `only_there`.
    pub kind: String,
    /// The version digest on each side, where held.
    pub here: Option<String>,
    pub there: Option<String>,
    /// Whether each side's version is a tombstone.
    #[serde(default)]
    pub here_deleted: bool,
    #[serde(default)]
    pub there_deleted: bool,
}

/// `POST /v1/catch-up`: a device whose cursor is older than the server's compaction horizon
/// compares its rows with the ones it may read, by the digest tree (as
/// [`DigestRequest`]), instead of downloading everything again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatchUpRequest {
    /// Names one catch-up: the server reads the device's rows once for it.
    pub session: String,
    pub table: String,
    /// The tables the device pulls (its `--tables`; default every table).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub rows: Vec<String>,
}

/// The answer to a [`CatchUpRequest`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatchUpResponse {
    /// Where the device's pull goes on from once it holds the rows it compared against.
    pub cursor: String,
    pub nodes: Vec<DigestNode>,
    pub rows: Vec<DigestRow>,
}

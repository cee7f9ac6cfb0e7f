//! Ferry's wire format, protocol v1: the JSON bodies of `/v1` and the conversion between
//! them and the core's row states. Documented in `docs/protocol.md`.
//!
//! This is the only crate that knows how rows look on the wire. It does no I/O; the
//! server and the client call it at their edges.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ferry_core::schema::{ColType, Schema, Table};
use ferry_core::strategy::RowClocks;
use ferry_core::{Hlc, RowState, Stamped, Value};
use serde::{Deserialize, Serialize};

pub mod admin;
pub mod codec;
mod error;
pub mod full_sync;
pub mod integrity;
mod page;
pub mod peer;
pub mod rest;
mod stream;
pub use admin::{
    ConflictKind, ConflictRecord, ConflictSide, ConflictVersion, DeviceRecord, DevicesResponse, FilesStatus,
    ResolveRequest, RevokeResponse, ServerStatus, Strategy,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use full_sync::{
    ChunkInfo, DeviceSnapshot, DeviceSnapshotRequest, FullSyncList, FullSyncOptions, FullSyncRequest, FullSyncRun,
    PeerFullSync, PeerSnapshotRequest, PhaseProgress, SnapshotManifest,
};
pub use integrity::{
    CatchUpRequest, CatchUpResponse, DigestNode, DigestRequest, DigestResponse, DigestRow, IntegrityReport,
    IntegrityRequest, PeerRowsRequest, RowDifference, TableIntegrity,
};
pub use page::{DecodedPage, DecodedPush, PushError, PushedRow, RefusedPull, decode_page, decode_push};
pub use peer::{
    AdoptUsersResponse, Alert, AlertsResponse, PEER_HEADER, PeerStatus, PeerUser, PeerUsers, SyncHealth, SyncLogEntry,
    SyncLogResponse, SyncStatusResponse,
};
pub use rest::{ChangesResponse, PutRowRequest, RowDoc};
pub use stream::StreamMessage;

/// The path prefix of every protocol endpoint.
pub const PREFIX: &str = "/v1";
/// Rows per pull page when the client does not ask for a size.
pub const DEFAULT_PAGE_ROWS: usize = 1000;
/// The most rows a pull page holds, whatever the client asks.
pub const MAX_PAGE_ROWS: usize = 10_000;
/// The most rows one push may carry.
pub const MAX_PUSH_ROWS: usize = 10_000;

/// One row's whole mergeable state, as pushed and pulled.
///
/// `values` holds the data columns (not the key). A column's clock is `clocks[column]` when
/// present, else `clock`. For a deleted row (`exists: false`) `values` holds its last
/// values, which replicas keep in the tombstone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireRow {
    pub table: String,
    pub key: String,
    pub exists: bool,
    pub exists_at: String,
    pub clock: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clocks: BTreeMap<String, String>,
    #[serde(default)]
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Pushes only: for each column the device changed since its last acknowledged push,
    /// the clock of the value that change replaced. The server logs a conflict when it holds
    /// a newer write the device had not seen.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub base: BTreeMap<String, String>,
    /// Pushes only: the clocks of the version the device's unacknowledged change started
    /// from (every register, as in a row: `exists_at`, `clock`, `clocks`). The server's
    /// conflict strategies compare it with the stored row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<WireClocks>,
}

/// The register clocks of one version of a row (see [`WireRow::seen`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WireClocks {
    pub exists_at: String,
    pub clock: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clocks: BTreeMap<String, String>,
}

/// A pushed row the server refused under `reject-stale`: the change was made on an older
/// version. Nothing of it was stored; `current` is the server's version.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RejectedRow {
    pub table: String,
    pub key: String,
    /// 409.
    pub status: u16,
    pub code: String,
    pub message: String,
    pub current: WireRow,
}

/// `POST /v1/push`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// Chosen by the client, unique per batch; a retry of the same batch reuses it and the
    /// server answers it from its record without applying anything again.
    pub batch_id: String,
    /// The client's pull cursor. When the batch is the only thing that changed the feed since
    /// then, the answer carries the cursor just past the batch, so the client need not pull
    /// its own rows back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    pub rows: Vec<WireRow>,
}

/// A [`PushRequest`]'s JSON around rows already encoded (a JSON array of [`WireRow`]s, as
/// [`RowOut`] writes them), without parsing them again.
pub fn push_body(batch_id: &str, cursor: Option<&str>, rows_json: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(rows_json.len() + batch_id.len() + 64);
    body.extend_from_slice(b"{\"batch_id\":");
    serde_json::to_writer(&mut body, batch_id).expect("a string serializes");
    if let Some(cursor) = cursor {
        body.extend_from_slice(b",\"cursor\":");
        serde_json::to_writer(&mut body, cursor).expect("a string serializes");
    }
    body.extend_from_slice(b",\"rows\":");
    body.extend_from_slice(rows_json);
    body.push(b'}');
    body
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PushResponse {
    pub batch_id: String,
    /// Rows in the batch.
    pub received: usize,
    /// Rows whose stored state changed (the rest were already known).
    pub changed: usize,
    /// True when this answer comes from the record of an earlier delivery of the batch.
    #[serde(default)]
    pub replayed: bool,
    /// Set when the request's cursor was the feed's end before this batch: the cursor just
    /// past the batch. Every row in between is the merge of states the client already has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Rows refused (each with its own status, 409) while the rest of the batch applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedRow>,
}

/// `GET /v1/pull?cursor=N&limit=M`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullResponse {
    pub rows: Vec<WireRow>,
    /// Pass this as `cursor` next time. Opaque to clients (a decimal string).
    pub cursor: String,
    /// More rows are waiting: pull again at once.
    pub more: bool,
    /// Rows that left what the user may read (a `read` rule, a membership changed): the
    /// device removes them locally, without pushing a delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<RemovedRow>,
}

/// A row a pull tells the device to remove: it left what the device's user may read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovedRow {
    pub table: String,
    pub key: String,
}

/// A [`PullResponse`] serialized straight from row states: `rows` gives the page's rows
/// each time it is called (once per serialization), as [`RowOut`]s.
pub struct PageOut<'a, F> {
    pub rows: F,
    pub cursor: &'a str,
    pub more: bool,
    /// Rows (table, key) that left what the user may read.
    pub removed: &'a [(String, String)],
}

impl<'a, F, I> Serialize for PageOut<'a, F>
where
    F: Fn() -> I,
    I: Iterator<Item = RowOut<'a>>,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeStruct};
        struct Rows<'p, F>(&'p F);
        impl<'a, F, I> Serialize for Rows<'_, F>
        where
            F: Fn() -> I,
            I: Iterator<Item = RowOut<'a>>,
        {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                for row in (self.0)() {
                    seq.serialize_element(&row)?;
                }
                seq.end()
            }
        }
        let mut m = s.serialize_struct("PullResponse", 4)?;
        m.serialize_field("rows", &Rows(&self.rows))?;
        m.serialize_field("cursor", self.cursor)?;
        m.serialize_field("more", &self.more)?;
        if !self.removed.is_empty() {
            let removed: Vec<RemovedRow> =
                self.removed.iter().map(|(t, k)| RemovedRow { table: t.clone(), key: k.clone() }).collect();
            m.serialize_field("removed", &removed)?;
        }
        m.end()
    }
}

/// `GET /v1/schema`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchemaResponse {
    pub version: String,
    /// The tables in Ferry's canonical SQL subset.
    pub sql: String,
    /// Per-table options, by table name.
    pub tables: BTreeMap<String, TableInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct TableInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The table's conflict strategy, when not the default `lww`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
    /// Under `authoritative`: the device role whose writes win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// File columns: they hold the SHA-256 of a file that travels through `/v1/files`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Devices may not write the table; the server's own SQL may.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// The table stays on devices and never syncs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local_only: bool,
    /// Columns that stay on devices: created there, never captured, left alone by pulls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_only_columns: Vec<String>,
}

/// `GET /v1/me`: who the token belongs to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The server store's permanent id; a replica's cursor belongs to one store.
    pub store_id: String,
    pub user_id: String,
    pub user_name: String,
    pub device_id: String,
    pub device_name: String,
    /// The device's role (`ferry token create --role`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The server's own role (`[server] role`: `main` or `cloud`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_role: Option<String>,
}

/// `POST /v1/files/check`: where the server stands on some files (at most
/// [`MAX_FILE_CHECK`] hashes per request).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCheckRequest {
    pub hashes: Vec<String>,
}

/// The most hashes one `/v1/files/check` request may ask about.
pub const MAX_FILE_CHECK: usize = 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileCheckResponse {
    /// One entry per asked hash, in the order asked.
    pub files: Vec<FileState>,
    /// The largest upload the server accepts, in bytes (larger gets 413), so a device need
    /// not send a file only to have it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes: Option<u64>,
}

/// What the server holds of one file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileState {
    pub hash: String,
    pub state: FileStateKind,
    /// `stored`: the file's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `partial`: how many bytes of an interrupted upload the server holds (resume there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileStateKind {
    /// Stored and verified: download it, or there is nothing to upload.
    Stored,
    /// Part of an upload arrived; resume from `offset`.
    Partial,
    /// Not on the server.
    Missing,
    /// No row the caller may read references it (yet): not the caller's to upload or read.
    Unreferenced,
}

/// The answer to a finished upload (`PUT /v1/files/{hash}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileStored {
    pub hash: String,
    pub size: u64,
}

impl SchemaResponse {
    pub fn from_schema(schema: &Schema) -> SchemaResponse {
        SchemaResponse {
            version: schema.version(),
            sql: schema.to_sql(),
            tables: schema
                .tables
                .iter()
                .map(|t| {
                    let conflict = (t.options.conflict != ferry_core::schema::ConflictStrategy::Lww)
                        .then(|| t.options.conflict.name().to_owned());
                    (
                        t.name.clone(),
                        TableInfo {
                            owner: t.options.owner.clone(),
                            conflict,
                            authority: t.options.authority.clone(),
                            files: t.options.files.clone(),
                            read_only: t.options.read_only,
                            local_only: t.options.local_only,
                            local_only_columns: t.options.local_only_columns.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Parses the schema back.
    ///
    /// # Errors
    /// The schema error, when the server sent a schema this client cannot read.
    pub fn to_schema(&self) -> Result<Schema, ferry_core::schema::SchemaError> {
        let options: BTreeMap<String, ferry_core::schema::TableOptions> = self
            .tables
            .iter()
            .map(|(n, i)| {
                let conflict = match i.conflict.as_deref() {
                    None => Ok(ferry_core::schema::ConflictStrategy::default()),
                    Some(c) => ferry_core::schema::ConflictStrategy::parse(c),
                };
                conflict.map(|conflict| {
                    let (owner, authority, files) = (i.owner.clone(), i.authority.clone(), i.files.clone());
                    // Sharing rules stay on the server, which enforces them.
                    let (read_only, local_only) = (i.read_only, i.local_only);
                    let options = ferry_core::schema::TableOptions {
                        owner,
                        conflict,
                        authority,
                        files,
                        read_only,
                        local_only,
                        local_only_columns: i.local_only_columns.clone(),
                        ..Default::default()
                    };
                    (n.clone(), options)
                })
            })
            .collect::<Result<_, String>>()
            .map_err(ferry_core::schema::SchemaError)?;
        Schema::parse(&self.sql, &options)
    }
}

/// Why a wire row was refused. Messages name the table, the key and the column.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Encodes a row state for the wire.
pub fn encode_row(table: &Table, key: &str, state: &RowState) -> WireRow {
    let clock = state.common_clock();
    let mut clocks = BTreeMap::new();
    let mut values = serde_json::Map::new();
    for col in table.data_columns() {
        if let Some(s) = state.cols.get(&col.name) {
            if s.at != clock {
                clocks.insert(col.name.clone(), s.at.to_string());
            }
            values.insert(col.name.clone(), value_to_json(col.ty, &s.value));
        }
    }
    WireRow {
        table: table.name.clone(),
        key: key.to_owned(),
        exists: state.exists.value,
        exists_at: state.exists.at.to_string(),
        clock: clock.to_string(),
        clocks,
        values,
        base: BTreeMap::new(),
        seen: None,
    }
}

/// A row serialized exactly as the [`WireRow`] [`encode_row`] makes, without building it
/// (a pull page of many rows spent more on building and dropping those than on the JSON).
pub struct RowOut<'a> {
    pub table: &'a Table,
    pub key: &'a str,
    pub state: &'a RowState,
    /// Pushes only: [`WireRow::base`] (left out when empty).
    pub base: Option<&'a BTreeMap<String, Hlc>>,
    /// Pushes only: [`WireRow::seen`].
    pub seen: Option<&'a RowClocks>,
}

impl Serialize for RowOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeStruct};
        struct Clock(Hlc);
        impl Serialize for Clock {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.0.encode(&mut [0u8; 32]))
            }
        }
        struct Out<'a> {
            row: &'a RowOut<'a>,
            clock: Hlc,
            clocks: bool,
        }
        impl Out<'_> {
            /// The state's columns the table has, in name order (as a JSON map of [`WireRow`]).
            fn cols(&self) -> impl Iterator<Item = (&String, &Stamped<Value>, ColType)> {
                let table = self.row.table;
                self.row.state.cols.iter().filter_map(move |(name, s)| {
                    table.data_columns().find(|c| c.name == *name).map(|c| (name, s, c.ty))
                })
            }
        }
        impl Serialize for Out<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                for (name, st, ty) in self.cols() {
                    if self.clocks {
                        if st.at != self.clock {
                            m.serialize_entry(name, &Clock(st.at))?;
                        }
                    } else {
                        m.serialize_entry(name, &codec::WireValue(ty, &st.value))?;
                    }
                }
                m.end()
            }
        }
        struct Base<'a>(&'a BTreeMap<String, Hlc>);
        impl Serialize for Base<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (name, at) in self.0 {
                    m.serialize_entry(name, &Clock(*at))?;
                }
                m.end()
            }
        }
        let clock = self.state.common_clock();
        let values = Out { row: self, clock, clocks: false };
        let differ = values.cols().any(|(_, st, _)| st.at != clock);
        let base = self.base.filter(|b| !b.is_empty());
        let fields = 6 + usize::from(differ) + usize::from(base.is_some()) + usize::from(self.seen.is_some());
        let mut m = s.serialize_struct("WireRow", fields)?;
        m.serialize_field("table", &self.table.name)?;
        m.serialize_field("key", self.key)?;
        m.serialize_field("exists", &self.state.exists.value)?;
        m.serialize_field("exists_at", &Clock(self.state.exists.at))?;
        m.serialize_field("clock", &Clock(clock))?;
        if differ {
            m.serialize_field("clocks", &Out { row: self, clock, clocks: true })?;
        }
        m.serialize_field("values", &values)?;
        if let Some(base) = base {
            m.serialize_field("base", &Base(base))?;
        }
        if let Some(seen) = self.seen {
            m.serialize_field("seen", &encode_clocks(self.table, seen))?;
        }
        m.end()
    }
}

/// Encodes a version's clocks for [`WireRow::seen`]: the most common clock, and each data
/// column that differs from it (a column never written has the zero clock).
pub fn encode_clocks(table: &Table, clocks: &RowClocks) -> WireClocks {
    let at = |c: &str| clocks.cols.get(c).copied().unwrap_or(Hlc::ZERO);
    let mut counts: BTreeMap<Hlc, usize> = BTreeMap::new();
    for col in table.data_columns() {
        *counts.entry(at(&col.name)).or_default() += 1;
    }
    let common = counts.into_iter().max_by_key(|(h, n)| (*n, *h)).map_or(clocks.exists, |(h, _)| h);
    WireClocks {
        exists_at: clocks.exists.to_string(),
        clock: common.to_string(),
        clocks: table
            .data_columns()
            .filter(|c| at(&c.name) != common)
            .map(|c| (c.name.clone(), at(&c.name).to_string()))
            .collect(),
    }
}

/// Reads a pushed row's [`WireRow::seen`]; without one, the version is taken to be the
/// pushed state with its `base` clocks for the changed columns (what older clients meant).
///
/// # Errors
/// A [`DecodeError`] naming the row for an unknown column or a malformed clock.
pub fn decode_seen(table: &Table, row: &WireRow, state: &RowState) -> Result<RowClocks, DecodeError> {
    seen_of(table, &row.key, &row.base, row.seen.as_ref(), state)
}

/// [`decode_seen`] from a pushed row's parts: its key, `base` and `seen`.
pub(crate) fn seen_of(
    table: &Table,
    key: &str,
    base: &BTreeMap<String, String>,
    seen: Option<&WireClocks>,
    state: &RowState,
) -> Result<RowClocks, DecodeError> {
    let here = || format!("{} '{key}'", table.name);
    let hlc = |s: &str| s.parse::<Hlc>().map_err(|e| DecodeError(format!("{}: seen clock: {e}", here())));
    let Some(seen) = seen else {
        let mut clocks = state.clocks();
        clocks.cols.extend(base_of(table, key, base)?);
        return Ok(clocks);
    };
    let clock = hlc(&seen.clock)?;
    let mut out = RowClocks { exists: hlc(&seen.exists_at)?, cols: BTreeMap::new() };
    // Columns at the zero clock were never written: they are left out (a new row's version
    // has none).
    if clock != Hlc::ZERO {
        for col in table.data_columns() {
            out.cols.insert(col.name.clone(), clock);
        }
    }
    for (col, at) in &seen.clocks {
        if table.column(col).is_none() {
            return Err(DecodeError(format!("{}: seen clock for unknown column '{col}'", here())));
        }
        match hlc(at)? {
            Hlc::ZERO => out.cols.remove(col),
            at => out.cols.insert(col.clone(), at),
        };
    }
    Ok(out)
}

/// Reads a pushed row's base clocks (see [`WireRow::base`]).
fn base_of(table: &Table, key: &str, base: &BTreeMap<String, String>) -> Result<BTreeMap<String, Hlc>, DecodeError> {
    base.iter()
        .map(|(col, clock)| {
            if table.column(col).is_none() {
                return Err(DecodeError(format!("{} '{key}': base clock for unknown column '{col}'", table.name)));
            }
            let at = clock
                .parse::<Hlc>()
                .map_err(|e| DecodeError(format!("{} '{key}': base clock of '{col}': {e}", table.name)))?;
            Ok((col.clone(), at))
        })
        .collect()
}

/// Decodes a wire row against the schema, checking every value against its column's
/// type and rules.
///
/// # Errors
/// A [`DecodeError`] naming the table, key and column: unknown table or column, a value
/// of the wrong type, a broken rule (NOT NULL, allowed values, length), a malformed clock.
pub fn decode_row<'s>(schema: &'s Schema, row: &WireRow) -> Result<(&'s Table, RowState), DecodeError> {
    let head = RowHead {
        table: &row.table,
        key: &row.key,
        exists: row.exists,
        exists_at: &row.exists_at,
        clock: &row.clock,
        clocks: &row.clocks,
    };
    build_row(schema, &head, row.values.iter().map(|(n, j)| (Cow::Borrowed(n.as_str()), Decoded::Json(j))))
}

/// A wire row's parts other than its values.
pub(crate) struct RowHead<'a> {
    pub table: &'a str,
    pub key: &'a str,
    pub exists: bool,
    pub exists_at: &'a str,
    pub clock: &'a str,
    pub clocks: &'a BTreeMap<String, String>,
}

/// A column's value as it arrived: JSON still, or already read by the column's type.
pub(crate) enum Decoded<'j> {
    Json(&'j serde_json::Value),
    Read(Result<Value, String>),
}

/// The checks and the state of [`decode_row`], for values in either form.
pub(crate) fn build_row<'s, 'n, 'j>(
    schema: &'s Schema,
    row: &RowHead<'_>,
    values: impl Iterator<Item = (Cow<'n, str>, Decoded<'j>)>,
) -> Result<(&'s Table, RowState), DecodeError> {
    let Some(table) = schema.table(row.table) else {
        return Err(DecodeError(format!(
            "unknown table '{}'; the schema has: {}",
            ferry_core::shown(row.table),
            schema.table_names().join(", ")
        )));
    };
    let here = || format!("{} '{}'", table.name, ferry_core::shown(row.key));
    table
        .check_value(table.pk_column(), &Value::Text(row.key.to_owned()))
        .map_err(|e| DecodeError(format!("{}: key {}", here(), e.rule)))?;
    let hlc = |s: &str, what: &str| {
        s.parse::<Hlc>().map_err(|e| DecodeError(format!("{}: {what}: {}", here(), ferry_core::shown(&e.to_string()))))
    };
    let exists_at = hlc(row.exists_at, "exists_at")?;
    let clock = hlc(row.clock, "clock")?;
    // The zero clock means "never written": a register that holds something must carry the
    // clock of the write that put it there, or stores would leave it out of every pull.
    if row.exists && exists_at == Hlc::ZERO {
        return Err(DecodeError(format!(
            "{}: exists_at is the zero clock (never written) for a live row; a row's existence carries the clock of its insert",
            here()
        )));
    }
    let mut cols = BTreeMap::new();
    for (name, value) in values {
        let Some(col) = table.column(&name).filter(|c| c.name != table.pk_column().name) else {
            let known: Vec<_> = table.data_columns().map(|c| c.name.as_str()).collect();
            return Err(DecodeError(format!(
                "{}: unknown column '{}'; the table has: {}",
                here(),
                ferry_core::shown(&name),
                known.join(", ")
            )));
        };
        let value = match value {
            Decoded::Json(json) => value_from_json(col.ty, json),
            Decoded::Read(read) => read,
        }
        .map_err(|rule| DecodeError(format!("{}: column '{name}': {rule}", here())))?;
        // A tombstone may hold values that predate a rule; only live rows must obey them.
        // Every value must be storable, though, alike in both stores.
        if row.exists { table.check_value(col, &value) } else { table.check_storable(col, &value) }
            .map_err(|e| DecodeError(format!("{}: {e}", here())))?;
        let at = match row.clocks.get(name.as_ref()) {
            Some(c) => hlc(c, &format!("clock of '{name}'"))?,
            None => clock,
        };
        if at == Hlc::ZERO {
            return Err(DecodeError(format!(
                "{}: column '{name}' has a value but the zero clock (never written); a value carries the clock of the write that set it",
                here()
            )));
        }
        cols.insert(name.into_owned(), Stamped::new(value, at));
    }
    if let Some(extra) = row.clocks.keys().find(|c| !cols.contains_key(*c)) {
        return Err(DecodeError(format!("{}: clock given for '{extra}', which has no value", here())));
    }
    if row.exists
        && let Some(missing) = table.data_columns().find(|c| c.not_null && !cols.contains_key(&c.name))
    {
        return Err(DecodeError(format!("{}: column '{}' is NOT NULL but missing", here(), missing.name)));
    }
    Ok((table, RowState { exists: Stamped::new(row.exists, exists_at), cols }))
}

/// A value as JSON on the wire, by the column's logical type ([`codec::Form::Wire`]).
pub fn value_to_json(ty: ColType, v: &Value) -> serde_json::Value {
    codec::to_json(codec::Form::Wire, ty, v)
}

/// Reads a JSON value from the wire for a column of type `ty` ([`codec::Form::Wire`]).
///
/// # Errors
/// A short rule ("expects integer, got string \"x\"") for the caller to put in context.
pub fn value_from_json(ty: ColType, j: &serde_json::Value) -> Result<Value, String> {
    codec::from_json(codec::Form::Wire, ty, j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::SiteId;

    fn schema() -> Schema {
        Schema::parse(
            "CREATE TABLE jump (id uuid PRIMARY KEY, n integer NOT NULL, ok boolean, pic bytea, note text);",
            &BTreeMap::new(),
        )
        .unwrap()
    }

    const KEY: &str = "0190f5a2-7c1e-7d3a-9b1f-2c3d4e5f6a7b";

    proptest::proptest! {
        /// Every real the door accepts travels bit for bit (as JSON numbers, or "inf"/"-inf"),
        /// through both serializers; NaN and -0.0 are refused with the column named.
        #[test]
        fn reals_cross_the_wire_bit_for_bit_or_are_refused(
            r in proptest::prop_oneof![
                proptest::strategy::Just(f64::NAN),
                proptest::strategy::Just(-0.0),
                proptest::strategy::Just(f64::INFINITY),
                proptest::strategy::Just(f64::NEG_INFINITY),
                proptest::num::f64::ANY,
            ]
        ) {
            let s = Schema::parse("CREATE TABLE m (id uuid PRIMARY KEY, h real);", &BTreeMap::new()).unwrap();
            let t = s.table("m").unwrap();
            let state = RowState::inserted([("h".to_owned(), Value::Real(r))], Hlc::new(5, 1, SiteId(3)));
            let out = RowOut { table: t, key: KEY, state: &state, base: None, seen: None };
            for json in [serde_json::to_string(&encode_row(t, KEY, &state)).unwrap(), serde_json::to_string(&out).unwrap()] {
                let wire: WireRow = serde_json::from_str(&json).unwrap();
                match decode_row(&s, &wire) {
                    Ok((_, back)) => {
                        let Value::Real(b) = back.cols["h"].value else { panic!("{json}") };
                        proptest::prop_assert_eq!(b.to_bits(), r.to_bits(), "{}", json);
                    }
                    Err(e) => {
                        proptest::prop_assert!(r.is_nan() || (r == 0.0 && r.is_sign_negative()), "{} refused: {}", json, e);
                        proptest::prop_assert!(e.0.contains("column 'h'"), "{}", e);
                    }
                }
            }
        }
    }

    #[test]
    fn rows_round_trip() {
        let s = schema();
        let t = s.table("jump").unwrap();
        let at = Hlc::new(5, 1, SiteId(3));
        let mut state = RowState::inserted(
            [
                ("n".to_owned(), Value::Integer(7)),
                ("ok".to_owned(), Value::Integer(1)),
                ("pic".to_owned(), Value::Blob(vec![1, 2, 3])),
                ("note".to_owned(), Value::Null),
            ],
            at,
        );
        state.update([("n".to_owned(), Value::Integer(8))], Hlc::new(6, 0, SiteId(3)));
        let wire = encode_row(t, KEY, &state);
        assert_eq!(wire.values["ok"], serde_json::Value::Bool(true));
        assert_eq!(wire.clocks.len(), 1);
        let json = serde_json::to_string(&wire).unwrap();
        let back: WireRow = serde_json::from_str(&json).unwrap();
        let (_, decoded) = decode_row(&s, &back).unwrap();
        assert_eq!(decoded, state);
    }

    #[test]
    fn a_row_serialized_in_place_is_the_json_of_its_wire_row() {
        let s = Schema::parse(
            "CREATE TABLE jump (id uuid PRIMARY KEY, n integer NOT NULL, ok boolean, pic bytea, note text, h double precision);",
            &BTreeMap::new(),
        )
        .unwrap();
        let t = s.table("jump").unwrap();
        let at = Hlc::new(5, 1, SiteId(3));
        let whole = RowState::inserted(
            [
                ("n".to_owned(), Value::Integer(7)),
                ("ok".to_owned(), Value::Integer(0)),
                ("pic".to_owned(), Value::Blob(vec![1, 2, 3])),
                ("note".to_owned(), Value::Text("say \"hi\"\n".into())),
                ("h".to_owned(), Value::Real(1.5)),
            ],
            at,
        );
        let mut later = whole.clone();
        later.update([("n".to_owned(), Value::Integer(8))], Hlc::new(6, 0, SiteId(3)));
        later.update([("h".to_owned(), Value::Real(f64::NEG_INFINITY))], Hlc::new(7, 0, SiteId(4)));
        let mut dead = later.clone();
        dead.delete(Hlc::new(9, 0, SiteId(3)));
        let mut partial = RowState::unknown();
        partial.update([("note".to_owned(), Value::Null)], at);
        let base: BTreeMap<String, Hlc> = [("n".to_owned(), at), ("note".to_owned(), Hlc::ZERO)].into();
        let seen = later.clocks();
        for state in [whole, later, dead, partial, RowState::unknown()] {
            let out = serde_json::to_string(&RowOut { table: t, key: KEY, state: &state, base: None, seen: None });
            assert_eq!(out.unwrap(), serde_json::to_string(&encode_row(t, KEY, &state)).unwrap());
            // As pushed: with the base clocks and the version the change started from.
            let out = RowOut { table: t, key: KEY, state: &state, base: Some(&base), seen: Some(&seen) };
            let mut wire = encode_row(t, KEY, &state);
            wire.base = base.iter().map(|(c, h)| (c.clone(), h.to_string())).collect();
            wire.seen = Some(encode_clocks(t, &seen));
            assert_eq!(serde_json::to_string(&out).unwrap(), serde_json::to_string(&wire).unwrap());
        }
    }

    #[test]
    fn a_page_serialized_in_place_is_the_json_of_its_pull_response() {
        let s = schema();
        let t = s.table("jump").unwrap();
        let state = RowState::inserted([("n".to_owned(), Value::Integer(7))], Hlc::new(5, 1, SiteId(3)));
        let mut dead = state.clone();
        dead.delete(Hlc::new(6, 0, SiteId(3)));
        let states = [state, dead];
        let gone = [("jump".to_owned(), "k\"2".to_owned())];
        for (rows, removed) in [(&states[..], &[][..]), (&[], &[]), (&states[..], &gone[..])] {
            let out = PageOut {
                rows: || rows.iter().map(|st| RowOut { table: t, key: KEY, state: st, base: None, seen: None }),
                cursor: "c\"1",
                more: true,
                removed,
            };
            let page = PullResponse {
                rows: rows.iter().map(|st| encode_row(t, KEY, st)).collect(),
                cursor: "c\"1".into(),
                more: true,
                removed: removed.iter().map(|(t, k)| RemovedRow { table: t.clone(), key: k.clone() }).collect(),
            };
            let json = serde_json::to_string(&out).unwrap();
            assert_eq!(json, serde_json::to_string(&page).unwrap());
            let decoded = page::decode_page(&s, json.as_bytes()).unwrap();
            assert_eq!(decoded.removed, removed);
        }
    }

    /// `decode_page` against `PullResponse` + `decode_row`: the same states, the same refusals.
    #[test]
    fn a_page_decoded_in_place_matches_decoding_its_wire_rows() {
        let s = schema();
        let t = s.table("jump").unwrap();
        let mut state = RowState::inserted(
            [
                ("n".to_owned(), Value::Integer(7)),
                ("ok".to_owned(), Value::Integer(1)),
                ("pic".to_owned(), Value::Blob(vec![1, 2, 3])),
                ("note".to_owned(), Value::Text("a \"quoted\" note".into())),
            ],
            Hlc::new(5, 1, SiteId(3)),
        );
        state.update([("n".to_owned(), Value::Integer(8))], Hlc::new(6, 0, SiteId(3)));
        let mut dead = state.clone();
        dead.delete(Hlc::new(9, 0, SiteId(3)));
        let good = vec![encode_row(t, KEY, &state), encode_row(t, KEY, &dead), wire(serde_json::json!({"n": 1}))];
        let page = |rows: Vec<WireRow>| {
            serde_json::to_vec(&PullResponse { rows, cursor: "c".into(), more: true, removed: vec![] }).unwrap()
        };
        let decoded = decode_page(&s, &page(good.clone())).unwrap();
        assert_eq!((decoded.cursor.as_str(), decoded.more), ("c", true));
        let expected: Vec<_> =
            good.iter().map(|w| ("jump".to_owned(), KEY.to_owned(), decode_row(&s, w).unwrap().1)).collect();
        assert_eq!(decoded.rows, expected);
        // Values before the table, and fields Ferry does not know, are fine too.
        let json = format!(
            r#"{{"more":false,"extra":[1,{{"a":2}}],"rows":[{{"values":{{"n":3}},"table":"jump","key":"{KEY}","exists":true,"exists_at":"{h}","clock":"{h}","new":null}}],"cursor":"d"}}"#,
            h = Hlc::new(1, 0, SiteId(1))
        );
        let decoded = decode_page(&s, json.as_bytes()).unwrap();
        assert_eq!(decoded.rows[0].2, decode_row(&s, &wire(serde_json::json!({"n": 3}))).unwrap().1);
        // Every refusal reads as decode_row's, and leaves the page's other rows decoded.
        for values in [
            serde_json::json!({"n": "seven"}),
            serde_json::json!({"n": 1.5}),
            serde_json::json!({"n": [1, 2]}),
            serde_json::json!({"n": {"a": "b"}}),
            serde_json::json!({"n": 18446744073709551615u64}),
            serde_json::json!({"n": 1, "ok": 2}),
            serde_json::json!({"n": 1, "ok": "yes"}),
            serde_json::json!({"n": 1, "pic": "not base64!"}),
            serde_json::json!({"n": 1, "note": 5}),
            serde_json::json!({"n": 1, "color": "red"}),
            serde_json::json!({"n": 1, "id": KEY}),
            serde_json::json!({"note": "x"}),
        ] {
            let row = wire(values.clone());
            let reason = decode_row(&s, &row).unwrap_err().0;
            let mut rows = good.clone();
            rows.insert(1, row);
            let decoded = decode_page(&s, &page(rows)).unwrap();
            let refused = RefusedPull { table: "jump".into(), key: KEY.into(), reason };
            assert_eq!(decoded.refused, vec![refused], "{values}");
            assert_eq!(decoded.rows, expected, "{values}");
        }
        // A zero clock, an unknown table and a NaN are refused rows too; a page that is not
        // shaped as one (a row without its key, a clock that is not a string) is malformed.
        let mut zero = wire(serde_json::json!({"n": 1}));
        zero.clock = Hlc::ZERO.to_string();
        let mut unknown = wire(serde_json::json!({"n": 1}));
        unknown.table = "jumps".into();
        let decoded = decode_page(&s, &page(vec![zero, unknown])).unwrap();
        assert_eq!(decoded.refused.len(), 2, "{:?}", decoded.refused);
        assert!(decoded.refused[0].reason.contains("zero clock"), "{:?}", decoded.refused);
        assert_eq!(decoded.refused[1].table, "jumps");
        let with_real = Schema::parse("CREATE TABLE jump (id uuid PRIMARY KEY, h real);", &BTreeMap::new()).unwrap();
        let decoded = decode_page(&with_real, &page(vec![wire(serde_json::json!({"h": "NaN"}))])).unwrap();
        assert!(decoded.refused[0].reason.contains("column 'h': is NaN"), "{:?}", decoded.refused);
        for broken in [
            r#"{"rows":[{"table":"jump"}],"cursor":"c","more":false}"#,
            r#"{"rows":[{"table":"jump","key":"k","exists":true,"exists_at":1,"clock":"c"}],"cursor":"c","more":false}"#,
            "[]",
        ] {
            assert!(decode_page(&s, broken.as_bytes()).is_err(), "{broken}");
        }
    }

    /// A page of good and bad rows interleaved: the good ones decode in their order, each bad
    /// one comes apart with its table and key as sent (bounded) and decode_row's message.
    #[test]
    fn a_page_sets_its_bad_rows_apart_and_keeps_the_good_ones_in_order() {
        let s = schema();
        let keyed = |key: &str, values: serde_json::Value| WireRow { key: key.into(), ..wire(values) };
        let (a, b, c) = (
            "0190f5a2-7c1e-7d3a-9b1f-00000000000a",
            "0190f5a2-7c1e-7d3a-9b1f-00000000000b",
            "0190f5a2-7c1e-7d3a-9b1f-00000000000c",
        );
        let long = "k".repeat(5000);
        let mut zero_clock = keyed(b, serde_json::json!({"n": 2, "note": "x"}));
        zero_clock.clocks.insert("note".into(), Hlc::ZERO.to_string());
        let rows = vec![
            keyed(a, serde_json::json!({"n": 1})),
            zero_clock,
            keyed(&long, serde_json::json!({"n": 3})),
            keyed(c, serde_json::json!({"n": 4})),
            keyed(KEY, serde_json::json!({"note": "no n"})),
            WireRow { table: "t".repeat(5000), ..keyed(a, serde_json::json!({"n": 5})) },
        ];
        let json =
            serde_json::to_vec(&PullResponse { rows: rows.clone(), cursor: "c".into(), more: false, removed: vec![] })
                .unwrap();
        let decoded = decode_page(&s, &json).unwrap();
        let good: Vec<_> = [&rows[0], &rows[3]]
            .iter()
            .map(|w| ("jump".to_owned(), w.key.clone(), decode_row(&s, w).unwrap().1))
            .collect();
        assert_eq!(decoded.rows, good);
        let bound = ferry_core::limits::MAX_KEY_BYTES + 1;
        let refused: Vec<_> = [&rows[1], &rows[2], &rows[4], &rows[5]]
            .iter()
            .map(|w| RefusedPull {
                table: w.table[..w.table.len().min(bound)].to_owned(),
                key: w.key[..w.key.len().min(bound)].to_owned(),
                reason: decode_row(&s, w).unwrap_err().0,
            })
            .collect();
        assert_eq!(decoded.refused, refused);
        assert!(refused[0].reason.contains("column 'note' has a value but the zero clock"), "{:?}", refused[0]);
        assert!(refused[1].reason.contains(": key "), "{:?}", refused[1]);
        assert!(refused[2].reason.contains("column 'n' is NOT NULL but missing"), "{:?}", refused[2]);
        // Every message stays short, whatever the row sent.
        assert!(refused.iter().all(|r| r.reason.len() < 400), "{refused:?}");
    }

    /// `decode_push` against `PushRequest` + `decode_row` + `decode_seen`: the same rows and
    /// versions, the same refusals, and what is not a push request is malformed.
    #[test]
    fn a_push_decoded_in_place_matches_decoding_its_wire_rows() {
        let s = schema();
        let t = s.table("jump").unwrap();
        let at = Hlc::new(5, 1, SiteId(3));
        let state = RowState::inserted([("n".to_owned(), Value::Integer(7)), ("note".to_owned(), Value::Null)], at);
        let mut with_seen = encode_row(t, KEY, &state);
        let mut seen = state.clocks();
        seen.cols.insert("ok".into(), Hlc::new(2, 0, SiteId(1)));
        with_seen.seen = Some(encode_clocks(t, &seen));
        with_seen.base = [("n".to_owned(), Hlc::ZERO.to_string())].into();
        let mut base_only = encode_row(t, KEY, &state);
        base_only.base = [("n".to_owned(), Hlc::new(4, 0, SiteId(2)).to_string())].into();
        let rows = vec![with_seen, base_only, encode_row(t, KEY, &state)];
        let body = |rows: Vec<WireRow>| {
            serde_json::to_vec(&PushRequest { batch_id: "b".into(), cursor: Some("c".into()), rows }).unwrap()
        };
        let decoded = decode_push(&s, &body(rows.clone())).unwrap();
        assert_eq!((decoded.batch_id.as_str(), decoded.cursor.as_deref()), ("b", Some("c")));
        for (got, w) in decoded.rows.iter().zip(&rows) {
            let (table, st) = decode_row(&s, w).unwrap();
            assert_eq!((got.table.as_str(), got.key.as_str(), &got.state), ("jump", KEY, &st));
            assert_eq!(got.seen, decode_seen(table, w, &st).unwrap());
        }
        // Refusals read as decode_row's and decode_seen's.
        let mut bad_seen = wire(serde_json::json!({"n": 1}));
        bad_seen.seen = Some(WireClocks { exists_at: "x".into(), clock: at.to_string(), clocks: BTreeMap::new() });
        let mut bad_base = wire(serde_json::json!({"n": 1}));
        bad_base.base = [("color".to_owned(), at.to_string())].into();
        for row in [wire(serde_json::json!({"n": "seven"})), wire(serde_json::json!({"note": "x"})), bad_seen, bad_base]
        {
            let expected = match decode_row(&s, &row) {
                Err(e) => e.0,
                Ok((table, st)) => decode_seen(table, &row, &st).unwrap_err().0,
            };
            assert_eq!(decode_push(&s, &body(vec![row])).unwrap_err(), PushError::Refused(expected));
        }
        for bad in ["not json", r#"{"batch_id": "b"}"#, r#"{"batch_id": "b", "rows": 5}"#, r#"{"rows": []}"#] {
            assert!(matches!(decode_push(&s, bad.as_bytes()), Err(PushError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn a_push_body_around_encoded_rows_is_the_json_of_its_push_request() {
        let rows = vec![wire(serde_json::json!({"n": 1})), wire(serde_json::json!({"note": "a \"q\""}))];
        let json = serde_json::to_vec(&rows).unwrap();
        for cursor in [None, Some("12"), Some("odd \"cursor\"")] {
            let req = PushRequest { batch_id: "b \u{1}".into(), cursor: cursor.map(str::to_owned), rows: rows.clone() };
            assert_eq!(push_body(&req.batch_id, cursor, &json), serde_json::to_vec(&req).unwrap());
        }
    }

    fn wire(values: serde_json::Value) -> WireRow {
        WireRow {
            table: "jump".into(),
            key: KEY.into(),
            exists: true,
            exists_at: Hlc::new(1, 0, SiteId(1)).to_string(),
            clock: Hlc::new(1, 0, SiteId(1)).to_string(),
            clocks: BTreeMap::new(),
            values: values.as_object().unwrap().clone(),
            base: BTreeMap::new(),
            seen: None,
        }
    }

    #[test]
    fn bad_rows_are_refused_with_the_bad_value_named() {
        let s = schema();
        let err = decode_row(&s, &wire(serde_json::json!({"n": "seven"}))).unwrap_err();
        assert_eq!(err.0, format!("jump '{KEY}': column 'n': expects integer, got \"seven\""));
        let err = decode_row(&s, &wire(serde_json::json!({"n": 1, "color": "red"}))).unwrap_err();
        assert!(err.0.contains("unknown column 'color'"), "{err}");
        let err = decode_row(&s, &wire(serde_json::json!({"note": "x"}))).unwrap_err();
        assert!(err.0.contains("'n' is NOT NULL but missing"), "{err}");
        let mut row = wire(serde_json::json!({"n": 1}));
        row.table = "jumps".into();
        let err = decode_row(&s, &row).unwrap_err();
        assert_eq!(err.0, "unknown table 'jumps'; the schema has: jump");
        let mut row = wire(serde_json::json!({"n": 1}));
        row.key = "42".into();
        assert!(decode_row(&s, &row).unwrap_err().0.contains("expects a lowercase uuid"));
        row.key = KEY.to_uppercase();
        assert!(decode_row(&s, &row).unwrap_err().0.contains("expects a lowercase uuid"), "uppercase keys are refused");
    }
}

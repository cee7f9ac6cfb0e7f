//! The server's conflict log: every value a concurrent write overwrote, with both versions,
//! kept until someone looks (invariant 4: no silent overwrite).
//!
//! A conflict is recorded when a pushed row changes a column whose stored value the device
//! had not seen (see `RowState::concurrent_columns`). Under the default strategy, `lww`, the
//! greater clock wins at once and the entry is recorded as resolved by `lww`; the losing value
//! stays here for audit.

use std::collections::BTreeMap;

use ferry_core::schema::{ConflictStrategy, Table};
use ferry_core::{ColumnConflict, RowState};

/// One entry of the conflict log.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConflictRecord {
    pub id: i64,
    pub table: String,
    pub key: String,
    /// `update-update`: two writes to the same columns, neither seeing the other.
    pub kind: String,
    /// The columns both sides wrote with different values.
    pub fields: Vec<String>,
    pub strategy: String,
    /// The stored version before the merge: `{"origin", "values", "clocks"}`.
    pub stored: serde_json::Value,
    /// The incoming version: `{"origin", "values", "clocks"}`.
    pub incoming: serde_json::Value,
    /// For each field, which side the merge kept: `"stored"` or `"incoming"`.
    pub winner: BTreeMap<String, String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<String>,
    pub detected_at: String,
}

/// Which entries to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictFilter {
    All,
    Open,
    Resolved,
}

/// A conflict about to be logged, in the stored form shared by every store.
pub(crate) struct NewConflict {
    pub table: String,
    pub key: String,
    pub fields: String,
    pub stored: String,
    pub incoming: String,
    pub winner: String,
    /// The table's strategy, and whether it settles the conflict at once (`lww`) or leaves
    /// it open for a person (`manual`).
    pub strategy: &'static str,
    pub resolved: bool,
    /// Identifies the conflict so that a retried push logs it once: table, key, and the
    /// incoming clocks of the fields.
    pub dedupe: String,
}

fn version(table: &Table, state: &RowState, origin: Option<&str>) -> serde_json::Value {
    let values: serde_json::Value =
        serde_json::from_str(&ferry_sqlite::encode_values(table, &ferry_sqlite::values_of(table, state)))
            .unwrap_or_default();
    let clocks: serde_json::Map<String, serde_json::Value> =
        state.cols.iter().map(|(c, s)| (c.clone(), s.at.to_string().into())).collect();
    serde_json::json!({ "origin": origin, "exists": state.is_alive(), "values": values, "clocks": clocks })
}

pub(crate) fn new_conflict(
    table: &Table,
    key: &str,
    stored: &RowState,
    stored_origin: Option<&str>,
    incoming: &RowState,
    incoming_origin: &str,
    conflicts: &[ColumnConflict],
) -> NewConflict {
    let fields: Vec<&str> = conflicts.iter().map(|c| c.column.as_str()).collect();
    let winner: BTreeMap<&str, &str> =
        conflicts.iter().map(|c| (c.column.as_str(), if c.theirs_wins() { "incoming" } else { "stored" })).collect();
    let dedupe = format!(
        "{}|{key}|{}",
        table.name,
        conflicts.iter().map(|c| format!("{}={}", c.column, c.theirs.at)).collect::<Vec<_>>().join(",")
    );
    NewConflict {
        table: table.name.clone(),
        key: key.to_owned(),
        fields: serde_json::to_string(&fields).expect("strings serialize"),
        stored: version(table, stored, stored_origin).to_string(),
        incoming: version(table, incoming, Some(incoming_origin)).to_string(),
        winner: serde_json::to_string(&winner).expect("strings serialize"),
        strategy: table.options.conflict.name(),
        resolved: table.options.conflict == ConflictStrategy::Lww,
        dedupe,
    }
}

/// Builds a record from its stored columns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    id: i64,
    table: String,
    key: String,
    kind: String,
    fields: &str,
    strategy: String,
    stored: &str,
    incoming: &str,
    winner: &str,
    resolved_by: Option<String>,
    resolved_at: Option<String>,
    detected_at: String,
) -> ConflictRecord {
    ConflictRecord {
        id,
        table,
        key,
        kind,
        fields: serde_json::from_str(fields).unwrap_or_default(),
        strategy,
        stored: serde_json::from_str(stored).unwrap_or_default(),
        incoming: serde_json::from_str(incoming).unwrap_or_default(),
        winner: serde_json::from_str(winner).unwrap_or_default(),
        resolved_by,
        resolved_at,
        detected_at,
    }
}

/// Which version of a conflict a person keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    Stored,
    Incoming,
}

impl Keep {
    pub fn name(self) -> &'static str {
        match self {
            Keep::Stored => "stored",
            Keep::Incoming => "incoming",
        }
    }
}

/// The values a resolution writes: the kept version's values of the conflict's fields, read
/// from the log entry (stored values JSON) and typed by the table.
pub(crate) fn kept_values(
    table: &Table,
    record: &ConflictRecord,
    keep: Keep,
) -> Result<Vec<(String, ferry_core::Value)>, String> {
    let version = match keep {
        Keep::Stored => &record.stored,
        Keep::Incoming => &record.incoming,
    };
    let values = ferry_sqlite::decode_values(table, &version["values"].to_string())?;
    Ok(record.fields.iter().map(|f| (f.clone(), values.get(f).cloned().unwrap_or(ferry_core::Value::Null))).collect())
}

/// Checks that a conflict can be resolved: it exists and is still open.
pub(crate) fn check_open(id: i64, record: Option<&ConflictRecord>) -> crate::Result<&ConflictRecord> {
    let Some(record) = record else {
        return Err(crate::StoreError::NotFound(format!(
            "no conflict with id {id}; `ferry conflicts list` shows the ids"
        )));
    };
    if let (Some(by), Some(at)) = (&record.resolved_by, &record.resolved_at) {
        return Err(crate::StoreError::Exists(format!("conflict {id} is already resolved (by {by} at {at})")));
    }
    Ok(record)
}

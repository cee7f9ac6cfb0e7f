//! The server's conflict log: every value a concurrent write overwrote, with both versions,
//! kept until someone looks (invariant 4: no silent overwrite).
//!
//! A conflict is recorded when a pushed row meets stored writes its device had not seen
//! (see `ferry_core::strategy`). Every strategy but `manual` settles it at once and the entry
//! is recorded as resolved by the strategy's name; the losing values stay here for audit.

use std::collections::BTreeMap;

use ferry_core::RowState;
use ferry_core::schema::Table;
use ferry_core::strategy::{Contest, EXISTS, Register, Side};

/// One entry of the conflict log.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConflictRecord {
    pub id: i64,
    pub table: String,
    pub key: String,
    /// `update-update`: two writes to the same fields, neither seeing the other (under
    /// `row-lww` and `reject-stale`: to the same row); `delete-update`: the push deleted a row
    /// changed since its device saw it; `update-delete`: the push changed a row deleted since.
    pub kind: String,
    /// The contested fields; `*` stands for the row's existence.
    pub fields: Vec<String>,
    pub strategy: String,
    /// The stored version before the merge: `{"origin", "exists", "values", "clocks"}`, values
    /// in the wire form (as pushes and pulls carry them).
    pub stored: serde_json::Value,
    /// The incoming version: `{"origin", "exists", "values", "clocks"}`.
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
    pub kind: &'static str,
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

/// A version as the log keeps it; values in the wire form (as pushes and pulls carry them).
fn version(table: &Table, state: &RowState, origin: Option<&str>) -> ferry_protocol::ConflictVersion {
    ferry_protocol::ConflictVersion {
        origin: origin.map(str::to_owned),
        exists: state.is_alive(),
        values: ferry_protocol::encode_row(table, "", state).values,
        clocks: state.cols.iter().map(|(c, s)| (c.clone(), s.at.to_string())).collect(),
    }
}

/// A version as the log's column holds it.
fn version_text(v: &ferry_protocol::ConflictVersion) -> String {
    serde_json::to_string(v).expect("versions serialize")
}

/// A conflict to log: `stored` and `incoming` are each version with its origin (the device
/// that last wrote it).
pub(crate) fn new_conflict(
    table: &Table,
    key: &str,
    (stored, stored_origin): (&RowState, Option<&str>),
    (incoming, incoming_origin): (&RowState, &str),
    contest: &Contest,
    open: bool,
) -> NewConflict {
    let winner: BTreeMap<&str, &str> = contest
        .winner
        .iter()
        .map(|(f, s)| (f.as_str(), if *s == Side::Theirs { "incoming" } else { "stored" }))
        .collect();
    // Identifies the conflict: both sides' clocks of the contested fields. A retried push
    // meeting the same stored version logs it once; meeting a later one, again.
    let clock_of = |s: &RowState, f: &str| {
        if f == EXISTS { s.exists.at } else { s.cols.get(f).map_or(ferry_core::Hlc::ZERO, |v| v.at) }
    };
    let dedupe = format!(
        "{}|{key}|{}|{}",
        table.name,
        contest.theirs_clocks.iter().map(|(c, h)| format!("{c}={h}")).collect::<Vec<_>>().join(","),
        contest.fields.iter().map(|f| format!("{f}={}", clock_of(stored, f))).collect::<Vec<_>>().join(",")
    );
    NewConflict {
        table: table.name.clone(),
        key: key.to_owned(),
        kind: contest.kind.name(),
        fields: serde_json::to_string(&contest.fields).expect("strings serialize"),
        stored: version_text(&version(table, stored, stored_origin)),
        incoming: version_text(&version(table, incoming, Some(incoming_origin))),
        winner: serde_json::to_string(&winner).expect("strings serialize"),
        strategy: table.options.conflict.name(),
        resolved: !open,
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

/// The registers a resolution writes: the kept version's values of the conflict's fields
/// (and its existence, when `*` is one of them), read from the log entry and typed by the
/// table.
pub(crate) fn kept_registers(
    table: &Table,
    record: &ConflictRecord,
    keep: Keep,
) -> Result<Vec<(String, Register)>, String> {
    let version = match keep {
        Keep::Stored => &record.stored,
        Keep::Incoming => &record.incoming,
    };
    let json = version["values"].as_object().cloned().unwrap_or_default();
    let mut values = BTreeMap::new();
    for (name, v) in &json {
        let Some(col) = table.column(name) else { continue };
        values.insert(name.clone(), ferry_protocol::value_from_json(col.ty, v).map_err(|e| format!("{name}: {e}"))?);
    }
    Ok(record
        .fields
        .iter()
        .map(|f| {
            if f == EXISTS {
                (f.clone(), Register::Exists(version["exists"].as_bool().unwrap_or(true)))
            } else {
                (f.clone(), Register::Col(values.get(f).cloned().unwrap_or(ferry_core::Value::Null)))
            }
        })
        .collect())
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

/// When the row changed again since conflict `record` was logged, the resolution overwrites
/// those later changes too: they are logged as a conflict of their own (resolved by
/// `manual`), so no value is lost unrecorded.
pub(crate) fn overwritten_by_resolution(
    table: &Table,
    record: &ConflictRecord,
    keep: Keep,
    current: &RowState,
) -> Option<NewConflict> {
    let now = version(table, current, None);
    let provisional = |f: &str| -> serde_json::Value {
        let side = if record.winner.get(f).map(String::as_str) == Some("incoming") {
            &record.incoming
        } else {
            &record.stored
        };
        if f == EXISTS { side["exists"].clone() } else { side["values"][f].clone() }
    };
    let current_of = |f: &str| {
        if f == EXISTS { now.exists.into() } else { now.values.get(f).cloned().unwrap_or_default() }
    };
    let fields: Vec<&String> = record.fields.iter().filter(|f| provisional(f) != current_of(f)).collect();
    if fields.is_empty() {
        return None;
    }
    let kept = match keep {
        Keep::Stored => &record.stored,
        Keep::Incoming => &record.incoming,
    };
    Some(NewConflict {
        table: table.name.clone(),
        key: record.key.clone(),
        kind: "update-update",
        fields: serde_json::to_string(&fields).expect("strings serialize"),
        stored: version_text(&now),
        incoming: kept.to_string(),
        winner: serde_json::to_string(&fields.iter().map(|f| (f.as_str(), "incoming")).collect::<BTreeMap<_, _>>())
            .expect("strings serialize"),
        strategy: "manual",
        resolved: true,
        dedupe: format!("resolution of {}", record.id),
    })
}

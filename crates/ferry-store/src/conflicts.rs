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
use ferry_protocol::{ConflictKind, ConflictRecord, ConflictSide, ConflictVersion, Strategy};

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
fn version(table: &Table, state: &RowState, origin: Option<&str>) -> ConflictVersion {
    ConflictVersion {
        origin: origin.map(str::to_owned),
        exists: state.is_alive(),
        values: ferry_protocol::encode_row(table, "", state).values,
        clocks: state.cols.iter().map(|(c, s)| (c.clone(), s.at.to_string())).collect(),
    }
}

/// A version as the log's column holds it.
fn version_text(v: &ConflictVersion) -> String {
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

/// Builds a record from its stored columns; an entry this version cannot read is named.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    id: i64,
    table: String,
    key: String,
    kind: &str,
    fields: &str,
    strategy: &str,
    stored: &str,
    incoming: &str,
    winner: &str,
    resolved_by: Option<&str>,
    resolved_at: Option<String>,
    detected_at: String,
) -> Result<ConflictRecord, String> {
    let bad = |what: &str, why: &dyn std::fmt::Display| format!("conflict {id} in the log has a bad {what}: {why}");
    let strategy_named = |s: &str, what: &str| Strategy::parse(s).ok_or_else(|| bad(what, &format!("'{s}'")));
    let version = |v: &str, what: &str| serde_json::from_str::<ConflictVersion>(v).map_err(|e| bad(what, &e));
    Ok(ConflictRecord {
        id,
        kind: ConflictKind::parse(kind).ok_or_else(|| bad("kind", &format!("'{kind}'")))?,
        fields: serde_json::from_str(fields).map_err(|e| bad("field list", &e))?,
        strategy: strategy_named(strategy, "strategy")?,
        stored: version(stored, "stored version")?,
        incoming: version(incoming, "incoming version")?,
        winner: serde_json::from_str(winner).map_err(|e| bad("winner", &e))?,
        resolved_by: resolved_by.map(|s| strategy_named(s, "resolver")).transpose()?,
        table,
        key,
        resolved_at,
        detected_at,
    })
}

/// The registers a resolution writes: the kept version's values of the conflict's fields
/// (and its existence, when `*` is one of them), read from the log entry and typed by the
/// table.
pub(crate) fn kept_registers(
    table: &Table,
    record: &ConflictRecord,
    keep: ConflictSide,
) -> Result<Vec<(String, Register)>, String> {
    let version = match keep {
        ConflictSide::Stored => &record.stored,
        ConflictSide::Incoming => &record.incoming,
    };
    let mut values = BTreeMap::new();
    for (name, v) in &version.values {
        let Some(col) = table.column(name) else { continue };
        values.insert(name.clone(), ferry_protocol::value_from_json(col.ty, v).map_err(|e| format!("{name}: {e}"))?);
    }
    Ok(record
        .fields
        .iter()
        .map(|f| {
            if f == EXISTS {
                (f.clone(), Register::Exists(version.exists))
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
    keep: ConflictSide,
    current: &RowState,
) -> Option<NewConflict> {
    let now = version(table, current, None);
    let provisional = |f: &str| -> serde_json::Value {
        let side = match record.winner.get(f) {
            Some(ConflictSide::Incoming) => &record.incoming,
            _ => &record.stored,
        };
        if f == EXISTS { side.exists.into() } else { side.values.get(f).cloned().unwrap_or_default() }
    };
    let current_of = |f: &str| {
        if f == EXISTS { now.exists.into() } else { now.values.get(f).cloned().unwrap_or_default() }
    };
    let fields: Vec<&String> = record.fields.iter().filter(|f| provisional(f) != current_of(f)).collect();
    if fields.is_empty() {
        return None;
    }
    let kept = match keep {
        ConflictSide::Stored => &record.stored,
        ConflictSide::Incoming => &record.incoming,
    };
    Some(NewConflict {
        table: table.name.clone(),
        key: record.key.clone(),
        kind: "update-update",
        fields: serde_json::to_string(&fields).expect("strings serialize"),
        stored: version_text(&now),
        incoming: version_text(kept),
        winner: serde_json::to_string(&fields.iter().map(|f| (f.as_str(), "incoming")).collect::<BTreeMap<_, _>>())
            .expect("strings serialize"),
        strategy: "manual",
        resolved: true,
        dedupe: format!("resolution of {}", record.id),
    })
}

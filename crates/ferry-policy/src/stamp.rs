//! Stamping: the writes captured on a row since its last stamp, each with its clock, become
//! the row's new state and its change record (what the writer had seen).

use std::collections::BTreeMap;

use ferry_core::strategy::RowClocks;
use ferry_core::{Hlc, RowState, Value};

/// One captured write on a row, as the capture triggers record it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Captured {
    Insert,
    /// An update of these columns.
    Update(Vec<String>),
    Delete,
}

impl Captured {
    /// Reads a captured write: its operation (`I`, `U` or `D`) and, for an update, the
    /// changed columns as a JSON array.
    ///
    /// # Errors
    /// An unknown operation or unreadable columns, named.
    pub fn parse(op: &str, cols: Option<&str>) -> Result<Captured, String> {
        match op {
            "I" => Ok(Captured::Insert),
            "D" => Ok(Captured::Delete),
            "U" => {
                let names = cols
                    .map(serde_json::from_str::<Vec<String>>)
                    .transpose()
                    .map_err(|e| format!("changed columns {}: {e}", ferry_core::shown(cols.unwrap_or_default())))?;
                Ok(Captured::Update(names.unwrap_or_default()))
            }
            other => Err(format!("captured operation '{}' is not I, U or D", ferry_core::shown(other))),
        }
    }
}

/// The wall time a captured write is stamped at: when it was captured, but never later than
/// now (a write captured while the device's clock ran ahead must not carry this replica's
/// clock into the future for good).
pub fn wall_for(captured_ms: i64, now_ms: u64) -> u64 {
    (captured_ms.max(0) as u64).min(now_ms)
}

/// What a replica holds of a row before stamping it.
#[derive(Clone, Debug, Default)]
pub struct Before {
    /// Its state ([`RowState::unknown`] for a row never stamped).
    pub state: RowState,
    /// For each column changed since the last acknowledged push, the clock of the value the
    /// first such change replaced.
    pub base: BTreeMap<String, Hlc>,
    /// Whether the version its unacknowledged changes started from is recorded already.
    pub seen_recorded: bool,
}

/// A stamped row: its state and change record.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub state: RowState,
    /// `Before::base` with the columns these writes changed first.
    pub base: BTreeMap<String, Hlc>,
    /// For a first unacknowledged change, the version it started from (to record);
    /// `None` when one is recorded already.
    pub seen: Option<RowClocks>,
}

/// The values a stamped row ends with: the row's current values when it exists; else those
/// its last captured delete recorded (`deleted`); else what its state holds.
pub fn values_after(
    current: Option<BTreeMap<String, Value>>,
    deleted: Option<BTreeMap<String, Value>>,
    state: &RowState,
) -> BTreeMap<String, Value> {
    current.or(deleted).unwrap_or_else(|| state.cols.iter().map(|(c, s)| (c.clone(), s.value.clone())).collect())
}

/// Folds a row's captured writes `ops` (in capture order, each with its clock) into what
/// the replica held of it. `values` are the row's values after them ([`values_after`]).
///
/// An insert writes every column; an update of a row Ferry never tracked (it predates
/// capture) is its first appearance and counts as an insert; a delete writes existence.
pub fn fold(before: Before, values: &BTreeMap<String, Value>, ops: &[(Captured, Hlc)]) -> Change {
    let Before { mut state, mut base, seen_recorded } = before;
    let known = state.exists.at != Hlc::ZERO;
    let seen = (!seen_recorded).then(|| state.clocks());
    // What the writer had seen of each column it changed: the clock of the value replaced
    // by the first change not acknowledged yet.
    let saw = |base: &mut BTreeMap<String, Hlc>, state: &RowState, cols: &mut dyn Iterator<Item = &String>| {
        for c in cols {
            base.entry(c.clone()).or_insert_with(|| state.cols.get(c).map_or(Hlc::ZERO, |s| s.at));
        }
    };
    for (op, at) in ops {
        match op {
            Captured::Delete => state.delete(*at),
            Captured::Update(cols) if known || state.exists.at != Hlc::ZERO => {
                saw(&mut base, &state, &mut cols.iter());
                let changed = cols.iter().filter_map(|c| values.get(c).map(|v| (c.clone(), v.clone())));
                state.update(changed, *at);
            }
            // An insert, or an update of a row Ferry never tracked (it predates capture): its
            // first appearance, recorded whole.
            Captured::Insert | Captured::Update(_) => {
                saw(&mut base, &state, &mut values.keys());
                state.insert(values.clone(), *at);
            }
        }
    }
    // Every column holds the row's last values (a later write's value under an earlier
    // clock is still that later write's, stamped at the clock of the write that changed it).
    for (col, s) in state.cols.iter_mut() {
        if let Some(v) = values.get(col) {
            s.value = v.clone();
        }
    }
    Change { state, base, seen }
}

/// A row inserted here and not written since, the bulk of a large outbox: [`fold`]'s result
/// for one insert of a row never stamped, without copying the values.
pub fn inserted(columns: impl IntoIterator<Item = (String, Value)>, at: Hlc) -> RowState {
    RowState::inserted(columns, at)
}

/// The change record of a row inserted here: every data column replacing nothing, from the
/// empty version (the same for every such row of a table).
pub fn inserted_change<'a>(data_columns: impl IntoIterator<Item = &'a str>) -> (BTreeMap<String, Hlc>, RowClocks) {
    let base = data_columns.into_iter().map(|c| (c.to_owned(), Hlc::ZERO)).collect();
    (base, RowState::unknown().clocks())
}

/// Whether a row's captured writes are one insert of a row never stamped whose values are
/// present: [`inserted`] and [`inserted_change`] then give what [`fold`] would.
pub fn is_fresh_insert(stamped_before: bool, exists: bool, ops: &[(Captured, Hlc)]) -> bool {
    !stamped_before && exists && matches!(ops, [(Captured::Insert, _)])
}

//! The stored forms of a replica's bookkeeping records: change records (base and seen
//! clocks), versions kept as wire rows, values shown in the conflict view.

use std::collections::BTreeMap;

use ferry_core::schema::Schema;
use ferry_core::strategy::{EXISTS, RowClocks};
use ferry_core::{Hlc, RowState};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};

/// A row's change record as stored: its base clocks (`None` when empty) and, when given,
/// the version its first unacknowledged change started from.
///
/// A row inserted here (every data column replacing nothing) stores its base as
/// `{"*":"0"}`, not the zero clock of every column spelled out: those bookkeeping rows would
/// be several times larger until their push is acknowledged, and once shrunk back they
/// would leave `_ferry_rows` mostly empty pages.
pub(super) fn change_json(
    table: &ferry_core::schema::Table,
    base: &BTreeMap<String, Hlc>,
    seen: Option<&RowClocks>,
) -> Result<(Option<String>, Option<String>)> {
    let every_column_new = base.values().all(|h| *h == Hlc::ZERO)
        && base.len() == table.data_columns().count()
        && table.data_columns().all(|c| base.contains_key(&c.name));
    let base = if base.is_empty() {
        None
    } else if every_column_new {
        Some(ALL_NEW.to_owned())
    } else {
        Some(
            serde_json::to_string(&base.iter().map(|(c, h)| (c, h.to_string())).collect::<BTreeMap<_, _>>())
                .map_err(|e| Error::Local(e.to_string()))?,
        )
    };
    Ok((base, seen.map(seen_json).transpose()?))
}

/// The stored base of a row whose every data column is new (see [`change_json`]).
pub(super) const ALL_NEW: &str = r#"{"*":"0"}"#;

pub(super) fn parse_base(
    table: &ferry_core::schema::Table,
    pk: &str,
    json: Option<String>,
) -> Result<BTreeMap<String, Hlc>> {
    let Some(json) = json else { return Ok(BTreeMap::new()) };
    if json == ALL_NEW {
        return Ok(table.data_columns().map(|c| (c.name.clone(), Hlc::ZERO)).collect());
    }
    let map: BTreeMap<String, String> = serde_json::from_str(&json)
        .map_err(|e| Error::Local(format!("stored base clocks of {} '{pk}': {e}", table.name)))?;
    map.into_iter()
        .map(|(c, h)| Ok((c, h.parse().map_err(|e| Error::Local(format!("stored base clock: {e}")))?)))
        .collect()
}

/// The version a row's unacknowledged local changes started from (`None`: no such changes).
pub(super) fn read_seen(conn: &Connection, table: &str, pk: &str) -> Result<Option<RowClocks>> {
    let seen: Option<String> = conn
        .prepare_cached("SELECT seen FROM _ferry_rows WHERE tbl = ?1 AND pk = ?2")?
        .query_row([table, pk], |r| r.get(0))
        .optional()?
        .flatten();
    seen.map(|j| parse_seen(table, pk, &j)).transpose()
}

pub(super) fn parse_seen(table: &str, pk: &str, json: &str) -> Result<RowClocks> {
    RowClocks::from_json(json).map_err(|e| Error::Local(format!("stored seen clocks of {table} '{pk}': {e}")))
}

pub(super) fn seen_json(seen: &RowClocks) -> Result<String> {
    Ok(seen.to_json())
}

pub(super) fn write_seen(conn: &Connection, table: &str, pk: &str, seen: &RowClocks) -> Result<()> {
    conn.prepare_cached("UPDATE _ferry_rows SET seen = ?3 WHERE tbl = ?1 AND pk = ?2")?.execute(params![
        table,
        pk,
        seen_json(seen)?
    ])?;
    Ok(())
}

pub(super) fn version_json(text: Option<String>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::Value::Null)
}

/// A register's value (JSON, in the wire form as the conflict's whole versions) and clock,
/// for the replica's conflict view.
pub(super) fn register_json(table: &ferry_core::schema::Table, state: &RowState, f: &str) -> (Option<String>, String) {
    if f == EXISTS {
        return (Some(state.exists.value.to_string()), state.exists.at.to_string());
    }
    let ty = table.column(f).map_or(ferry_core::schema::ColType::Text, |c| c.ty);
    state.cols.get(f).map_or((None, Hlc::ZERO.to_string()), |s| {
        (Some(ferry_protocol::value_to_json(ty, &s.value).to_string()), s.at.to_string())
    })
}

/// A row state as a wire row (JSON), for `_ferry_refused`.
pub(super) fn state_json_row(table: &ferry_core::schema::Table, key: &str, state: &RowState) -> String {
    serde_json::to_string(&ferry_protocol::encode_row(table, key, state)).expect("wire rows serialize")
}

/// Removes and returns the pulled version held beside a row's unanswered local change.
pub(super) fn take_held(tx: &Connection, schema: &Schema, table: &str, key: &str) -> Result<Option<RowState>> {
    let held: Option<String> = tx
        .prepare_cached("DELETE FROM _ferry_held WHERE tbl = ?1 AND pk = ?2 RETURNING state")?
        .query_row(params![table, key], |r| r.get(0))
        .optional()?;
    held.map(|j| state_from_json(schema, &j)).transpose()
}

pub(super) fn state_from_json(schema: &Schema, json: &str) -> Result<RowState> {
    let wire: ferry_protocol::WireRow =
        serde_json::from_str(json).map_err(|e| Error::Local(format!("stored refused row: {e}")))?;
    let (_, state) =
        ferry_protocol::decode_row(schema, &wire).map_err(|e| Error::Local(format!("stored refused row: {e}")))?;
    Ok(state)
}

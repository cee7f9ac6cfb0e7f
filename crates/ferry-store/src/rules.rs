//! Write rules in the stores: what a push checks against a table's `write` rule, shared by
//! both stores (each reads the rules' subqueries in its own SQL).

use std::collections::{BTreeMap, HashMap, HashSet};

use ferry_core::schema::{Schema, Table};
use ferry_core::{RowState, Value};

use crate::{Principal, Result, StoreError};

/// What each subquery of a table's write rule selects: the inner rows' keys and values.
pub(crate) type Selected = Vec<Vec<(String, Value)>>;

/// The values alone of [`Selected`] sets, by table.
pub(crate) fn selected_values(sets: &HashMap<String, Selected>) -> HashMap<String, Vec<Vec<Value>>> {
    sets.iter()
        .map(|(t, s)| (t.clone(), s.iter().map(|set| set.iter().map(|(_, v)| v.clone()).collect()).collect()))
        .collect()
}

/// The subqueries of the `write` rules of `tables`, each ruled table once: what a push reads
/// for the pushing user (each store in its own SQL) before checking the batch.
pub(crate) fn write_subqueries<'s, 'a>(
    schema: &'s Schema,
    tables: impl IntoIterator<Item = &'a str>,
) -> Vec<(&'s str, Vec<&'s ferry_core::rules::Select>)> {
    let mut out: Vec<(&str, Vec<&ferry_core::rules::Select>)> = Vec::new();
    for name in tables {
        let Some(table) = schema.table(name) else { continue };
        let Some(rule) = write_rule(table) else { continue };
        if !out.iter().any(|(n, _)| *n == table.name) {
            out.push((&table.name, rule.subqueries()));
        }
    }
    out
}

/// Whether any table has a `write` rule (only then does a push keep what it wrote to check).
pub(crate) fn has_write_rules(schema: &Schema) -> bool {
    schema.tables.iter().any(|t| write_rule(t).is_some())
}

/// Checks the live rows a batch wrote to tables with a `write` rule. Each must be allowed by
/// the stored rows as they were before the batch together with rows of the batch already
/// allowed (or needing no check), never by itself: a batch may create a group, make its
/// creator the first owner and add a formation, in any order, but no row lets itself in, and
/// no two rows let each other in. `written`: every row the batch changed; `before`: what the
/// rules' subqueries selected before the batch, for each ruled table of the batch.
pub(crate) fn check_batch(
    schema: &Schema,
    who: &Principal,
    order: &[(String, String)],
    written: &HashMap<(String, String), RowState>,
    before: &HashMap<String, Selected>,
) -> Result<()> {
    let mut rows: Vec<(&Table, &str, &RowState)> = Vec::new();
    for (table, key) in order {
        let (Some(t), Some(state)) = (schema.table(table), written.get(&(table.clone(), key.clone()))) else {
            continue;
        };
        if !rows.iter().any(|(t2, k2, _)| t2.name == t.name && *k2 == key.as_str()) {
            rows.push((t, key, state));
        }
    }
    let needs_check = |(t, _, s): &(&Table, &str, &RowState)| write_rule(t).is_some() && s.is_alive();
    let (mut waiting, mut allowed): (Vec<_>, Vec<_>) = rows.into_iter().partition(needs_check);
    let empty = Vec::new();
    // Rounds until no waiting row is let in by those allowed so far.
    loop {
        let mut progressed = false;
        let mut still = Vec::new();
        for row in waiting {
            let (table, key, state) = row;
            let rule = write_rule(table).expect("waiting rows have rules");
            let base = before.get(&table.name).unwrap_or(&empty);
            let mut sets = Vec::new();
            for (n, select) in rule.subqueries().into_iter().enumerate() {
                let inner = schema.table(&select.table).expect("rules name schema tables");
                let mine = allowed.iter().filter(|(t, _, _)| t.name == select.table);
                let replaced: HashSet<&str> = mine.clone().map(|(_, k, _)| *k).collect();
                let mut values: Vec<Value> = base
                    .get(n)
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| !replaced.contains(k.as_str()))
                    .map(|(_, v)| v.clone())
                    .collect();
                for (_, k, s) in mine.filter(|(_, _, s)| s.is_alive()) {
                    let row = rule_row(inner, k, s);
                    if select.admits(&row, &who.user_id) {
                        values.push(row.get(&select.column).cloned().unwrap_or(Value::Null));
                    }
                }
                sets.push(values);
            }
            if rule.allows_given(&rule_row(table, key, state), &who.user_id, &sets) {
                allowed.push(row);
                progressed = true;
            } else {
                still.push(row);
            }
        }
        waiting = still;
        if waiting.is_empty() || !progressed {
            break;
        }
    }
    match waiting.first() {
        Some((table, key, _)) => Err(refused_write(table, key, who, "as written")),
        None => Ok(()),
    }
}

/// A table's own `write` rule (not the one `owner` implies, which its own checks enforce).
pub(crate) fn write_rule(table: &Table) -> Option<&ferry_core::rules::Rule> {
    table.options.write.as_ref().and(table.access.write.as_ref())
}

/// A row's values as rules read them: the key and every written column.
pub(crate) fn rule_row(table: &Table, key: &str, state: &RowState) -> BTreeMap<String, Value> {
    let mut row: BTreeMap<String, Value> = state.cols.iter().map(|(c, s)| (c.clone(), s.value.clone())).collect();
    row.insert(table.pk_column().name.clone(), Value::Text(key.to_owned()));
    row
}

/// Checks a live row against the table's `write` rule for `who`, the rule's subqueries
/// having selected `sets`; `when` says which version it is, for the message.
pub(crate) fn check_write(
    table: &Table,
    key: &str,
    state: &RowState,
    who: &Principal,
    sets: &[Vec<Value>],
    when: &str,
) -> Result<()> {
    let Some(rule) = write_rule(table) else { return Ok(()) };
    if !state.is_alive() || rule.allows_given(&rule_row(table, key, state), &who.user_id, sets) {
        return Ok(());
    }
    Err(refused_write(table, key, who, when))
}

/// The 403 for a row the table's `write` rule does not allow.
fn refused_write(table: &Table, key: &str, who: &Principal, when: &str) -> StoreError {
    let rule = write_rule(table).map_or("", |r| r.source.as_str());
    StoreError::Forbidden(format!(
        "{} '{}': the table's write rule `{rule}` does not let user '{}' write this row {when}",
        table.name,
        ferry_core::shown(key),
        who.user_name
    ))
}

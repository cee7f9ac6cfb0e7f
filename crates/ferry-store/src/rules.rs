//! Write rules in the stores: what a push checks against a table's `write` rule, shared by
//! both stores (each reads the rules' subqueries in its own SQL).

use std::collections::{BTreeMap, HashMap, HashSet};

use ferry_core::schema::{Schema, Table};
use ferry_core::{RowState, Value};

use crate::{Principal, Result, StoreError};

/// The rows a batch changed, by table and key.
pub(crate) type Written = HashMap<String, HashMap<String, RowState>>;

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
    written: &Written,
    before: &HashMap<String, Selected>,
) -> Result<()> {
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(order.len());
    let mut waiting: Vec<(&Table, &str, &RowState)> = Vec::new();
    // The batch's rows of the tables rules' subqueries read, admitted so far, by table.
    let read: HashSet<&str> = schema.tables.iter().filter_map(write_rule).flat_map(|r| r.tables()).collect();
    let mut admitted: HashMap<&str, Vec<(&str, &RowState)>> = HashMap::new();
    for (table, key) in order {
        if !seen.insert((table, key)) {
            continue;
        }
        let (Some(t), Some(state)) = (schema.table(table), written.get(table).and_then(|w| w.get(key))) else {
            continue;
        };
        if write_rule(t).is_some() && state.is_alive() {
            waiting.push((t, key, state));
        } else if read.contains(t.name.as_str()) {
            admitted.entry(&t.name).or_default().push((key, state));
        }
    }
    let empty = Vec::new();
    // What each ruled table's subqueries select now; dropped when a row of a table they read
    // is admitted.
    let mut sets: HashMap<&str, Vec<Vec<Value>>> = HashMap::new();
    // Rounds until no waiting row is let in by those admitted so far.
    loop {
        let mut progressed = false;
        let mut still = Vec::new();
        for row in waiting {
            let (table, key, state) = row;
            let rule = write_rule(table).expect("waiting rows have rules");
            let given = sets.entry(&table.name).or_insert_with(|| {
                let base = before.get(&table.name).unwrap_or(&empty);
                rule.subqueries()
                    .into_iter()
                    .enumerate()
                    .map(|(n, select)| {
                        selected_now(schema, who, select, base.get(n), admitted.get(select.table.as_str()))
                    })
                    .collect()
            });
            let columns = rule.columns();
            if rule.allows_given(&rule_row(table, key, state, Some(&columns)), &who.user_id, given) {
                progressed = true;
                if read.contains(table.name.as_str()) {
                    admitted.entry(&table.name).or_default().push((key, state));
                    sets.clear();
                }
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

/// What `select` selects for `who` now: the stored rows (`base`, before the batch) that the
/// batch has not replaced, and the batch's admitted rows of its table (`admitted`).
fn selected_now(
    schema: &Schema,
    who: &Principal,
    select: &ferry_core::rules::Select,
    base: Option<&Vec<(String, Value)>>,
    admitted: Option<&Vec<(&str, &RowState)>>,
) -> Vec<Value> {
    let inner = schema.table(&select.table).expect("rules name schema tables");
    let admitted = admitted.map_or(&[][..], Vec::as_slice);
    let replaced: HashSet<&str> = admitted.iter().map(|(k, _)| *k).collect();
    let mut values: Vec<Value> =
        base.into_iter().flatten().filter(|(k, _)| !replaced.contains(k.as_str())).map(|(_, v)| v.clone()).collect();
    for (k, s) in admitted.iter().filter(|(_, s)| s.is_alive()) {
        let row = rule_row(inner, k, s, None);
        if select.admits(&row, &who.user_id) {
            values.push(row.get(&select.column).cloned().unwrap_or(Value::Null));
        }
    }
    values
}

/// A table's own `write` rule (not the one `owner` implies, which its own checks enforce).
pub(crate) fn write_rule(table: &Table) -> Option<&ferry_core::rules::Rule> {
    table.options.write.as_ref().and(table.access.write.as_ref())
}

/// A row's values as rules read them: the key and the written columns (only `columns`, when
/// given: those the rule reads).
pub(crate) fn rule_row(
    table: &Table,
    key: &str,
    state: &RowState,
    columns: Option<&[&str]>,
) -> BTreeMap<String, Value> {
    let wanted = |c: &str| columns.is_none_or(|cs| cs.contains(&c));
    let mut row: BTreeMap<String, Value> =
        state.cols.iter().filter(|(c, _)| wanted(c)).map(|(c, s)| (c.clone(), s.value.clone())).collect();
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
    if !state.is_alive() || rule.allows_given(&rule_row(table, key, state, Some(&rule.columns())), &who.user_id, sets) {
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

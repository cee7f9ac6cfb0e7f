//! Read rules in the stores: what a user may read (their *scope*), and the feed's condition
//! that sends each device the rows its user may read, moves rows in and out as the scope
//! changes, and tells devices which rows left their reach (docs/design.md, "Sharing rules").
//!
//! Every row of a table with a `read` rule keeps its *reach* in the bookkeeping (the values
//! of the columns the rule reads, deleted rows too), and when a row's reach changes the old
//! one is kept in `_ferry_exits`, so that a row moved out of a user's reach by its own change
//! can still be found for the devices that held it. A scope is what the rules' subqueries
//! select for a user; a cursor names the scope its device was served (by hash, the scope
//! itself kept in `_ferry_scopes`), and a pull compares it with the scope now.

use std::collections::BTreeMap;

use ferry_core::rules::{Dialect, Rule, Slot};
use ferry_core::schema::{Schema, Table};
use ferry_core::{RowState, Value};

/// A table's own `read` rule, with its `filter` (tables with only `owner` keep their owner in
/// the bookkeeping).
pub(crate) fn read_rule(table: &Table) -> Option<&Rule> {
    if table.options.read.is_none() && table.options.filter.is_none() {
        return None;
    }
    table.access.read.as_ref()
}

/// Whether any table has a `read` rule.
pub(crate) fn has_read_rules(schema: &Schema) -> bool {
    schema.tables.iter().any(|t| read_rule(t).is_some())
}

/// The tables the `read` rules' subqueries read: a change to them may change scopes.
pub(crate) fn scope_tables(schema: &Schema) -> Vec<&str> {
    let mut out: Vec<&str> = schema.tables.iter().filter_map(read_rule).flat_map(|r| r.tables()).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The subqueries of every table's `read` rule, by table.
pub(crate) fn read_subqueries(schema: &Schema) -> Vec<(&Table, Vec<&ferry_core::rules::Select>)> {
    schema.tables.iter().filter_map(|t| read_rule(t).map(|r| (t, r.subqueries()))).collect()
}

/// A row's reach under its table's `read` rule; `None` for tables without one.
pub(crate) fn reach_of(table: &Table, key: &str, state: &RowState) -> Option<String> {
    let rule = read_rule(table)?;
    Some(rule.reach(&crate::rules::rule_row(table, key, state, Some(&rule.columns()))))
}

/// What the `read` rules' subqueries select for one user: for each ruled table, the rule (as
/// written, so that a scope served under another rule is not taken for this one's) and each
/// subquery's values, sorted, without repeats.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    tables: BTreeMap<String, (String, Vec<Vec<Value>>)>,
}

fn json_of(v: &Value) -> serde_json::Value {
    match v {
        Value::Integer(i) => (*i).into(),
        Value::Text(t) => t.clone().into(),
        _ => serde_json::Value::Null,
    }
}

fn value_of(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Number(n) => n.as_i64().map_or(Value::Null, Value::Integer),
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Bool(b) => Value::Integer((*b).into()),
        _ => Value::Null,
    }
}

impl Scope {
    /// Adds `table`'s sets (one per subquery of its rule, in order).
    pub(crate) fn insert(&mut self, table: &Table, sets: Vec<Vec<Value>>) {
        let rule = read_rule(table).map(|r| r.source.clone()).unwrap_or_default();
        let sets = sets
            .into_iter()
            .map(|set| {
                let mut items: Vec<(String, Value)> = set.into_iter().map(|v| (json_of(&v).to_string(), v)).collect();
                items.sort_by(|a, b| a.0.cmp(&b.0));
                items.dedup_by(|a, b| a.0 == b.0);
                items.into_iter().map(|(_, v)| v).collect()
            })
            .collect();
        self.tables.insert(table.name.clone(), (rule, sets));
    }

    /// What `table`'s subqueries selected (none for a table without a rule).
    pub(crate) fn sets(&self, table: &str) -> &[Vec<Value>] {
        self.tables.get(table).map_or(&[], |(_, s)| s.as_slice())
    }

    /// The scope as stored: `{"table": {"rule": …, "sets": [[…], …]}, …}`.
    pub(crate) fn json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .tables
            .iter()
            .map(|(t, (rule, sets))| {
                let sets: Vec<serde_json::Value> =
                    sets.iter().map(|s| serde_json::Value::Array(s.iter().map(json_of).collect())).collect();
                (t.clone(), serde_json::json!({ "rule": rule, "sets": sets }))
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }

    /// A stored scope read back; `None` when it is not one.
    pub(crate) fn from_json(text: &str) -> Option<Scope> {
        let serde_json::Value::Object(map) = serde_json::from_str(text).ok()? else { return None };
        let mut tables = BTreeMap::new();
        for (t, entry) in map {
            let rule = entry.get("rule")?.as_str()?.to_owned();
            let sets = entry
                .get("sets")?
                .as_array()?
                .iter()
                .map(|s| s.as_array().map(|items| items.iter().map(value_of).collect()))
                .collect::<Option<Vec<Vec<Value>>>>()?;
            tables.insert(t, (rule, sets));
        }
        Some(Scope { tables })
    }

    /// The scope's name in cursors: a hash of [`Scope::json`].
    pub(crate) fn hash(&self) -> String {
        use sha2::Digest;
        ferry_core::to_hex(&sha2::Sha256::digest(self.json().as_bytes())[..16])
    }

    /// This scope as `now`'s rules read it: a table whose rule changed since this scope was
    /// served takes `now`'s sets (nothing is known of what its devices hold under the old one).
    pub(crate) fn under(mut self, now: &Scope) -> Scope {
        for (t, entry) in &now.tables {
            if self.tables.get(t).is_none_or(|(rule, _)| *rule != entry.0) {
                self.tables.insert(t.clone(), entry.clone());
            }
        }
        self.tables.retain(|t, _| now.tables.contains_key(t));
        self
    }

    /// Whether `user` may read a row of `table` with this `reach`, by the scope.
    pub fn admits(&self, table: &Table, reach: &str, user: &str) -> bool {
        read_rule(table).is_none_or(|rule| rule.allows_given(&Rule::reach_row(reach), user, self.sets(&table.name)))
    }
}

/// Which scope a feed condition's parameter takes its values from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The scope the device was served.
    Old,
    /// The scope now.
    New,
}

/// The feed's condition on a bookkeeping row `r` of a user's pull, and whether the row is
/// visible (sent as a row) or not (sent as a removal).
pub(crate) struct FeedSql {
    pub condition: String,
    pub visible: String,
    /// The parameters from `first` on: (table, slot, scope side).
    pub slots: Vec<(String, Slot, Side)>,
}

/// Where the window and the user are in a feed query, as SQL of the store's dialect.
pub(crate) struct FeedPlaces<'a> {
    pub dialect: Dialect,
    /// True when the bookkeeping row `r` changed after the device's cursor.
    pub window: &'a str,
    /// True when the exit `e` was recorded after the device's cursor.
    pub exit_window: &'a str,
    /// The requesting user's id.
    pub user: &'a str,
    /// The first free parameter number.
    pub first: usize,
}

impl FeedSql {
    /// The condition for `schema`'s tables. `moving`: the scope changed since the cursor, so
    /// rows of any age move in and out (else only rows in the window are looked at).
    ///
    /// A row of a ruled table is sent when it is visible now and changed in the window or was
    /// not visible before (moved in); it is sent as a removal when it is not visible now and
    /// was before (by its reach then or now). Other tables keep the owner rule.
    pub(crate) fn new(schema: &Schema, places: &FeedPlaces<'_>, moving: bool) -> FeedSql {
        let mut out = FeedSql { condition: String::new(), visible: String::new(), slots: Vec::new() };
        let plain: Vec<String> =
            schema.tables.iter().filter(|t| read_rule(t).is_none()).map(|t| lit(&t.name)).collect();
        let mut parts = Vec::new();
        if !plain.is_empty() {
            parts.push(format!(
                "(r.tbl IN ({}) AND {} AND (r.owner IS NULL OR r.owner = {}))",
                plain.join(", "),
                places.window,
                places.user
            ));
        }
        let mut cases = Vec::new();
        for table in &schema.tables {
            let Some(rule) = read_rule(table) else { continue };
            let mut compile = |reach: &str, side: Side| {
                let c = rule.compile_reach(places.dialect, reach, places.first + out.slots.len());
                out.slots.extend(c.slots.into_iter().map(|s| (table.name.clone(), s, side)));
                c.sql
            };
            let tl = lit(&table.name);
            let now = compile("r.reach", Side::New);
            let then = compile("e.reach", Side::Old);
            let exited = format!(
                "EXISTS (SELECT 1 FROM _ferry_exits e WHERE e.tbl = r.tbl AND e.pk = r.pk AND {} AND {then})",
                places.exit_window
            );
            let w = places.window;
            if moving {
                let before = compile("r.reach", Side::Old);
                let now2 = compile("r.reach", Side::New);
                let before2 = compile("r.reach", Side::Old);
                parts.push(format!(
                    "(r.tbl = {tl} AND ({now} OR {before} OR ({w} AND {exited})) AND ({w} OR ({now2}) <> ({before2})))"
                ));
            } else {
                parts.push(format!("(r.tbl = {tl} AND {w} AND ({now} OR {exited}))"));
            }
            let shown = compile("r.reach", Side::New);
            cases.push(format!("WHEN r.tbl = {tl} THEN {shown}"));
        }
        out.condition = if parts.is_empty() { "FALSE".into() } else { format!("({})", parts.join(" OR ")) };
        out.visible = if cases.is_empty() { "TRUE".into() } else { format!("CASE {} ELSE TRUE END", cases.join(" ")) };
        out
    }
}

/// A table name as an SQL string literal (names are checked identifiers; quotes doubled anyway).
fn lit(name: &str) -> String {
    format!("'{}'", name.replace('\'', "''"))
}

/// The SQL of a row's reach in `dialect`, from its columns as `column(name)` gives them
/// (booleans as stored, 0 and 1 or true and false): the same JSON as [`Rule::reach`], so
/// that stored reaches can be compared with it.
pub(crate) fn reach_sql(rule: &Rule, table: &Table, dialect: Dialect, column: impl Fn(&str) -> String) -> String {
    let mut columns: Vec<&str> = rule.columns();
    columns.sort_unstable();
    let pairs: Vec<String> = columns
        .iter()
        .map(|c| {
            let ty = table.column(c).map(|c| c.ty);
            let v = column(c);
            let v = match (dialect, ty) {
                (Dialect::Sqlite, Some(ferry_core::schema::ColType::Boolean)) => {
                    format!("CASE WHEN {v} IS NULL THEN NULL WHEN {v} IN (1, 'true') THEN json('true') ELSE json('false') END")
                }
                (Dialect::Sqlite, _) => v,
                (Dialect::Postgres, Some(ferry_core::schema::ColType::Boolean)) => format!("to_jsonb(({v})::boolean)"),
                (Dialect::Postgres, Some(ferry_core::schema::ColType::Integer | ferry_core::schema::ColType::BigInt)) => {
                    format!("to_jsonb(({v})::bigint)")
                }
                (Dialect::Postgres, _) => format!("to_jsonb(({v})::text)"),
            };
            format!("{}, {v}", lit(c))
        })
        .collect();
    match dialect {
        Dialect::Sqlite => format!("json_object({})", pairs.join(", ")),
        Dialect::Postgres => format!("jsonb_build_object({})", pairs.join(", ")),
    }
}

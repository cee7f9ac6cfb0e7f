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
use ferry_core::schema::{ColType, Schema, Table, quote};
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
    /// The device's subscriptions, by table.
    subs: BTreeMap<String, Vec<Subscribed>>,
}

/// A subscription as a scope holds it: its predicate as the rules print it, and what its
/// subqueries select for the user.
type Subscribed = (String, Vec<Vec<Value>>);

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
        let sets = sets.into_iter().map(normalized).collect();
        self.tables.insert(table.name.clone(), (rule, sets));
    }

    /// Adds a device's subscriptions ([`subscriptions`]), each as the rules print it, with
    /// what its subqueries selected (`sets[table][i]`: of `subs[table][i]`'s, in order).
    pub(crate) fn subscribe(
        &mut self,
        subs: &BTreeMap<String, Vec<Rule>>,
        sets: &BTreeMap<String, Vec<Vec<Vec<Value>>>>,
    ) {
        for (table, rules) in subs {
            let mut entries: Vec<Subscribed> = rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let given = sets.get(table).and_then(|s| s.get(i)).cloned().unwrap_or_default();
                    (r.expr.to_string(), given.into_iter().map(normalized).collect())
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|a, b| a.0 == b.0);
            self.subs.insert(table.clone(), entries);
        }
    }

    /// The subscriptions to `table` (none: the device reads all its rule allows), parsed
    /// against `schema`, each with its place (one that no longer parses is left out).
    pub(crate) fn subscriptions(&self, schema: &Schema, table: &Table) -> Vec<(usize, Rule)> {
        self.subs
            .get(&table.name)
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, (s, _))| Rule::parse(s, table, &schema.tables).ok().map(|r| (i, r)))
            .collect()
    }

    /// What the subqueries of `table`'s subscription at place `i` selected.
    fn sub_sets(&self, table: &str, i: usize) -> &[Vec<Value>] {
        self.subs.get(table).and_then(|s| s.get(i)).map_or(&[], |(_, sets)| sets.as_slice())
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
                match self.subs.get(t) {
                    Some(subs) => {
                        let subs: Vec<serde_json::Value> = subs
                            .iter()
                            .map(|(p, sets)| {
                                let sets: Vec<serde_json::Value> = sets
                                    .iter()
                                    .map(|s| serde_json::Value::Array(s.iter().map(json_of).collect()))
                                    .collect();
                                serde_json::json!({ "p": p, "sets": sets })
                            })
                            .collect();
                        (t.clone(), serde_json::json!({ "rule": rule, "sets": sets, "subs": subs }))
                    }
                    None => (t.clone(), serde_json::json!({ "rule": rule, "sets": sets })),
                }
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }

    /// A stored scope read back; `None` when it is not one.
    pub(crate) fn from_json(text: &str) -> Option<Scope> {
        let serde_json::Value::Object(map) = serde_json::from_str(text).ok()? else { return None };
        let (mut tables, mut subs) = (BTreeMap::new(), BTreeMap::new());
        for (t, entry) in map {
            if let Some(list) = entry.get("subs").and_then(|s| s.as_array()) {
                let mut entries = Vec::with_capacity(list.len());
                for sub in list {
                    let p = sub.get("p")?.as_str()?.to_owned();
                    let sets = sub
                        .get("sets")?
                        .as_array()?
                        .iter()
                        .map(|s| s.as_array().map(|items| items.iter().map(value_of).collect()))
                        .collect::<Option<Vec<Vec<Value>>>>()?;
                    entries.push((p, sets));
                }
                subs.insert(t.clone(), entries);
            }
            let rule = entry.get("rule")?.as_str()?.to_owned();
            let sets = entry
                .get("sets")?
                .as_array()?
                .iter()
                .map(|s| s.as_array().map(|items| items.iter().map(value_of).collect()))
                .collect::<Option<Vec<Vec<Value>>>>()?;
            tables.insert(t, (rule, sets));
        }
        Some(Scope { tables, subs })
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
        self.subs.retain(|t, _| now.tables.contains_key(t));
        self
    }

    /// Whether `user` may read a row of `table` with this `reach`, by the scope.
    pub fn admits(&self, table: &Table, reach: &str, user: &str) -> bool {
        read_rule(table).is_none_or(|rule| rule.allows_given(&Rule::reach_row(reach), user, self.sets(&table.name)))
    }
}

/// A subquery's values sorted, without repeats: equal scopes compare and hash equal.
fn normalized(set: Vec<Value>) -> Vec<Value> {
    let mut items: Vec<(String, Value)> = set.into_iter().map(|v| (json_of(&v).to_string(), v)).collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.dedup_by(|a, b| a.0 == b.0);
    items.into_iter().map(|(_, v)| v).collect()
}

/// Of `tables`, those every user reads (no `read` rule, no owner), as SQL literals.
fn shared_tables(tables: &[&Table]) -> Vec<String> {
    tables.iter().filter(|t| read_rule(t).is_none() && t.options.owner.is_none()).map(|t| lit(&t.name)).collect()
}

/// Which scope a feed condition's parameter takes its values from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The scope the device was served.
    Old,
    /// The scope now.
    New,
}

/// Where a rule's rows are found by index: a column of the reach whose value must be the
/// user's id, or among what a subquery selected, for the rule to hold.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Anchor {
    User(String),
    Set(String, usize),
}

/// The anchors of a rule: columns such that every row the rule admits has one of them in
/// its set (`None` when some part of the rule admits rows without one, so only a scan finds
/// them). `a AND b` takes either side's, `a OR b` needs both sides'.
pub(crate) fn anchors(rule: &Rule) -> Option<Vec<Anchor>> {
    use ferry_core::rules::{CmpOp, Expr, Operand};
    use ferry_core::schema::ColType;
    let selects = rule.subqueries();
    fn walk(e: &Expr, selects: &[&ferry_core::rules::Select]) -> Option<Vec<Anchor>> {
        let indexable = |ty: &ColType| !matches!(ty, ColType::Boolean);
        match e {
            Expr::Compare(Operand::Column(c, ty), CmpOp::Eq, Operand::User(_)) if indexable(ty) => {
                Some(vec![Anchor::User(c.clone())])
            }
            Expr::InSelect(Operand::Column(c, ty), select, false) if indexable(ty) => {
                let n = selects.iter().position(|s| std::ptr::eq(*s, select.as_ref()))?;
                Some(vec![Anchor::Set(c.clone(), n)])
            }
            Expr::And(a, b) => walk(a, selects).or_else(|| walk(b, selects)),
            Expr::Or(a, b) => {
                let mut out = walk(a, selects)?;
                out.extend(walk(b, selects)?);
                Some(out)
            }
            _ => None,
        }
    }
    walk(&rule.expr, &selects)
}

/// The columns of `table`'s reach worth an index: its rule's anchors.
pub(crate) fn anchor_columns(table: &Table) -> Vec<String> {
    let mut out: Vec<String> = read_rule(table)
        .and_then(anchors)
        .into_iter()
        .flatten()
        .map(|a| match a {
            Anchor::User(c) | Anchor::Set(c, _) => c,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What a parameter of a feed query is bound to.
#[derive(Clone, Debug)]
pub(crate) enum Bind {
    /// A parameter of a rule compiled over reaches, of `table`, on one side.
    Rule(String, Slot, Side),
    /// The values an anchor admits (a JSON array), of `table`, on one side.
    Anchor(String, Anchor, Side),
    /// A parameter of `table`'s subscription at a place, on one side.
    Sub(String, usize, Slot, Side),
}

/// One branch of a feed query: rows of `_ferry_rows r` (joined with `join`) that meet `cond`,
/// each visible (sent as a row) when `visible` holds, else sent as a removal.
pub(crate) struct Branch {
    pub join: String,
    pub cond: String,
    pub visible: String,
}

/// A user's feed query under `read` rules: branches, whose union is what the page reads.
pub(crate) struct FeedSql {
    pub branches: Vec<Branch>,
    /// The parameters from `first` on.
    pub binds: Vec<Bind>,
}

/// Where the window and the user are in a feed query, as SQL of the store's dialect.
pub(crate) struct FeedPlaces<'a> {
    pub dialect: Dialect,
    /// True when the bookkeeping row `r` changed after the device's cursor.
    pub window: &'a str,
    /// The same, as an index range (may admit more than `window`): what a branch over the
    /// window alone starts from.
    pub window_range: &'a str,
    /// True when the exit `e` was recorded after the device's cursor.
    pub exit_window: &'a str,
    /// The requesting user's id.
    pub user: &'a str,
    /// The first free parameter number.
    pub first: usize,
}

impl FeedSql {
    /// The query's branches for the `selected` tables of `schema`. `old` is the scope the
    /// device was served, `new` the scope now; when they differ, rows of any age move in and
    /// out (else only the window is looked at).
    ///
    /// A row of a ruled table is sent when it is visible now and changed in the window or was
    /// not visible before (moved in); it is sent as a removal when it is not visible now and
    /// was before (by its reach then or now, or by the device's subscriptions then). Where
    /// the rule has anchors, the rows are found through them (an index on the reach): a pull
    /// then reads about as many rows as the user may read, whatever the table's size. A table
    /// the device subscribes to is read joined with its rows, which the subscriptions are
    /// decided on (deleted rows: on their kept values); a changed row the rule lets the user
    /// read but no subscription covers goes out as a removal. Other tables keep the owner rule.
    pub(crate) fn new(
        schema: &Schema,
        places: &FeedPlaces<'_>,
        old: &Scope,
        new: &Scope,
        selected: &[String],
    ) -> FeedSql {
        let moving = old != new;
        let mut out = FeedSql { branches: Vec::new(), binds: Vec::new() };
        let plain = |cond: String| Branch { join: String::new(), cond, visible: "TRUE".into() };
        let tables: Vec<&Table> = schema.tables.iter().filter(|t| selected.contains(&t.name)).collect();
        let shared = shared_tables(&tables);
        if !shared.is_empty() {
            out.branches.push(plain(format!(
                "r.tbl IN ({}) AND {} AND {}",
                shared.join(", "),
                places.window_range,
                places.window
            )));
        }
        // Owned tables one by one, each found through its owner index ([`reach_indexes`]).
        for table in tables.iter().filter(|t| read_rule(t).is_none() && t.options.owner.is_some()) {
            out.branches.push(plain(format!(
                "r.tbl = {} AND (r.owner = {} OR r.owner IS NULL) AND {} AND {}",
                lit(&table.name),
                places.user,
                places.window_range,
                places.window
            )));
        }
        for table in tables {
            let Some(rule) = read_rule(table) else { continue };
            let tl = lit(&table.name);
            let (w, range) = (places.window, places.window_range);
            let (subs_old, subs_new) = (old.subscriptions(schema, table), new.subscriptions(schema, table));
            let join = if subs_old.is_empty() && subs_new.is_empty() {
                String::new()
            } else {
                row_join(table, places.dialect)
            };
            // `now`/`then`: visible by the rule with the scope now / served; `sub_*`: covered
            // by the subscriptions (TRUE without any); each use compiles afresh (its own
            // parameters).
            let now = |out: &mut FeedSql| out.rule(places, table, rule, "r.reach", Side::New);
            let anchors = anchors(rule);
            let found = |out: &mut FeedSql, side| match &anchors {
                Some(a) => out.anchored(places, table, a, side),
                None => "TRUE".to_owned(),
            };
            let exited = |out: &mut FeedSql| {
                let then = out.rule(places, table, rule, "e.reach", Side::Old);
                match places.dialect {
                    Dialect::Sqlite => format!(
                        "r.pk IN (SELECT e.pk FROM _ferry_exits e WHERE e.tbl = {tl} AND {} AND {then})",
                        places.exit_window
                    ),
                    // Found from the exits (few), not by walking the rows: an array of keys.
                    Dialect::Postgres => format!(
                        "r.pk = ANY(ARRAY(SELECT e.pk FROM _ferry_exits e WHERE e.tbl = {tl} AND {} AND {then}))",
                        places.exit_window
                    ),
                }
            };
            let shown = |out: &mut FeedSql, side: Side| {
                let (subs, reach_rule) =
                    if side == Side::New { (&subs_new, Side::New) } else { (&subs_old, Side::Old) };
                let by_rule = out.rule(places, table, rule, "r.reach", reach_rule);
                match out.subscribed(places, table, subs, side) {
                    Some(sub) => format!("({by_rule} AND {sub})"),
                    None => by_rule,
                }
            };
            let visible = shown(&mut out, Side::New);
            let branch = |out: &mut FeedSql, cond: String| {
                out.branches.push(Branch {
                    join: join.clone(),
                    cond: format!("r.tbl = {tl} AND {cond}"),
                    visible: visible.clone(),
                });
            };
            if moving {
                let (f, v1, v0) = (found(&mut out, Side::New), shown(&mut out, Side::New), shown(&mut out, Side::Old));
                // Visible now: changed in the window, or moved in.
                branch(&mut out, format!("{f} AND {v1} AND ({w} OR NOT {v0})"));
                let (f0, v0, v1) = (found(&mut out, Side::Old), shown(&mut out, Side::Old), shown(&mut out, Side::New));
                // Moved out by the scope (membership, subscriptions), whatever its age.
                branch(&mut out, format!("{f0} AND {v0} AND NOT {v1}"));
                let (x, v1) = (exited(&mut out), shown(&mut out, Side::New));
                // Moved out by its own change in the window.
                branch(&mut out, format!("{range} AND {w} AND {x} AND NOT {v1}"));
            } else {
                let (f, n) = (found(&mut out, Side::New), now(&mut out));
                branch(&mut out, format!("{range} AND {w} AND {f} AND {n}"));
                let (x, n) = (exited(&mut out), now(&mut out));
                branch(&mut out, format!("{range} AND {w} AND {x} AND NOT {n}"));
            }
            if moving && !subs_new.is_empty() {
                // A changed row the rule lets the user read but no subscription covers: the
                // device may hold it from before (a removal of a row it lacks is harmless).
                let (f, n) = (found(&mut out, Side::New), now(&mut out));
                branch(&mut out, format!("{range} AND {w} AND {f} AND {n}"));
            }
        }
        out
    }

    /// The rows of the `selected` tables of `schema` that a user may read now (by the scope
    /// the binds are then taken from), whatever their age, tombstones too (without
    /// subscriptions): shared tables in one branch, each owned table through its owner index,
    /// each ruled table through its anchors. The user is the first parameter, the binds
    /// follow. A device's snapshot reads them inside one transaction, in no particular order
    /// ([`FeedSql::keys_query`]).
    pub(crate) fn visible(schema: &Schema, dialect: Dialect, selected: &[String]) -> FeedSql {
        let user = match dialect {
            Dialect::Sqlite => "?1",
            Dialect::Postgres => "$1",
        };
        let places =
            &FeedPlaces { dialect, window: "TRUE", window_range: "TRUE", exit_window: "FALSE", user, first: 2 };
        let mut out = FeedSql { branches: Vec::new(), binds: Vec::new() };
        let plain = |cond: String| Branch { join: String::new(), cond, visible: "TRUE".into() };
        let tables: Vec<&Table> = schema.tables.iter().filter(|t| selected.contains(&t.name)).collect();
        let shared = shared_tables(&tables);
        if !shared.is_empty() {
            out.branches.push(plain(format!("r.tbl IN ({})", shared.join(", "))));
        }
        for table in &tables {
            let tl = lit(&table.name);
            match read_rule(table) {
                None if table.options.owner.is_some() => {
                    out.branches.push(plain(format!("r.tbl = {tl} AND (r.owner = {} OR r.owner IS NULL)", places.user)))
                }
                None => {}
                Some(rule) => {
                    let found = match anchors(rule) {
                        Some(a) => out.anchored(places, table, &a, Side::New),
                        None => "TRUE".to_owned(),
                    };
                    let now = out.rule(places, table, rule, "r.reach", Side::New);
                    out.branches.push(plain(format!("r.tbl = {tl} AND {found} AND {now}")));
                }
            }
        }
        out
    }

    /// The branches' rows as one query of (table, key), every parameter named in it (the
    /// user's at least); `None` without branches (no table selected).
    pub(crate) fn keys_query(&self, dialect: Dialect) -> Option<String> {
        if self.branches.is_empty() {
            return None;
        }
        let branches: Vec<String> = self
            .branches
            .iter()
            .map(|b| format!("SELECT r.tbl, r.pk FROM _ferry_rows r {} WHERE {}", b.join, b.cond))
            .collect();
        let named = match dialect {
            Dialect::Sqlite => "?1 IS NOT NULL",
            Dialect::Postgres => "$1::text IS NOT NULL",
        };
        Some(format!("SELECT q.tbl, q.pk FROM ({}) q WHERE {named}", branches.join(" UNION ALL ")))
    }

    /// Whether `subs` (a device's subscriptions to `table`) cover the row joined as `t` (or
    /// a deleted row, by its kept values); `None` without subscriptions (everything).
    fn subscribed(
        &mut self,
        places: &FeedPlaces<'_>,
        table: &Table,
        subs: &[(usize, Rule)],
        side: Side,
    ) -> Option<String> {
        if subs.is_empty() {
            return None;
        }
        let pk = quote(&table.pk_column().name);
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (i, sub) in subs {
            let bind = |s| Bind::Sub(table.name.clone(), *i, s, side);
            let c = sub.compile_given(places.dialect, "t", places.first + self.binds.len());
            self.binds.extend(c.slots.into_iter().map(bind));
            live.push(format!("({})", c.sql));
            let c = sub.compile_reach(places.dialect, "r.dead", places.first + self.binds.len());
            self.binds.extend(c.slots.into_iter().map(bind));
            dead.push(c.sql);
        }
        Some(format!(
            "((CASE WHEN t.{pk} IS NOT NULL THEN ({}) ELSE ({}) END) IS TRUE)",
            live.join(" OR "),
            dead.join(" OR ")
        ))
    }

    /// `rule` over the reach `reach`, its parameters bound to `side`'s scope.
    fn rule(&mut self, places: &FeedPlaces<'_>, table: &Table, rule: &Rule, reach: &str, side: Side) -> String {
        let c = rule.compile_reach(places.dialect, reach, places.first + self.binds.len());
        self.binds.extend(c.slots.into_iter().map(|s| Bind::Rule(table.name.clone(), s, side)));
        c.sql
    }

    /// True when one of `anchors` holds for `r`, as an index on the reach finds it.
    fn anchored(&mut self, places: &FeedPlaces<'_>, table: &Table, anchors: &[Anchor], side: Side) -> String {
        let parts: Vec<String> = anchors
            .iter()
            .map(|a| {
                let n = places.first + self.binds.len();
                self.binds.push(Bind::Anchor(table.name.clone(), a.clone(), side));
                let (Anchor::User(c) | Anchor::Set(c, _)) = a;
                match places.dialect {
                    Dialect::Sqlite => {
                        format!("{} IN (SELECT value FROM json_each(?{n}))", reach_key(Dialect::Sqlite, c))
                    }
                    Dialect::Postgres => format!(
                        "{} = ANY(ARRAY(SELECT jsonb_array_elements_text(${n}::text::jsonb)))",
                        reach_key(Dialect::Postgres, c)
                    ),
                }
            })
            .collect();
        format!("({})", parts.join(" OR "))
    }

    /// The parameters' values as PostgreSQL takes them (text).
    pub(crate) fn texts(&self, user: &str, old: &Scope, new: &Scope) -> Vec<String> {
        self.binds
            .iter()
            .map(|b| match b {
                Bind::Rule(table, slot, side) => slot.text(user, pick(*side, old, new).sets(table)),
                Bind::Anchor(table, anchor, side) => anchor_json(anchor, user, pick(*side, old, new), table),
                Bind::Sub(table, i, slot, side) => slot.text(user, pick(*side, old, new).sub_sets(table, *i)),
            })
            .collect()
    }

    /// The parameters' values as SQLite takes them.
    pub(crate) fn sqlite_values(&self, user: &str, old: &Scope, new: &Scope) -> Vec<Value> {
        self.binds
            .iter()
            .map(|b| match b {
                Bind::Rule(table, slot, side) => slot.value(user, pick(*side, old, new).sets(table)),
                Bind::Anchor(table, anchor, side) => {
                    Value::Text(anchor_json(anchor, user, pick(*side, old, new), table))
                }
                Bind::Sub(table, i, slot, side) => slot.value(user, pick(*side, old, new).sub_sets(table, *i)),
            })
            .collect()
    }
}

fn pick<'a>(side: Side, old: &'a Scope, new: &'a Scope) -> &'a Scope {
    if side == Side::Old { old } else { new }
}

/// The values an anchor admits, as a JSON array of texts (numbers as their digits), the form
/// an index on the reach compares.
fn anchor_json(anchor: &Anchor, user: &str, scope: &Scope, table: &str) -> String {
    let items: Vec<serde_json::Value> = match anchor {
        Anchor::User(_) => vec![user.into()],
        Anchor::Set(_, n) => scope
            .sets(table)
            .get(*n)
            .into_iter()
            .flatten()
            .filter_map(|v| match v {
                Value::Text(t) => Some(t.clone().into()),
                Value::Integer(i) => Some(i.to_string().into()),
                _ => None,
            })
            .collect(),
    };
    serde_json::Value::Array(items).to_string()
}

/// The reach's value of column `c` as an index on `_ferry_rows` holds it.
pub(crate) fn reach_key(dialect: Dialect, c: &str) -> String {
    let name = c.replace('\'', "''");
    match dialect {
        Dialect::Sqlite => format!("json_extract(reach, '$.\"{name}\"')"),
        Dialect::Postgres => format!("(reach->>'{name}')"),
    }
}

/// `CREATE INDEX` for each anchor column of each ruled table (the reach's value, for that
/// table's rows only), and when some table has a `read` rule (so that pulls take
/// [`FeedSql`]'s branches), for each owned table's owner.
pub(crate) fn reach_indexes(schema: &Schema, dialect: Dialect) -> String {
    let ruled = has_read_rules(schema);
    schema.tables.iter().map(|t| table_indexes(t, ruled, dialect)).collect()
}

/// [`reach_indexes`] of one table; `ruled`: the schema has `read` rules.
pub(crate) fn table_indexes(table: &Table, ruled: bool, dialect: Dialect) -> String {
    let mut out = String::new();
    if ruled && read_rule(table).is_none() && table.options.owner.is_some() {
        let name = format!("_ferry_owner_{}", ferry_core::schema::fingerprint(&table.name));
        let at = if dialect == Dialect::Sqlite { "seq" } else { "xid" };
        out.push_str(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON _ferry_rows (owner, {at}) WHERE tbl = {};\n",
            lit(&table.name)
        ));
    }
    for c in anchor_columns(table) {
        let name = format!("_ferry_reach_{}", ferry_core::schema::fingerprint(&format!("{}.{c}", table.name)));
        out.push_str(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON _ferry_rows ({}) WHERE tbl = {};\n",
            reach_key(dialect, &c),
            lit(&table.name)
        ));
    }
    out
}

/// How many subscriptions a pull may carry, and how long each may be.
pub const MAX_SUBSCRIPTIONS: usize = 32;
const MAX_SUBSCRIPTION_BYTES: usize = 2000;

/// A device's subscriptions (`TABLE WHERE PREDICATE`, as `ferry sync --subscribe` takes
/// them), checked against `schema`: each names a table with a `read` rule (subscriptions
/// narrow what a rule allows) and a predicate in the rules' subset (subqueries and `:user`
/// included).
///
/// # Errors
/// [`StoreError::Invalid`] naming the subscription and the fix.
pub(crate) fn subscriptions(schema: &Schema, list: &[String]) -> crate::Result<BTreeMap<String, Vec<Rule>>> {
    use crate::StoreError;
    if list.len() > MAX_SUBSCRIPTIONS {
        return Err(StoreError::Invalid(format!(
            "{} subscriptions; a device may hold at most {MAX_SUBSCRIPTIONS}: join predicates with OR",
            list.len()
        )));
    }
    let mut out: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    for sub in list {
        let shown = ferry_core::shown(sub);
        if sub.len() > MAX_SUBSCRIPTION_BYTES {
            return Err(StoreError::Invalid(format!(
                "subscription '{shown}' is longer than {MAX_SUBSCRIPTION_BYTES} bytes"
            )));
        }
        let at = sub.to_ascii_uppercase().find(" WHERE ").ok_or_else(|| {
            StoreError::Invalid(format!(
                "subscription '{shown}' is not TABLE WHERE PREDICATE, e.g. \"formations WHERE group_id = '0190…'\""
            ))
        })?;
        let (name, predicate) = (sub[..at].trim(), sub[at + 7..].trim());
        let table = schema.table(name).ok_or_else(|| {
            StoreError::Invalid(format!(
                "subscription '{shown}': unknown table '{name}'; the schema has: {}",
                schema.table_names().join(", ")
            ))
        })?;
        if read_rule(table).is_none() {
            return Err(StoreError::Invalid(format!(
                "subscription '{shown}': table '{name}' has no read rule, and subscriptions narrow what a read rule allows; give it one in ferry.toml (read = \"TRUE\" lets every user read it)"
            )));
        }
        let rule = Rule::parse(predicate, table, &schema.tables)
            .map_err(|e| StoreError::Invalid(format!("subscription '{shown}': {e}")))?;
        out.entry(table.name.clone()).or_default().push(rule);
    }
    Ok(out)
}

/// `LEFT JOIN` of `table`'s rows as `t` to the bookkeeping row `r`, by key.
fn row_join(table: &Table, dialect: Dialect) -> String {
    let pk = table.pk_column();
    let key = match (dialect, pk.ty) {
        (Dialect::Sqlite, _) => "r.pk".to_owned(),
        (Dialect::Postgres, ColType::Uuid) => "(r.pk)::uuid".to_owned(),
        (Dialect::Postgres, ColType::Integer) => "(r.pk)::integer".to_owned(),
        (Dialect::Postgres, ColType::BigInt) => "(r.pk)::bigint".to_owned(),
        (Dialect::Postgres, _) => "r.pk".to_owned(),
    };
    format!("LEFT JOIN {} t ON t.{} = {key}", quote(&table.name), quote(&pk.name))
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

#[cfg(test)]
mod tests {
    use super::{Anchor, anchors};
    use ferry_core::rules::Rule;
    use ferry_core::schema::Schema;

    fn rule(source: &str) -> Rule {
        let schema = Schema::parse(
            "CREATE TABLE m (id uuid PRIMARY KEY, g uuid, u uuid, role text);
             CREATE TABLE t (id uuid PRIMARY KEY, g uuid, owner uuid, visible boolean, n integer);",
            &Default::default(),
        )
        .unwrap();
        Rule::parse(source, schema.table("t").unwrap(), &schema.tables).unwrap()
    }

    /// Subscriptions name a ruled table and a predicate about the row; anything else is
    /// refused naming the subscription and the fix.
    #[test]
    fn subscriptions_are_checked_against_the_schema() {
        use ferry_core::schema::TableOptions;
        let options = std::collections::BTreeMap::from([(
            "t".to_owned(),
            TableOptions { read: Some("g IN (SELECT g FROM m WHERE u = :user)".into()), ..TableOptions::default() },
        )]);
        let schema = Schema::parse(
            "CREATE TABLE m (id uuid PRIMARY KEY, g uuid, u uuid, role text);
             CREATE TABLE t (id uuid PRIMARY KEY, g uuid, owner uuid, visible boolean, n integer);",
            &options,
        )
        .unwrap();
        let subs =
            |list: &[&str]| super::subscriptions(&schema, &list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let ok = subs(&["t WHERE n > 3", "t where visible"]).unwrap();
        assert_eq!(ok["t"].len(), 2);
        for (bad, needle) in [
            ("t", "is not TABLE WHERE PREDICATE"),
            ("nope WHERE n = 1", "unknown table 'nope'"),
            ("m WHERE u = :user", "table 'm' has no read rule"),
            ("t WHERE colour = 'red'", "colour"),
        ] {
            let err = subs(&[bad]).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains(bad), "{bad}: {err}");
        }
        let many: Vec<&str> = vec!["t WHERE n = 1"; super::MAX_SUBSCRIPTIONS + 1];
        assert!(subs(&many).unwrap_err().to_string().contains("at most"));
    }

    /// A rule's anchors are the columns every row it admits holds in a known set: found
    /// through `AND` on either side, through `OR` only when both sides have them.
    #[test]
    fn anchors_are_the_columns_every_admitted_row_holds_in_a_set() {
        let set = |c: &str, n| Some(vec![Anchor::Set(c.into(), n)]);
        assert_eq!(anchors(&rule("g IN (SELECT g FROM m WHERE u = :user)")), set("g", 0));
        assert_eq!(anchors(&rule("owner = :user")), Some(vec![Anchor::User("owner".into())]));
        assert_eq!(anchors(&rule("n > 3 AND g IN (SELECT g FROM m)")), set("g", 0));
        assert_eq!(
            anchors(&rule("owner = :user OR (visible AND owner IN (SELECT u FROM m WHERE g = :user))")),
            Some(vec![Anchor::User("owner".into()), Anchor::Set("owner".into(), 0)])
        );
        assert_eq!(
            anchors(&rule("g IN (SELECT g FROM m WHERE role = 'a') OR id IN (SELECT id FROM m WHERE role = 'b')")),
            Some(vec![Anchor::Set("g".into(), 0), Anchor::Set("id".into(), 1)])
        );
        // Rows admitted without a set: only a scan finds them.
        assert_eq!(anchors(&rule("owner = :user OR visible")), None);
        assert_eq!(anchors(&rule("g NOT IN (SELECT g FROM m)")), None);
        assert_eq!(anchors(&rule("NOT (owner = :user)")), None);
    }
}

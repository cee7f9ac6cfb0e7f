//! Deciding a rule over rows in memory, naively, with SQL's three-valued logic: the reference
//! that the stores' SQL is tested against, and the check for rows not stored yet.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::{CmpOp, Expr, Operand, Rule, Select};
use crate::value::Value;

/// Rows by table name, each a map of column to value: what subqueries read.
pub type Tables = BTreeMap<String, Vec<BTreeMap<String, Value>>>;

impl Rule {
    /// Whether `user` may (read or write, as the rule is) `row`, the other tables being
    /// `tables`. A missing column counts as NULL.
    pub fn allows(&self, row: &BTreeMap<String, Value>, user: &str, tables: &Tables) -> bool {
        let sets: Vec<Vec<Value>> = self.subqueries().iter().map(|s| selected(s, user, tables)).collect();
        self.allows_given(row, user, &sets)
    }

    /// As [`Rule::allows`], given what each of [`Rule::subqueries`] selects for `user` (in
    /// their order), as a store reads it once for many rows.
    pub fn allows_given(&self, row: &BTreeMap<String, Value>, user: &str, sets: &[Vec<Value>]) -> bool {
        let mut next = 0;
        eval(&self.expr, row, user, &mut |_| {
            next += 1;
            sets.get(next - 1).map_or(&[][..], Vec::as_slice)
        }) == Some(true)
    }
}

impl Select {
    /// Whether the subquery selects `row` (of its own table) for `user`.
    pub fn admits(&self, row: &BTreeMap<String, Value>, user: &str) -> bool {
        self.filter.as_ref().is_none_or(|f| eval(f, row, user, &mut |_| &[]) == Some(true))
    }
}

/// `Some(true)`, `Some(false)`, or `None` for SQL's unknown. `sets` gives each subquery's
/// values, called once per subquery in the order they are written.
fn eval<'a>(
    e: &Expr,
    row: &BTreeMap<String, Value>,
    user: &str,
    sets: &mut dyn FnMut(&Select) -> &'a [Value],
) -> Option<bool> {
    // Both sides are always evaluated, so that subqueries are met in written order.
    match e {
        Expr::And(a, b) => match (eval(a, row, user, sets), eval(b, row, user, sets)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Or(a, b) => match (eval(a, row, user, sets), eval(b, row, user, sets)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::Not(a) => eval(a, row, user, sets).map(|b| !b),
        Expr::IsTrue(a) => Some(eval(a, row, user, sets) == Some(true)),
        Expr::Const(b) => Some(*b),
        Expr::Compare(a, op, b) => {
            let ord = compare(&value(a, row, user), &value(b, row, user))?;
            Some(match op {
                CmpOp::Eq => ord == Ordering::Equal,
                CmpOp::Ne => ord != Ordering::Equal,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Le => ord != Ordering::Greater,
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Ge => ord != Ordering::Less,
            })
        }
        Expr::IsNull(a, not) => Some(value(a, row, user).is_null() != *not),
        Expr::InList(a, list, not) => {
            let set: Vec<Value> = list.iter().map(|o| value(o, row, user)).collect();
            member(&value(a, row, user), &set).map(|b| b != *not)
        }
        Expr::InSelect(a, select, not) => member(&value(a, row, user), sets(select)).map(|b| b != *not),
    }
}

fn value(o: &Operand, row: &BTreeMap<String, Value>, user: &str) -> Value {
    match o {
        Operand::Column(c, _) => row.get(c).cloned().unwrap_or(Value::Null),
        Operand::Literal(v, _) => v.clone(),
        Operand::User(_) => Value::Text(user.to_owned()),
    }
}

/// SQL's `x IN (set)`: false for an empty set (even when `x` is NULL); true when found;
/// unknown when `x` is NULL, or not found and the set holds a NULL; false otherwise.
fn member(x: &Value, set: &[Value]) -> Option<bool> {
    if set.is_empty() {
        return Some(false);
    }
    if x.is_null() {
        return None;
    }
    if set.iter().any(|v| compare(x, v) == Some(Ordering::Equal)) {
        return Some(true);
    }
    if set.iter().any(Value::is_null) { None } else { Some(false) }
}

/// The values a subquery gives (its filter names only its own table: no subqueries).
fn selected(s: &Select, user: &str, tables: &Tables) -> Vec<Value> {
    let Some(rows) = tables.get(&s.table) else { return Vec::new() };
    rows.iter().filter(|r| s.admits(r, user)).map(|r| r.get(&s.column).cloned().unwrap_or(Value::Null)).collect()
}

/// Compares two values of one column type (the parser allows no other): numbers by value,
/// text byte by byte (as PostgreSQL's "C" collation and SQLite do). `None` when either is NULL.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Integer(x), Value::Integer(y)) => Some(x.cmp(y)),
        (Value::Text(x), Value::Text(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (x, y) => Some(x.total_cmp(y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;

    const G1: &str = "0190a3c4-0000-7000-8000-000000000001";
    const G2: &str = "0190a3c4-0000-7000-8000-000000000002";
    const ANN: &str = "0190a3c4-0000-7000-8000-00000000a000";

    fn row(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn membership_decides_and_null_is_unknown() {
        let schema = Schema::parse(
            "CREATE TABLE group_members (id uuid PRIMARY KEY, group_id uuid, user_id uuid, role text);
             CREATE TABLE formations (id uuid PRIMARY KEY, group_id uuid, title text);",
            &BTreeMap::new(),
        )
        .unwrap();
        let parse = |r: &str| Rule::parse(r, schema.table("formations").unwrap(), &schema.tables).unwrap();
        let member = parse("group_id IN (SELECT group_id FROM group_members WHERE user_id = :user)");
        let outsider = parse("group_id NOT IN (SELECT group_id FROM group_members WHERE user_id = :user)");
        let text = |s: &str| Value::Text(s.to_owned());
        let mut tables = Tables::new();
        tables.insert(
            "group_members".into(),
            vec![row(&[("group_id", text(G1)), ("user_id", text(ANN)), ("role", text("owner"))])],
        );
        let in_g1 = row(&[("group_id", text(G1))]);
        let in_g2 = row(&[("group_id", text(G2))]);
        let nowhere = row(&[("group_id", Value::Null)]);
        assert!(member.allows(&in_g1, ANN, &tables));
        assert!(!member.allows(&in_g2, ANN, &tables));
        assert!(!member.allows(&in_g1, "someone else", &tables));
        assert!(outsider.allows(&in_g2, ANN, &tables));
        assert!(!member.allows(&nowhere, ANN, &tables) && !outsider.allows(&nowhere, ANN, &tables), "NULL: unknown");
        // ... but NULL NOT IN an empty set is true, as in SQL.
        assert!(outsider.allows(&nowhere, "someone else", &tables));
        // A NULL among the subquery's values makes NOT IN unknown for every other value.
        tables.get_mut("group_members").unwrap().push(row(&[("group_id", Value::Null), ("user_id", text(ANN))]));
        assert!(!outsider.allows(&in_g2, ANN, &tables));
        assert!(member.allows(&in_g1, ANN, &tables));
    }
}

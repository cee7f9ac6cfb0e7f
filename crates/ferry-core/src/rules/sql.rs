//! Writing a rule as a `WHERE` condition for a store: names quoted, every literal and
//! `:user` bound as a parameter (nothing from the rule is spliced into the SQL as a value).

use super::{CmpOp, Expr, Operand, Rule, Select};
use crate::schema::{ColType, quote};
use crate::value::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// What a parameter of a compiled rule is bound to.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// A literal of the rule, as its column stores it (booleans as 0 and 1).
    Value(Value, ColType),
    /// The requesting user's id.
    User,
    /// What a subquery selected (its place among [`Rule::subqueries`]), given as a JSON array
    /// ([`Rule::compile_given`]).
    Set(usize),
}

/// A rule as SQL: the condition, and what its parameters (numbered from the first given to
/// [`Rule::compile`], in order) are bound to.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    pub sql: String,
    pub slots: Vec<Slot>,
}

impl Slot {
    /// The parameter's text, as PostgreSQL's placeholders take it (`($n::text)::type`);
    /// `sets`: what the rule's subqueries selected, for [`Slot::Set`].
    pub fn text(&self, user: &str, sets: &[Vec<Value>]) -> String {
        match self {
            Slot::User => user.to_owned(),
            Slot::Set(n) => set_json(sets.get(*n)),
            Slot::Value(Value::Integer(i), ColType::Boolean) => (if *i != 0 { "true" } else { "false" }).to_owned(),
            Slot::Value(Value::Integer(i), _) => i.to_string(),
            Slot::Value(Value::Text(s), _) => s.clone(),
            Slot::Value(other, _) => format!("{other:?}"),
        }
    }

    /// The parameter's value, as SQLite stores it (a [`Slot::Set`] as its JSON array).
    pub fn value(&self, user: &str, sets: &[Vec<Value>]) -> Value {
        match self {
            Slot::User => Value::Text(user.to_owned()),
            Slot::Value(v, _) => v.clone(),
            Slot::Set(n) => Value::Text(set_json(sets.get(*n))),
        }
    }
}

/// A set of values as a JSON array (numbers, strings, nulls).
fn set_json(set: Option<&Vec<Value>>) -> String {
    let items: Vec<serde_json::Value> = set
        .into_iter()
        .flatten()
        .map(|v| match v {
            Value::Integer(i) => (*i).into(),
            Value::Text(s) => s.clone().into(),
            Value::Real(r) => serde_json::Number::from_f64(*r).map_or(serde_json::Value::Null, Into::into),
            Value::Null | Value::Blob(_) => serde_json::Value::Null,
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

impl Rule {
    /// The rule as a condition on the row `alias` (a table alias or name), its parameters
    /// numbered from `first`.
    pub fn compile(&self, dialect: Dialect, alias: &str, first: usize) -> Compiled {
        let mut w = Writer { dialect, first, slots: Vec::new(), given: None, json: false };
        let sql = w.expr(&self.expr, alias);
        Compiled { sql, slots: w.slots }
    }

    /// As [`Rule::compile`], with each subquery replaced by a parameter holding what it
    /// selected ([`Slot::Set`]): the rule decided for a user's scope as it was (or will be),
    /// not as the tables hold it now. `IN` over the given values keeps SQL's three values.
    pub fn compile_given(&self, dialect: Dialect, alias: &str, first: usize) -> Compiled {
        let mut w = Writer { dialect, first, slots: Vec::new(), given: Some(0), json: false };
        let sql = w.expr(&self.expr, alias);
        Compiled { sql, slots: w.slots }
    }

    /// As [`Rule::compile_given`], reading the row's columns from its reach ([`Rule::reach`]),
    /// the JSON text `reach` (an SQL expression) holds: how a store decides rows, deleted ones
    /// too, from its bookkeeping alone. The condition is true or false, never unknown.
    pub fn compile_reach(&self, dialect: Dialect, reach: &str, first: usize) -> Compiled {
        let mut w = Writer { dialect, first, slots: Vec::new(), given: Some(0), json: true };
        let sql = w.expr(&self.expr, reach);
        Compiled { sql: format!("({sql}) IS TRUE"), slots: w.slots }
    }
}

impl Select {
    /// The subquery on its own, selecting the column and the inner row's key (`SELECT column,
    /// key FROM table WHERE …`), its parameters numbered from `first`: what a store runs once
    /// to learn the values a user's rows are compared with.
    pub fn compile(&self, dialect: Dialect, first: usize) -> Compiled {
        let mut w = Writer { dialect, first, slots: Vec::new(), given: None, json: false };
        let filter = self.filter.as_ref().map(|f| format!(" WHERE {}", w.expr(f, INNER))).unwrap_or_default();
        let (column, key, table) = (quote(&self.column), quote(&self.key), quote(&self.table));
        let sql = format!("SELECT {INNER}.{column}, {INNER}.{key} FROM {table} {INNER}{filter}");
        Compiled { sql, slots: w.slots }
    }
}

struct Writer {
    dialect: Dialect,
    first: usize,
    slots: Vec<Slot>,
    /// With given sets: the next subquery's place.
    given: Option<usize>,
    /// The row's columns are read from a reach (JSON text), not from a table's columns.
    json: bool,
}

/// A subquery's own alias: no table name can clash with it (`_ferry` names are reserved).
const INNER: &str = "_ferry_s";

impl Writer {
    fn param(&mut self, slot: Slot, ty: ColType) -> String {
        let n = self.first + self.slots.len();
        self.slots.push(slot);
        match self.dialect {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("(${n}::text)::{}", pg_type(ty)),
        }
    }

    fn operand(&mut self, o: &Operand, alias: &str) -> String {
        match o {
            Operand::Column(c, ty) if self.json => {
                let name = c.replace('\'', "''");
                match self.dialect {
                    Dialect::Sqlite => format!("json_extract({alias}, '$.\"{name}\"')"),
                    Dialect::Postgres => format!("((({alias})::jsonb->>'{name}')::{})", pg_type(*ty)),
                }
            }
            Operand::Column(c, _) => format!("{alias}.{}", quote(c)),
            Operand::Literal(v, ty) => self.param(Slot::Value(v.clone(), *ty), *ty),
            Operand::User(ty) => self.param(Slot::User, *ty),
        }
    }

    fn expr(&mut self, e: &Expr, alias: &str) -> String {
        match e {
            Expr::And(a, b) => format!("({} AND {})", self.expr(a, alias), self.expr(b, alias)),
            Expr::Or(a, b) => format!("({} OR {})", self.expr(a, alias), self.expr(b, alias)),
            Expr::Not(a) => format!("(NOT {})", self.expr(a, alias)),
            Expr::IsTrue(a) => format!("(({}) IS TRUE)", self.expr(a, alias)),
            Expr::Const(b) => (if *b { "TRUE" } else { "FALSE" }).to_owned(),
            Expr::Compare(a, op, b) => {
                let left = self.operand(a, alias);
                let right = self.operand(b, alias);
                let ordered = matches!(op, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge);
                let text = matches!(a, Operand::Column(_, ColType::Text));
                // Text orders byte by byte in both stores, whatever the database's collation.
                let collate = if ordered && text && self.dialect == Dialect::Postgres { " COLLATE \"C\"" } else { "" };
                format!("{left}{collate} {} {right}", op.sql())
            }
            Expr::IsNull(a, not) => format!("{} IS {}NULL", self.operand(a, alias), if *not { "NOT " } else { "" }),
            Expr::InList(a, list, not) => {
                let left = self.operand(a, alias);
                let items: Vec<String> = list.iter().map(|o| self.operand(o, alias)).collect();
                format!("{left} {}IN ({})", if *not { "NOT " } else { "" }, items.join(", "))
            }
            Expr::InSelect(a, s, not) if self.given.is_some() => {
                let left = self.operand(a, alias);
                let n = self.given.expect("checked");
                self.given = Some(n + 1);
                let p = self.first + self.slots.len();
                self.slots.push(Slot::Set(n));
                let not = if *not { "NOT " } else { "" };
                match self.dialect {
                    Dialect::Sqlite => format!("{left} {not}IN (SELECT value FROM json_each(?{p}))"),
                    Dialect::Postgres => format!(
                        "{left} {not}IN (SELECT v::{} FROM jsonb_array_elements_text((${p}::text)::jsonb) AS v)",
                        pg_type(s.ty)
                    ),
                }
            }
            Expr::InSelect(a, s, not) => {
                let left = self.operand(a, alias);
                let filter = s.filter.as_ref().map(|f| format!(" WHERE {}", self.expr(f, INNER))).unwrap_or_default();
                format!(
                    "{left} {}IN (SELECT {INNER}.{} FROM {} {INNER}{filter})",
                    if *not { "NOT " } else { "" },
                    quote(&s.column),
                    quote(&s.table)
                )
            }
        }
    }
}

fn pg_type(ty: ColType) -> &'static str {
    match ty {
        ColType::Uuid => "uuid",
        ColType::Integer | ColType::BigInt => "bigint",
        ColType::Boolean => "boolean",
        ColType::Date => "date",
        _ => "text",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::schema::Schema;

    #[test]
    fn literals_and_the_user_are_parameters_in_both_dialects() {
        let schema = Schema::parse(
            "CREATE TABLE group_members (id uuid PRIMARY KEY, group_id uuid, user_id uuid, role text);
             CREATE TABLE formations (id uuid PRIMARY KEY, group_id uuid, title text);",
            &BTreeMap::new(),
        )
        .unwrap();
        let rule = Rule::parse(
            "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user AND role = 'owner') OR title > 'm'",
            schema.table("formations").unwrap(),
            &schema.tables,
        )
        .unwrap();
        let lite = rule.compile(Dialect::Sqlite, "t", 3);
        assert_eq!(
            lite.sql,
            "(t.\"group_id\" IN (SELECT _ferry_s.\"group_id\" FROM \"group_members\" _ferry_s WHERE (_ferry_s.\"user_id\" = ?3 AND _ferry_s.\"role\" = ?4)) OR t.\"title\" > ?5)"
        );
        assert_eq!(
            lite.slots,
            [
                Slot::User,
                Slot::Value(Value::Text("owner".into()), ColType::Text),
                Slot::Value(Value::Text("m".into()), ColType::Text)
            ]
        );
        let pg = rule.compile(Dialect::Postgres, "t", 1);
        assert!(pg.sql.contains("_ferry_s.\"user_id\" = ($1::text)::uuid"), "{}", pg.sql);
        assert!(pg.sql.contains("t.\"title\" COLLATE \"C\" > ($3::text)::text"), "{}", pg.sql);
        assert_eq!(pg.slots[0].text("ann", &[]), "ann");
    }
}

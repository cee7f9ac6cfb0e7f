//! Sharing rules: which rows a user may read and write.
//!
//! A table's `write` option in `ferry.toml` (and `read`, once the stores filter reads by it;
//! `owner` means both) is a predicate over the row in a small SQL subset that every store
//! evaluates alike: comparisons of a column with a literal, with another column of the row or
//! with `:user` (the requesting user's id); `IS [NOT] NULL`;
//! `[NOT] IN (…)` over literals or over `SELECT column FROM table WHERE …` one level deep (the
//! inner `WHERE` names only the inner table's columns, literals and `:user`); `AND`, `OR`,
//! `NOT`, parentheses, `TRUE` and `FALSE`, and a boolean column on its own.
//!
//! `parse` reads a rule and checks it against the schema (every table, column and literal,
//! each error with the rule, the position and what is allowed); `eval` decides a rule over
//! rows in memory, naively (the reference the stores' SQL is tested against); `sql` writes a
//! rule as a `WHERE` condition for SQLite or PostgreSQL, with every literal and `:user` bound
//! as a parameter. Truth follows SQL's three values: a comparison with NULL is unknown, and a
//! rule that is not true refuses.

mod eval;
mod parse;
mod sql;

use std::fmt;

use crate::schema::ColType;
use crate::value::Value;

pub use eval::Tables;
pub use sql::{Compiled, Dialect, Slot};

/// A checked rule: its text as written, and the predicate.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub source: String,
    pub expr: Expr,
}

/// Who may read and write a table's rows; `None`: every signed-in user.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Access {
    /// Who may read a row: the `read` rule (or `owner`'s), without the rows `filter` keeps on
    /// the server.
    pub read: Option<Rule>,
    pub write: Option<Rule>,
    /// The table's `filter`: rows it holds true for stay on the server.
    pub filter: Option<Rule>,
}

/// A predicate over one row.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `TRUE` or `FALSE`.
    Const(bool),
    /// `(…) IS TRUE`: true or false, never unknown. Not written in rules; a table's `filter`
    /// is applied through it (a row is hidden only when the filter is true).
    IsTrue(Box<Expr>),
    /// A column (always on the left) compared with an operand of its type.
    Compare(Operand, CmpOp, Operand),
    /// `col IS NULL`, or with `true`: `col IS NOT NULL`.
    IsNull(Operand, bool),
    /// `col IN (literals)`, or with `true`: `NOT IN`.
    InList(Operand, Vec<Operand>, bool),
    /// `col IN (SELECT …)`, or with `true`: `NOT IN`.
    InSelect(Operand, Box<Select>, bool),
}

/// What a comparison compares.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A column of the row (of the inner table, inside a subquery), with its type.
    Column(String, ColType),
    /// A literal, as the column it is compared with stores it (booleans as 0 and 1).
    Literal(Value, ColType),
    /// The requesting user's id, compared with a column of this type.
    User(ColType),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// `SELECT column FROM table [WHERE filter]`, uncorrelated: the filter names only the inner
/// table's columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Select {
    pub table: String,
    pub column: String,
    pub ty: ColType,
    pub filter: Option<Expr>,
    /// The inner table's primary key column, which [`Select::compile`] selects too.
    pub key: String,
}

/// Why a rule was refused: the rule, the position (1-based, in characters) and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{rule}` at position {at}: {message}")]
pub struct RuleError {
    pub rule: String,
    pub at: usize,
    pub message: String,
}

/// What a rule may hold, for error messages.
pub const ALLOWED: &str = "a rule may use comparisons (=, <>, <, <=, >, >=) of a column with a literal ('text', 12, TRUE, FALSE), another column or :user; IS [NOT] NULL; [NOT] IN (literals); [NOT] IN (SELECT column FROM table WHERE …) one level deep; AND, OR, NOT and parentheses";

impl Rule {
    /// `col = :user`: what `owner = "col"` means.
    pub fn owner(column: &str, ty: ColType) -> Rule {
        Rule {
            source: format!("{column} = :user"),
            expr: Expr::Compare(Operand::Column(column.to_owned(), ty), CmpOp::Eq, Operand::User(ty)),
        }
    }

    /// The rule's subqueries, in the order they are written.
    pub fn subqueries(&self) -> Vec<&Select> {
        let mut out = Vec::new();
        self.expr.visit(&mut |e| {
            if let Expr::InSelect(_, s, _) = e {
                out.push(s.as_ref());
            }
        });
        out
    }

    /// The tables this rule reads besides the row's own (its subqueries'), each once.
    pub fn tables(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.expr.visit(&mut |e| {
            if let Expr::InSelect(_, s, _) = e
                && !out.contains(&s.table.as_str())
            {
                out.push(s.table.as_str());
            }
        });
        out
    }

    /// A row's *reach*: the values of the columns this rule reads, as a JSON object (keys in
    /// order, booleans as `true`/`false`, integers as numbers, the rest as strings, a missing
    /// column as null). Stores keep it beside each row, deleted ones too, so that who may read
    /// a row can be decided without the row ([`Rule::compile_reach`]).
    pub fn reach(&self, row: &std::collections::BTreeMap<String, Value>) -> String {
        let mut out = serde_json::Map::new();
        self.expr.visit_outer_operands(&mut |o| {
            if let Operand::Column(c, ty) = o {
                let v = match (row.get(c), ty) {
                    (Some(Value::Integer(i)), ColType::Boolean) => serde_json::Value::Bool(*i != 0),
                    (Some(Value::Integer(i)), _) => (*i).into(),
                    (Some(Value::Text(t)), _) => t.clone().into(),
                    _ => serde_json::Value::Null,
                };
                out.insert(c.clone(), v);
            }
        });
        serde_json::Value::Object(out).to_string()
    }

    /// A reach read back as the row's values (what [`Rule::allows_given`] takes); an
    /// unreadable reach as no values (every column NULL).
    pub fn reach_row(reach: &str) -> std::collections::BTreeMap<String, Value> {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(reach) else {
            return Default::default();
        };
        map.into_iter()
            .map(|(c, v)| {
                let v = match v {
                    serde_json::Value::Bool(b) => Value::Integer(b.into()),
                    serde_json::Value::Number(n) => n.as_i64().map_or(Value::Null, Value::Integer),
                    serde_json::Value::String(t) => Value::Text(t),
                    _ => Value::Null,
                };
                (c, v)
            })
            .collect()
    }

    /// The row's columns this rule reads.
    pub fn columns(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.expr.visit_outer_operands(&mut |o| {
            if let Operand::Column(c, _) = o
                && !out.contains(&c.as_str())
            {
                out.push(c.as_str());
            }
        });
        out
    }
}

impl Expr {
    /// Calls `f` on this expression and every one inside it, subqueries' filters included.
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Not(a) | Expr::IsTrue(a) => a.visit(f),
            Expr::InSelect(_, s, _) => {
                if let Some(filter) = &s.filter {
                    filter.visit(f);
                }
            }
            Expr::Const(_) | Expr::Compare(..) | Expr::IsNull(..) | Expr::InList(..) => {}
        }
    }

    /// Calls `f` on every operand of the row's own predicates (not the subqueries' filters).
    fn visit_outer_operands<'a>(&'a self, f: &mut dyn FnMut(&'a Operand)) {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.visit_outer_operands(f);
                b.visit_outer_operands(f);
            }
            Expr::Not(a) | Expr::IsTrue(a) => a.visit_outer_operands(f),
            Expr::Const(_) => {}
            Expr::Compare(a, _, b) => {
                f(a);
                f(b);
            }
            Expr::IsNull(a, _) | Expr::InSelect(a, _, _) => f(a),
            Expr::InList(a, list, _) => {
                f(a);
                list.iter().for_each(&mut *f);
            }
        }
    }
}

impl CmpOp {
    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// The operator with its sides swapped (`a < b` is `b > a`).
    fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }
}

/// The rule in the subset's own syntax, fully parenthesized: parsing it gives the same rule.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::And(a, b) => write!(f, "({a} AND {b})"),
            Expr::Or(a, b) => write!(f, "({a} OR {b})"),
            Expr::Not(a) => write!(f, "(NOT {a})"),
            Expr::IsTrue(a) => write!(f, "({a} IS TRUE)"),
            Expr::Const(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Expr::Compare(a, op, b) => write!(f, "{a} {} {b}", op.sql()),
            Expr::IsNull(a, not) => write!(f, "{a} IS {}NULL", if *not { "NOT " } else { "" }),
            Expr::InList(a, list, not) => {
                let items: Vec<String> = list.iter().map(ToString::to_string).collect();
                write!(f, "{a} {}IN ({})", if *not { "NOT " } else { "" }, items.join(", "))
            }
            Expr::InSelect(a, s, not) => {
                write!(
                    f,
                    "{a} {}IN (SELECT {} FROM {}",
                    if *not { "NOT " } else { "" },
                    ident(&s.column),
                    ident(&s.table)
                )?;
                if let Some(filter) = &s.filter {
                    write!(f, " WHERE {filter}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Column(c, _) => f.write_str(&ident(c)),
            Operand::User(_) => f.write_str(":user"),
            Operand::Literal(v, ty) => match (v, ty) {
                (Value::Integer(i), ColType::Boolean) => f.write_str(if *i != 0 { "TRUE" } else { "FALSE" }),
                (Value::Integer(i), _) => write!(f, "{i}"),
                (Value::Text(s), _) => f.write_str(&crate::schema::quote_literal(s)),
                (other, _) => write!(f, "{other:?}"),
            },
        }
    }
}

/// A name as a rule spells it: bare when it can be, else double-quoted.
fn ident(name: &str) -> String {
    let bare = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !parse::is_keyword(name);
    if bare { name.to_owned() } else { crate::schema::quote(name) }
}

//! Reading a rule: a tokenizer that keeps positions, and a recursive-descent parser that
//! checks every name, type and literal against the schema as it goes.

use super::{ALLOWED, CmpOp, Expr, Operand, Rule, RuleError, Select};
use crate::schema::{ColType, Table, is_date, is_uuid};
use crate::value::Value;

const KEYWORDS: [&str; 10] = ["AND", "OR", "NOT", "IN", "IS", "NULL", "SELECT", "FROM", "WHERE", "TRUE"];

/// SQL words outside the subset, named as such instead of as unknown columns.
const OUTSIDE: [&str; 16] = [
    "LIKE", "ILIKE", "BETWEEN", "EXISTS", "JOIN", "CASE", "ANY", "ALL", "UNION", "LIMIT", "ORDER", "GROUP", "HAVING",
    "DISTINCT", "CAST", "COALESCE",
];

pub(super) fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().chain(&["FALSE"]).any(|k| k.eq_ignore_ascii_case(word))
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A bare word: a keyword or a name.
    Word(String),
    /// A double-quoted name.
    Quoted(String),
    Str(String),
    Num(String),
    User,
    Sym(&'static str),
}

/// A token and where it starts (0-based, in characters).
struct Token {
    tok: Tok,
    at: usize,
}

impl Rule {
    /// Reads `source` as a rule over `table`'s rows; `tables` are the schema's tables, which
    /// subqueries may read.
    ///
    /// # Errors
    /// A [`RuleError`] with the position and the fix when the rule is outside the subset,
    /// names an unknown table or column, or compares values of different types.
    pub fn parse(source: &str, table: &Table, tables: &[Table]) -> Result<Rule, RuleError> {
        let tokens = tokenize(source)?;
        let mut p = Parser { source, tokens, pos: 0, tables };
        let expr = p.or(table, false)?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(p.error_at(t.at, format!("unexpected {} after the end of the rule", shown(&t.tok))));
        }
        Ok(Rule { source: source.to_owned(), expr })
    }
}

fn error(source: &str, at: usize, message: impl Into<String>) -> RuleError {
    RuleError { rule: source.to_owned(), at: at + 1, message: message.into() }
}

fn shown(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Quoted(w) => format!("\"{w}\""),
        Tok::Str(s) => format!("'{s}' (a string)"),
        Tok::Num(n) => format!("{n} (a number)"),
        Tok::User => ":user".into(),
        Tok::Sym(s) => format!("'{s}'"),
    }
}

fn tokenize(source: &str) -> Result<Vec<Token>, RuleError> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Tok::Word(chars[at..i].iter().collect())
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            Tok::Num(chars[at..i].iter().collect())
        } else if c == '\'' || c == '"' {
            let s = crate::schema::quoted(&chars, &mut i).map_err(|_| {
                let what = if c == '\'' { "string" } else { "quoted name" };
                error(source, at, format!("unterminated {what}; close it with {c}"))
            })?;
            if c == '\'' { Tok::Str(s) } else { Tok::Quoted(s) }
        } else if c == ':' {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[at + 1..i].iter().collect();
            if name != "user" {
                return Err(error(
                    source,
                    at,
                    format!("unknown parameter ':{name}'; the one parameter is :user, the requesting user's id"),
                ));
            }
            Tok::User
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = ["<>", "!=", "<=", ">="]
                .into_iter()
                .find(|s| *s == two)
                .or_else(|| ["(", ")", ",", "=", "<", ">"].into_iter().find(|s| s.starts_with(c)));
            let Some(sym) = sym else {
                return Err(error(source, at, format!("unexpected character '{c}'; {ALLOWED}")));
            };
            i += sym.len();
            Tok::Sym(if sym == "!=" { "<>" } else { sym })
        };
        out.push(Token { tok, at });
    }
    Ok(out)
}

struct Parser<'a> {
    source: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    tables: &'a [Table],
}

/// An operand as written, before its type is known.
enum Raw {
    Column(String),
    Str(String),
    Num(String),
    Bool(bool),
    Null,
    User,
}

impl Parser<'_> {
    fn error_at(&self, at: usize, message: impl Into<String>) -> RuleError {
        error(self.source, at, message)
    }

    /// Where the next token starts (the rule's end when there is none).
    fn here(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.source.chars().count(), |t| t.at)
    }

    fn peek_keyword(&self, k: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token { tok: Tok::Word(w), .. }) if w.eq_ignore_ascii_case(k))
    }

    fn eat_keyword(&mut self, k: &str) -> bool {
        let found = self.peek_keyword(k);
        if found {
            self.pos += 1;
        }
        found
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        let found = matches!(self.tokens.get(self.pos), Some(Token { tok: Tok::Sym(x), .. }) if *x == s);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_sym(&mut self, s: &str, what: &str) -> Result<(), RuleError> {
        if self.eat_sym(s) {
            return Ok(());
        }
        let found = self.tokens.get(self.pos).map_or("the end of the rule".to_owned(), |t| shown(&t.tok));
        Err(self.error_at(self.here(), format!("expected '{s}' {what}, found {found}")))
    }

    fn expect_keyword(&mut self, k: &str, what: &str) -> Result<(), RuleError> {
        if self.eat_keyword(k) {
            return Ok(());
        }
        let found = self.tokens.get(self.pos).map_or("the end of the rule".to_owned(), |t| shown(&t.tok));
        Err(self.error_at(self.here(), format!("expected {k} {what}, found {found}")))
    }

    /// A name: a bare word that is not a keyword, or a double-quoted name.
    fn name(&mut self, what: &str) -> Result<(String, usize), RuleError> {
        let at = self.here();
        match self.tokens.get(self.pos).map(|t| &t.tok) {
            Some(Tok::Word(w)) if !is_keyword(w) => {
                let w = w.clone();
                self.pos += 1;
                Ok((w, at))
            }
            Some(Tok::Quoted(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok((w, at))
            }
            Some(t) => Err(self.error_at(at, format!("expected {what}, found {}", shown(t)))),
            None => Err(self.error_at(at, format!("expected {what}, found the end of the rule"))),
        }
    }

    fn or(&mut self, table: &Table, inner: bool) -> Result<Expr, RuleError> {
        let mut left = self.and(table, inner)?;
        while self.eat_keyword("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and(table, inner)?));
        }
        Ok(left)
    }

    fn and(&mut self, table: &Table, inner: bool) -> Result<Expr, RuleError> {
        let mut left = self.not(table, inner)?;
        while self.eat_keyword("AND") {
            left = Expr::And(Box::new(left), Box::new(self.not(table, inner)?));
        }
        Ok(left)
    }

    fn not(&mut self, table: &Table, inner: bool) -> Result<Expr, RuleError> {
        if self.eat_keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.not(table, inner)?)));
        }
        self.predicate(table, inner)
    }

    fn raw(&mut self) -> Result<(Raw, usize), RuleError> {
        let at = self.here();
        let Some(t) = self.tokens.get(self.pos) else {
            return Err(self.error_at(at, format!("the rule ends where a condition should be; {ALLOWED}")));
        };
        let raw = match &t.tok {
            Tok::Str(s) => Raw::Str(s.clone()),
            Tok::Num(n) => Raw::Num(n.clone()),
            Tok::User => Raw::User,
            Tok::Quoted(w) => Raw::Column(w.clone()),
            Tok::Word(w) if w.eq_ignore_ascii_case("TRUE") => Raw::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("FALSE") => Raw::Bool(false),
            Tok::Word(w) if w.eq_ignore_ascii_case("NULL") => Raw::Null,
            Tok::Word(w) if OUTSIDE.iter().any(|k| k.eq_ignore_ascii_case(w)) => {
                return Err(self.error_at(at, format!("{} is outside the rule subset; {ALLOWED}", w.to_uppercase())));
            }
            Tok::Word(w) if !is_keyword(w) => Raw::Column(w.clone()),
            other => {
                return Err(self.error_at(at, format!("expected a column, a literal or :user, found {}", shown(other))));
            }
        };
        self.pos += 1;
        Ok((raw, at))
    }

    fn predicate(&mut self, table: &Table, inner: bool) -> Result<Expr, RuleError> {
        if self.eat_sym("(") {
            let e = self.or(table, inner)?;
            self.expect_sym(")", "to close the parenthesis")?;
            return Ok(e);
        }
        let (raw, at) = self.raw()?;
        if let Raw::Bool(b) = raw
            && !self.at_comparison()
        {
            return Ok(Expr::Const(b));
        }
        if self.eat_keyword("IS") {
            let not = self.eat_keyword("NOT");
            self.expect_keyword("NULL", "after IS")?;
            let col = self.column_operand(raw, at, table, "IS NULL")?;
            return Ok(Expr::IsNull(col, not));
        }
        let not_in = self.peek_keyword("NOT")
            && matches!(self.tokens.get(self.pos + 1), Some(Token { tok: Tok::Word(w), .. }) if w.eq_ignore_ascii_case("IN"));
        if not_in {
            self.pos += 1;
        }
        if self.eat_keyword("IN") {
            let col = self.column_operand(raw, at, table, "IN")?;
            let Operand::Column(name, ty) = &col else { unreachable!("column_operand gives columns") };
            self.expect_sym("(", "after IN")?;
            if self.peek_keyword("SELECT") {
                if inner {
                    return Err(self.error_at(
                        self.here(),
                        "a subquery inside a subquery: rules go one level deep; join the tables in one subquery's WHERE instead",
                    ));
                }
                let select = self.select(name, *ty)?;
                self.expect_sym(")", "to close the subquery")?;
                return Ok(Expr::InSelect(col, Box::new(select), not_in));
            }
            let mut list = Vec::new();
            loop {
                let (item, item_at) = self.raw()?;
                list.push(self.literal(item, item_at, name, *ty)?);
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.expect_sym(")", "to close the list")?;
            return Ok(Expr::InList(col, list, not_in));
        }
        if let Some(op) = self.comparison() {
            let (right, right_at) = self.raw()?;
            return self.compare((raw, at), op, (right, right_at), table);
        }
        // A boolean column on its own.
        if let Raw::Column(name) = &raw
            && let Some(col) = table.column(name)
            && col.ty == ColType::Boolean
        {
            let col = self.column_operand(raw, at, table, "a condition")?;
            return Ok(Expr::Compare(col, CmpOp::Eq, Operand::Literal(Value::Integer(1), ColType::Boolean)));
        }
        let found = self.tokens.get(self.pos).map_or("the end of the rule".to_owned(), |t| shown(&t.tok));
        Err(self.error_at(self.here(), format!("expected a comparison, IS NULL or IN, found {found}; {ALLOWED}")))
    }

    fn at_comparison(&self) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token { tok: Tok::Sym(s), .. }) if ["=", "<>", "<", "<=", ">", ">="].contains(s))
    }

    fn comparison(&mut self) -> Option<CmpOp> {
        let op = match self.tokens.get(self.pos).map(|t| &t.tok) {
            Some(Tok::Sym("=")) => CmpOp::Eq,
            Some(Tok::Sym("<>")) => CmpOp::Ne,
            Some(Tok::Sym("<")) => CmpOp::Lt,
            Some(Tok::Sym("<=")) => CmpOp::Le,
            Some(Tok::Sym(">")) => CmpOp::Gt,
            Some(Tok::Sym(">=")) => CmpOp::Ge,
            _ => return None,
        };
        self.pos += 1;
        Some(op)
    }

    /// `SELECT column FROM table [WHERE …]`, after the opening parenthesis.
    fn select(&mut self, outer: &str, outer_ty: ColType) -> Result<Select, RuleError> {
        self.expect_keyword("SELECT", "")?;
        let (column, column_at) = self.name("the subquery's column")?;
        self.expect_keyword("FROM", "after the subquery's column")?;
        let (table_name, table_at) = self.name("a table")?;
        let Some(inner) = self.tables.iter().find(|t| t.name == table_name) else {
            let known: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
            return Err(
                self.error_at(table_at, format!("unknown table '{table_name}'; the schema has: {}", known.join(", ")))
            );
        };
        if inner.options.local_only {
            return Err(self.error_at(
                table_at,
                format!("table '{table_name}' is local_only: it never reaches the server, so rules cannot read it"),
            ));
        }
        let Some(col) = inner.column(&column) else {
            return Err(self.error_at(column_at, unknown_column(&column, inner)));
        };
        if inner.options.local_only_columns.contains(&col.name) {
            return Err(self.error_at(column_at, local_column(&column, inner)));
        }
        rule_type(col.ty).map_err(|m| self.error_at(column_at, format!("column '{column}' of '{table_name}' {m}")))?;
        if !comparable(outer_ty, col.ty) {
            return Err(self.error_at(
                column_at,
                format!(
                    "'{outer}' is {} but '{table_name}.{column}' is {}; compare columns of one type",
                    outer_ty.name(),
                    col.ty.name()
                ),
            ));
        }
        let filter = if self.eat_keyword("WHERE") { Some(self.or(inner, true)?) } else { None };
        let key = inner.pk_column().name.clone();
        Ok(Select { table: inner.name.clone(), column: col.name.clone(), ty: col.ty, filter, key })
    }

    /// `raw` must be a column of `table`.
    fn column_operand(&self, raw: Raw, at: usize, table: &Table, what: &str) -> Result<Operand, RuleError> {
        let Raw::Column(name) = raw else {
            return Err(self.error_at(at, format!("{what} needs a column on its left")));
        };
        let Some(col) = table.column(&name) else {
            return Err(self.error_at(at, unknown_column(&name, table)));
        };
        if table.options.local_only_columns.contains(&col.name) {
            return Err(self.error_at(at, local_column(&name, table)));
        }
        rule_type(col.ty).map_err(|m| self.error_at(at, format!("column '{name}' {m}")))?;
        Ok(Operand::Column(col.name.clone(), col.ty))
    }

    /// A literal for column `name` of type `ty`, as that column stores it.
    fn literal(&self, raw: Raw, at: usize, name: &str, ty: ColType) -> Result<Operand, RuleError> {
        let wrong = |what: &str| self.error_at(at, format!("column '{name}' is {}; compare it with {what}", ty.name()));
        let value = match (raw, ty) {
            (Raw::Null, _) => {
                return Err(self.error_at(at, "a comparison with NULL is never true; use IS NULL or IS NOT NULL"));
            }
            (Raw::Str(s), ColType::Uuid) if is_uuid(&s) => Value::Text(s),
            (Raw::Str(_), ColType::Uuid) => {
                return Err(wrong("a uuid in lowercase, as '0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d'"));
            }
            (Raw::Str(s), ColType::Date) if is_date(&s) => Value::Text(s),
            (Raw::Str(_), ColType::Date) => return Err(wrong("a date as 'YYYY-MM-DD'")),
            (Raw::Str(s), ColType::Text) => Value::Text(s),
            (Raw::Num(n), ColType::Integer | ColType::BigInt) => match n.parse::<i64>() {
                Ok(i) => Value::Integer(i),
                Err(_) => return Err(wrong("a whole number")),
            },
            (Raw::Bool(b), ColType::Boolean) => Value::Integer(i64::from(b)),
            (Raw::User, _) => return Err(wrong(":user only in a comparison (= or <>)")),
            (_, ColType::Uuid) => return Err(wrong("a uuid in quotes")),
            (_, ColType::Text) => return Err(wrong("a string in single quotes")),
            (_, ColType::Date) => return Err(wrong("a date as 'YYYY-MM-DD'")),
            (_, ColType::Boolean) => return Err(wrong("TRUE or FALSE")),
            (_, _) => return Err(wrong("a whole number")),
        };
        Ok(Operand::Literal(value, ty))
    }

    fn compare(&self, left: (Raw, usize), op: CmpOp, right: (Raw, usize), table: &Table) -> Result<Expr, RuleError> {
        let is_col = |r: &Raw| matches!(r, Raw::Column(_));
        // The column goes on the left.
        let (left, op, right) = match (is_col(&left.0), is_col(&right.0)) {
            (true, _) => (left, op, right),
            (false, true) => (right, op.flipped(), left),
            (false, false) => {
                return Err(self.error_at(left.1, "a comparison needs a column of the row on one side"));
            }
        };
        let col = self.column_operand(left.0, left.1, table, "a comparison")?;
        let Operand::Column(name, ty) = &col else { unreachable!("column_operand gives columns") };
        let ordered = matches!(op, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge);
        if ordered && matches!(ty, ColType::Uuid | ColType::Boolean) {
            return Err(
                self.error_at(left.1, format!("column '{name}' is {}: compare it with = or <> only", ty.name()))
            );
        }
        let right = match right.0 {
            Raw::Column(other) => {
                let other = self.column_operand(Raw::Column(other), right.1, table, "a comparison")?;
                let Operand::Column(other_name, other_ty) = &other else { unreachable!("columns") };
                if !comparable(*ty, *other_ty) {
                    return Err(self.error_at(
                        right.1,
                        format!(
                            "'{name}' is {} but '{other_name}' is {}; compare columns of one type",
                            ty.name(),
                            other_ty.name()
                        ),
                    ));
                }
                other
            }
            Raw::User => {
                if !matches!(ty, ColType::Uuid | ColType::Text) || ordered {
                    return Err(self.error_at(
                        right.1,
                        format!(
                            ":user is a user id: compare it with = or <> to a uuid or text column, not '{name}' ({})",
                            ty.name()
                        ),
                    ));
                }
                Operand::User(*ty)
            }
            raw => self.literal(raw, right.1, name, *ty)?,
        };
        Ok(Expr::Compare(col, op, right))
    }
}

fn local_column(name: &str, table: &Table) -> String {
    format!("column '{name}' of '{}' is local-only: it never reaches the server, so rules cannot read it", table.name)
}

fn unknown_column(name: &str, table: &Table) -> String {
    format!("unknown column '{name}' in '{}'; its columns: {}", table.name, table.column_names().join(", "))
}

/// Whether rules may compare columns of this type: the stores must compare its values alike.
fn rule_type(ty: ColType) -> Result<(), String> {
    match ty {
        ColType::Uuid | ColType::Text | ColType::Integer | ColType::BigInt | ColType::Boolean | ColType::Date => Ok(()),
        other => Err(format!(
            "is {}, which rules cannot compare (the stores compare such values differently); use a uuid, text, integer, boolean or date column",
            other.name()
        )),
    }
}

fn comparable(a: ColType, b: ColType) -> bool {
    a == b || matches!((a, b), (ColType::Integer | ColType::BigInt, ColType::Integer | ColType::BigInt))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::schema::Schema;

    use super::*;

    fn schema() -> Schema {
        Schema::parse(
            "CREATE TABLE groups (id uuid PRIMARY KEY, name text, public boolean);
             CREATE TABLE group_members (id uuid PRIMARY KEY, group_id uuid, user_id uuid, role text);
             CREATE TABLE formations (id uuid PRIMARY KEY, group_id uuid, title text, size integer, at timestamptz, day date);",
            &BTreeMap::new(),
        )
        .unwrap()
    }

    fn parse(rule: &str) -> Result<Rule, RuleError> {
        let s = schema();
        Rule::parse(rule, s.table("formations").unwrap(), &s.tables)
    }

    #[test]
    fn the_issue_s_rules_parse_and_print_back() {
        for rule in [
            "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user)",
            "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user AND role = 'owner')",
            "size >= 2 AND NOT (title = 'x' OR title IS NULL)",
            "group_id NOT IN ('0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d') OR day < '2026-01-01'",
            "3 < size",
        ] {
            let parsed = parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
            let printed = parsed.expr.to_string();
            assert_eq!(parse(&printed).unwrap().expr, parsed.expr, "{rule} printed as {printed}");
        }
        assert_eq!(parse("3 < size").unwrap().expr.to_string(), "size > 3");
        let s = schema();
        let public = Rule::parse("public", s.table("groups").unwrap(), &s.tables).unwrap();
        assert_eq!(public.expr.to_string(), "public = TRUE");
    }

    #[test]
    fn errors_name_the_position_and_the_fix() {
        let cases = [
            ("group_id IN (SELECT group_id FROM members WHERE user_id = :user)", 35, "unknown table 'members'"),
            ("grp = :user", 1, "unknown column 'grp' in 'formations'; its columns: id, group_id"),
            ("title LIKE 'a%'", 7, "expected a comparison"),
            ("LIKE", 1, "LIKE is outside the rule subset"),
            ("size = 'big'", 8, "column 'size' is integer; compare it with a whole number"),
            ("group_id = 'g1'", 12, "compare it with a uuid in lowercase"),
            ("at > '2026-01-01'", 1, "column 'at' is timestamptz, which rules cannot compare"),
            ("title = NULL", 9, "use IS NULL"),
            ("size = :me", 8, "unknown parameter ':me'"),
            ("size = :user", 8, ":user is a user id"),
            ("group_id < :user", 1, "compare it with = or <> only"),
            ("(size = 1", 10, "expected ')' to close the parenthesis"),
            ("size = 1 size = 2", 10, "unexpected 'size' after the end of the rule"),
            ("'a' = 'b'", 1, "needs a column of the row"),
            (
                "group_id IN (SELECT user_id FROM group_members WHERE group_id IN (SELECT id FROM groups))",
                67,
                "one level deep",
            ),
            ("group_id IN (SELECT role FROM group_members)", 21, "'group_id' is uuid but 'group_members.role' is text"),
            ("title = 'unterminated", 9, "unterminated string"),
            ("", 1, "the rule ends where a condition should be"),
        ];
        for (rule, at, needle) in cases {
            let e = parse(rule).expect_err(rule);
            assert!(e.message.contains(needle), "{rule}: {e}");
            assert_eq!(e.at, at, "{rule}: {e}");
        }
        let e = parse("title ~ 'x'").unwrap_err();
        assert!(e.to_string().contains("unexpected character '~'") && e.to_string().contains("IN (SELECT"), "{e}");
    }

    #[test]
    fn a_local_only_table_can_be_read_by_no_rule_and_takes_no_synced_option() {
        use crate::schema::TableOptions;
        let sql = "CREATE TABLE drafts (id uuid PRIMARY KEY, user_id uuid); CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid);";
        let local = TableOptions { local_only: true, ..TableOptions::default() };
        let rule =
            TableOptions { write: Some("user_id IN (SELECT user_id FROM drafts)".into()), ..TableOptions::default() };
        let options = BTreeMap::from([("drafts".to_owned(), local.clone()), ("notes".to_owned(), rule)]);
        let e = Schema::parse(sql, &options).unwrap_err().to_string();
        assert!(e.contains("table 'drafts' is local_only: it never reaches the server"), "{e}");
        let owned = TableOptions { owner: Some("user_id".into()), ..local };
        let e = Schema::parse(sql, &BTreeMap::from([("drafts".to_owned(), owned)])).unwrap_err().to_string();
        assert!(e.contains("local_only = true keeps the table on devices, so owner has no meaning"), "{e}");
    }

    #[test]
    fn local_only_columns_are_checked_and_no_rule_reads_them() {
        use crate::schema::TableOptions;
        let sql = "CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid, draft text, must text NOT NULL);";
        let with = |cols: &[&str], write: Option<&str>| {
            let options = TableOptions {
                local_only_columns: cols.iter().map(|c| c.to_string()).collect(),
                write: write.map(str::to_owned),
                ..TableOptions::default()
            };
            Schema::parse(sql, &BTreeMap::from([("notes".to_owned(), options)]))
        };
        let schema = with(&["draft"], None).unwrap();
        let synced = schema.synced();
        assert_eq!(synced.table("notes").unwrap().column_names(), ["id", "user_id", "must"]);
        for (cols, needle) in [
            (&["nope"][..], "local-only column 'nope' does not exist"),
            (&["id"][..], "is the primary key"),
            (&["must"][..], "NOT NULL without a DEFAULT"),
            (&["draft", "draft"][..], "is listed twice"),
        ] {
            let e = with(cols, None).unwrap_err().to_string();
            assert!(e.contains(needle), "{cols:?}: {e}");
        }
        let e = with(&["draft"], Some("draft = 'x'")).unwrap_err().to_string();
        assert!(e.contains("column 'draft' of 'notes' is local-only"), "{e}");
    }

    #[test]
    fn a_subquery_names_only_its_own_table() {
        // `title` is the outer table's: an inner filter naming it would be correlated.
        let e = parse("group_id IN (SELECT group_id FROM group_members WHERE title = 'x')").unwrap_err();
        assert!(e.message.contains("unknown column 'title' in 'group_members'"), "{e}");
        let rule = parse("group_id IN (SELECT group_id FROM group_members WHERE user_id = :user)").unwrap();
        assert_eq!(rule.tables(), ["group_members"]);
        assert_eq!(rule.columns(), ["group_id"]);
    }
}

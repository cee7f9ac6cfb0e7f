//! Parsing the portable subset: a tokenizer and a recursive-descent parser for `CREATE TABLE`
//! statements, and the checks of per-table options against the tables parsed.

use std::collections::BTreeMap;
use std::fmt;

use super::checks::check_role;
use super::{ColType, Column, ConflictStrategy, Schema, SchemaError, Table, TableOptions};
use crate::rules::{Access, Expr, Rule};
use crate::value::Value;

impl Schema {
    /// Parses `sql` (the portable subset) and attaches `options` (by table name).
    ///
    /// # Errors
    /// A [`SchemaError`] naming the table and the fix when the SQL is outside the subset, a
    /// table has no usable primary key, a type is unknown, or an option names a table or
    /// column that does not exist.
    pub fn parse(sql: &str, options: &BTreeMap<String, TableOptions>) -> Result<Schema, SchemaError> {
        let tokens = tokenize(sql)?;
        let mut p = Parser { tokens, pos: 0 };
        let mut tables: Vec<Table> = Vec::new();
        while !p.at_end() {
            if p.eat_punct(';') {
                continue;
            }
            let table = p.create_table()?;
            if table.name.to_ascii_lowercase().starts_with("_ferry") {
                return Err(SchemaError(format!(
                    "table '{}': names starting with '_ferry' are reserved for Ferry's bookkeeping; rename the table",
                    table.name
                )));
            }
            if tables.iter().any(|t| t.name.eq_ignore_ascii_case(&table.name)) {
                return Err(SchemaError(format!("table '{}' is defined twice; keep one definition", table.name)));
            }
            tables.push(table);
        }
        if tables.is_empty() {
            return Err(SchemaError("the schema has no CREATE TABLE statements; add the tables to sync".into()));
        }
        for (name, opts) in options {
            let Some(table) = tables.iter_mut().find(|t| &t.name == name) else {
                let known: Vec<_> = tables.iter().map(|t| t.name.as_str()).collect();
                return Err(SchemaError(format!(
                    "options given for table '{name}', which the schema does not define; the schema has: {}",
                    known.join(", ")
                )));
            };
            if let Some(owner) = &opts.owner {
                let Some(col) = table.column(owner) else {
                    return Err(SchemaError(format!(
                        "table '{name}': owner column '{owner}' does not exist; the columns are: {}",
                        table.column_names().join(", ")
                    )));
                };
                if !matches!(col.ty, ColType::Uuid | ColType::Text) {
                    return Err(SchemaError(format!(
                        "table '{name}': owner column '{owner}' is {}, but it must hold a user id; make it uuid",
                        col.ty.name()
                    )));
                }
                if col.name == table.columns[table.pk].name {
                    return Err(SchemaError(format!(
                        "table '{name}': the owner column '{owner}' cannot be the primary key; add a separate user id column"
                    )));
                }
            }
            for file in &opts.files {
                let Some(col) = table.column(file) else {
                    return Err(SchemaError(format!(
                        "table '{name}': file column '{file}' does not exist; the columns are: {}",
                        table.column_names().join(", ")
                    )));
                };
                if col.ty != ColType::Text || col.name == table.columns[table.pk].name {
                    return Err(SchemaError(format!(
                        "table '{name}': file column '{file}' must be a text column other than the primary key (it holds the file's SHA-256 in hex); it is {}",
                        if col.name == table.columns[table.pk].name { "the primary key" } else { col.ty.name() }
                    )));
                }
                if opts.owner.as_deref() == Some(file.as_str()) || opts.files.iter().filter(|f| *f == file).count() > 1
                {
                    return Err(SchemaError(format!(
                        "table '{name}': file column '{file}' is listed twice or is also the owner column; list each file column once"
                    )));
                }
            }
            for (i, col) in opts.local_only_columns.iter().enumerate() {
                let bad = |why: &str| {
                    Err(SchemaError(format!(
                        "table '{name}': local-only column '{col}' {why}; the columns are: {}",
                        table.column_names().join(", ")
                    )))
                };
                let Some(c) = table.column(col) else { return bad("does not exist") };
                if c.name == table.columns[table.pk].name {
                    return bad("is the primary key, which every replica needs");
                }
                if opts.owner.as_deref() == Some(col.as_str()) || opts.files.contains(col) {
                    return bad("is also the owner or a file column, which must sync");
                }
                if c.not_null && c.default.is_none() {
                    return bad(
                        "is NOT NULL without a DEFAULT: rows from other devices arrive without it; give it a DEFAULT",
                    );
                }
                if opts.local_only_columns[..i].contains(col) {
                    return bad("is listed twice");
                }
            }
            if opts.local_only {
                let synced_only = [
                    ("owner", opts.owner.is_some()),
                    ("read", opts.read.is_some()),
                    ("filter", opts.filter.is_some()),
                    ("write", opts.write.is_some()),
                    ("read_only", opts.read_only),
                    ("files", !opts.files.is_empty()),
                    ("conflict", opts.conflict != ConflictStrategy::Lww),
                ];
                if let Some((key, _)) = synced_only.iter().find(|(_, set)| *set) {
                    return Err(SchemaError(format!(
                        "table '{name}': local_only = true keeps the table on devices, so {key} has no meaning there; remove {key} or local_only"
                    )));
                }
            }
            match (opts.conflict, &opts.authority) {
                (ConflictStrategy::Authoritative, None) => {
                    return Err(SchemaError(format!(
                        "table '{name}': conflict = \"authoritative\" needs the role whose writes win, e.g. authority = \"main\" (give that device `ferry token create --role main`)"
                    )));
                }
                (ConflictStrategy::Authoritative, Some(role)) => {
                    check_role(role).map_err(|e| SchemaError(format!("table '{name}': authority = \"{role}\": {e}")))?
                }
                (other, Some(role)) => {
                    return Err(SchemaError(format!(
                        "table '{name}': authority = \"{role}\" only applies to conflict = \"authoritative\", but the table uses \"{}\"; remove it or change the strategy",
                        other.name()
                    )));
                }
                (_, None) => {}
            }
            table.options = opts.clone();
        }
        let access: Vec<Access> = tables.iter().map(|t| access(t, &tables)).collect::<Result<_, _>>()?;
        for (table, access) in tables.iter_mut().zip(access) {
            table.access = access;
        }
        Ok(Schema { tables })
    }
}

/// A table's rules: `read` and `write` as given, each defaulting to `owner`'s `col = :user`.
fn access(table: &Table, tables: &[Table]) -> Result<Access, SchemaError> {
    let owner = table.options.owner.as_ref().and_then(|o| table.column(o)).map(|c| Rule::owner(&c.name, c.ty));
    let rule = |key: &str, source: &Option<String>| -> Result<Option<Rule>, SchemaError> {
        match source {
            None => Ok(owner.clone()),
            Some(source) => Rule::parse(source, table, tables).map(Some).map_err(|e| {
                let caret = format!("{}^", " ".repeat(e.at - 1));
                SchemaError(format!(
                    "table '{}': {key} rule, at position {}: {}\n    {source}\n    {caret}",
                    table.name, e.at, e.message
                ))
            }),
        }
    };
    let filter = match &table.options.filter {
        None => None,
        Some(source) => Some(Rule::parse(source, table, tables).map_err(|e| {
            let caret = format!("{}^", " ".repeat(e.at - 1));
            SchemaError(format!(
                "table '{}': filter, at position {}: {}\n    {source}\n    {caret}",
                table.name, e.at, e.message
            ))
        })?),
    };
    if let Some(f) = &filter
        && !f.subqueries().is_empty()
    {
        return Err(SchemaError(format!(
            "table '{}': filter `{}` holds a subquery; a filter decides from the row alone (e.g. filter = \"is_demo\"), use a read rule for membership",
            table.name, f.source
        )));
    }
    let mut read = rule("read", &table.options.read)?;
    if let Some(f) = &filter {
        // Readable: what the read rule (or everyone) allows, unless the filter holds.
        let hidden = Expr::Not(Box::new(Expr::IsTrue(Box::new(f.expr.clone()))));
        read = Some(match read {
            Some(r) => Rule {
                source: format!("({}) AND NOT (({}) IS TRUE)", r.source, f.source),
                expr: Expr::And(Box::new(r.expr), Box::new(hidden)),
            },
            None => Rule { source: format!("NOT (({}) IS TRUE)", f.source), expr: hidden },
        });
    }
    Ok(Access { read, write: rule("write", &table.options.write)?, filter })
}

/// The logical type named by `words` (and its argument, the length of `varchar(n)`).
fn col_type(words: &[String], arg: Option<u32>) -> Option<(ColType, Option<u32>)> {
    let joined = words.join(" ").to_ascii_lowercase();
    let ty = match joined.as_str() {
        "uuid" => ColType::Uuid,
        "text" => ColType::Text,
        "varchar" | "character varying" => return Some((ColType::Text, arg)),
        "integer" | "int" | "int4" | "smallint" | "int2" => ColType::Integer,
        "bigint" | "int8" => ColType::BigInt,
        "real" | "float" | "float4" | "float8" | "double" | "double precision" => ColType::Real,
        "boolean" | "bool" => ColType::Boolean,
        "timestamptz" | "timestamp with time zone" => ColType::Timestamptz,
        "date" => ColType::Date,
        "json" | "jsonb" => ColType::Json,
        "bytea" | "blob" => ColType::Blob,
        _ => return None,
    };
    Some((ty, None))
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Str(String),
    Num(String),
    Punct(char),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "{w}"),
            Tok::Quoted(w) => write!(f, "\"{w}\""),
            Tok::Str(s) => write!(f, "'{s}'"),
            Tok::Num(n) => write!(f, "{n}"),
            Tok::Punct(c) => write!(f, "{c}"),
        }
    }
}

fn tokenize(sql: &str) -> Result<Vec<Tok>, SchemaError> {
    let mut out = Vec::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c == '\'' || c == '"' || c == '`' {
            let s = quoted(&chars, &mut i).map_err(|s| {
                SchemaError(format!(
                    "unterminated {} in the schema near '{}'; close it",
                    if c == '\'' { "string" } else { "quoted name" },
                    s.chars().take(30).collect::<String>()
                ))
            })?;
            out.push(if c == '\'' { Tok::Str(s) } else { Tok::Quoted(s) });
        } else if "(),;=<>.".contains(c) {
            out.push(Tok::Punct(c));
            i += 1;
        } else {
            return Err(SchemaError(format!("unexpected character '{c}' in the schema")));
        }
    }
    Ok(out)
}

/// Reads the quoted text starting at `chars[*i]` (its opening quote, which also closes it; a
/// doubled quote stands for one) and moves `*i` past its end; `Err` with what was read when
/// the text never closes. Rules (`crate::rules`) read their strings and names with it too.
pub(crate) fn quoted(chars: &[char], i: &mut usize) -> Result<String, String> {
    let close = chars[*i];
    let mut s = String::new();
    *i += 1;
    loop {
        match chars.get(*i) {
            None => return Err(s),
            Some(&d) if d == close && chars.get(*i + 1) == Some(&close) => {
                s.push(d);
                *i += 2;
            }
            Some(&d) if d == close => {
                *i += 1;
                return Ok(s);
            }
            Some(&d) => {
                s.push(d);
                *i += 1;
            }
        }
    }
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.peek_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn near(&self) -> String {
        match self.peek() {
            Some(t) => format!("near '{t}'"),
            None => "at the end of the schema".into(),
        }
    }

    fn expect_kw(&mut self, kw: &str, ctx: &str) -> Result<(), SchemaError> {
        if self.eat_kw(kw) { Ok(()) } else { Err(SchemaError(format!("{ctx}: expected {kw} {}", self.near()))) }
    }

    fn expect_punct(&mut self, c: char, ctx: &str) -> Result<(), SchemaError> {
        if self.eat_punct(c) { Ok(()) } else { Err(SchemaError(format!("{ctx}: expected '{c}' {}", self.near()))) }
    }

    fn ident(&mut self, ctx: &str) -> Result<String, SchemaError> {
        match self.peek().cloned() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => {
                self.pos += 1;
                // `schema.table`: keep the table name.
                if self.eat_punct('.') {
                    return self.ident(ctx);
                }
                Ok(w)
            }
            _ => Err(SchemaError(format!("{ctx}: expected a name {}", self.near()))),
        }
    }

    fn ident_list(&mut self, ctx: &str) -> Result<Vec<String>, SchemaError> {
        self.expect_punct('(', ctx)?;
        let mut names = vec![self.ident(ctx)?];
        while self.eat_punct(',') {
            names.push(self.ident(ctx)?);
        }
        self.expect_punct(')', ctx)?;
        Ok(names)
    }

    fn create_table(&mut self) -> Result<Table, SchemaError> {
        let start = "the schema";
        if !self.eat_kw("CREATE") {
            return Err(SchemaError(format!(
                "the schema may hold only CREATE TABLE statements; found {}",
                self.near()
            )));
        }
        self.expect_kw("TABLE", start)?;
        if self.eat_kw("IF") {
            self.expect_kw("NOT", start)?;
            self.expect_kw("EXISTS", start)?;
        }
        let name = self.ident(start)?;
        let ctx = format!("table '{name}'");
        self.expect_punct('(', &ctx)?;
        let mut columns: Vec<Column> = Vec::new();
        let mut pk: Vec<String> = Vec::new();
        loop {
            if self.eat_kw("CONSTRAINT") {
                self.ident(&ctx)?;
            }
            if self.eat_kw("PRIMARY") {
                self.expect_kw("KEY", &ctx)?;
                pk.extend(self.ident_list(&ctx)?);
            } else if self.eat_kw("UNIQUE") {
                for c in self.ident_list(&ctx)? {
                    if let Some(col) = columns.iter_mut().find(|x| x.name == c) {
                        col.unique = true;
                    }
                }
            } else if self.eat_kw("FOREIGN") {
                self.expect_kw("KEY", &ctx)?;
                let cols = self.ident_list(&ctx)?;
                let (rt, rc) = self.references(&ctx)?;
                if let [c] = cols.as_slice()
                    && let Some(col) = columns.iter_mut().find(|x| &x.name == c)
                {
                    col.references = Some((rt, rc));
                }
            } else if self.peek_kw("CHECK") {
                let (col, allowed) = self.check(&ctx)?;
                let Some(column) = columns.iter_mut().find(|x| x.name == col) else {
                    return Err(SchemaError(format!("{ctx}: CHECK names unknown column '{col}'")));
                };
                column.allowed = Some(allowed);
            } else {
                let col = self.column(&ctx, &mut pk)?;
                if columns.iter().any(|c| c.name.eq_ignore_ascii_case(&col.name)) {
                    return Err(SchemaError(format!("{ctx}: column '{}' is defined twice", col.name)));
                }
                if col.name.to_ascii_lowercase().starts_with("_ferry") {
                    return Err(SchemaError(format!(
                        "{ctx}: column '{}': names starting with '_ferry' are reserved; rename the column",
                        col.name
                    )));
                }
                columns.push(col);
            }
            if self.eat_punct(',') {
                continue;
            }
            self.expect_punct(')', &ctx)?;
            break;
        }
        // Trailing table options such as `WITHOUT ROWID` or `STRICT` are outside the subset.
        if let Some(t) = self.peek()
            && *t != Tok::Punct(';')
        {
            return Err(SchemaError(format!(
                "{ctx}: table options {} are outside Ferry's portable subset; remove them",
                self.near()
            )));
        }
        let pk = match pk.as_slice() {
            [] => {
                return Err(SchemaError(format!(
                    "{ctx} has no primary key; every synced table needs one, add `id uuid PRIMARY KEY`"
                )));
            }
            [one] => one.clone(),
            many => {
                return Err(SchemaError(format!(
                    "{ctx} has a composite primary key ({}); Ferry needs a single key column, add `id uuid PRIMARY KEY` and make ({}) UNIQUE",
                    many.join(", "),
                    many.join(", ")
                )));
            }
        };
        let Some(pk_index) = columns.iter().position(|c| c.name == pk) else {
            return Err(SchemaError(format!("{ctx}: primary key names unknown column '{pk}'")));
        };
        let key = &mut columns[pk_index];
        match key.ty {
            ColType::Uuid | ColType::Text => key.not_null = true,
            ColType::Integer | ColType::BigInt => {
                return Err(SchemaError(format!(
                    "{ctx}: integer primary key '{pk}' is refused: replicas that insert offline would pick the same numbers and collide; use `{pk} uuid PRIMARY KEY` and generate UUIDs (v7) in the app, or map legacy integer keys to UUIDs on import"
                )));
            }
            other => {
                return Err(SchemaError(format!("{ctx}: primary key '{pk}' is {}; use uuid (or text)", other.name())));
            }
        }
        Ok(Table { name, columns, pk: pk_index, options: TableOptions::default(), access: Default::default() })
    }

    fn references(&mut self, ctx: &str) -> Result<(String, String), SchemaError> {
        self.expect_kw("REFERENCES", ctx)?;
        let table = self.ident(ctx)?;
        let col = if self.peek() == Some(&Tok::Punct('(')) { self.ident_list(ctx)?.remove(0) } else { "id".to_owned() };
        while self.eat_kw("ON") {
            if !(self.eat_kw("DELETE") || self.eat_kw("UPDATE")) {
                return Err(SchemaError(format!("{ctx}: expected DELETE or UPDATE {}", self.near())));
            }
            if self.eat_kw("SET") {
                if !(self.eat_kw("NULL") || self.eat_kw("DEFAULT")) {
                    return Err(SchemaError(format!("{ctx}: expected NULL or DEFAULT {}", self.near())));
                }
            } else if self.eat_kw("NO") {
                self.expect_kw("ACTION", ctx)?;
            } else if !(self.eat_kw("CASCADE") || self.eat_kw("RESTRICT")) {
                return Err(SchemaError(format!("{ctx}: unknown foreign key action {}", self.near())));
            }
        }
        Ok((table, col))
    }

    /// `CHECK (col IN ('a', 'b'))`, the one CHECK form in the subset.
    fn check(&mut self, ctx: &str) -> Result<(String, Vec<String>), SchemaError> {
        self.expect_kw("CHECK", ctx)?;
        let unsupported = |p: &Parser| {
            SchemaError(format!(
                "{ctx}: only CHECK (column IN ('a', 'b', ...)) is supported, {}; check other rules in the application",
                p.near()
            ))
        };
        if !self.eat_punct('(') {
            return Err(unsupported(self));
        }
        let col = self.ident(ctx).map_err(|_| unsupported(self))?;
        if !self.eat_kw("IN") || !self.eat_punct('(') {
            return Err(unsupported(self));
        }
        let mut allowed = Vec::new();
        loop {
            match self.peek().cloned() {
                Some(Tok::Str(s)) => {
                    self.pos += 1;
                    allowed.push(s);
                }
                _ => return Err(unsupported(self)),
            }
            if self.eat_punct(',') {
                continue;
            }
            break;
        }
        if !self.eat_punct(')') || !self.eat_punct(')') {
            return Err(unsupported(self));
        }
        Ok((col, allowed))
    }

    fn column(&mut self, ctx: &str, pk: &mut Vec<String>) -> Result<Column, SchemaError> {
        let name = self.ident(ctx)?;
        let cctx = format!("{ctx}, column '{name}'");
        let mut words = Vec::new();
        while let Some(Tok::Word(w)) = self.peek() {
            let lw = w.to_ascii_lowercase();
            let continues_type = words.is_empty()
                || matches!(
                    (words.last().map(|s: &String| s.to_ascii_lowercase()).as_deref(), lw.as_str()),
                    (Some("double"), "precision")
                        | (Some("character"), "varying")
                        | (Some("timestamp"), "with")
                        | (Some("timestamp"), "without")
                        | (Some("with" | "without"), "time")
                        | (Some("time"), "zone")
                );
            if !continues_type {
                break;
            }
            words.push(w.clone());
            self.pos += 1;
        }
        if words.is_empty() {
            return Err(SchemaError(format!("{cctx}: expected a type {}", self.near())));
        }
        let mut arg = None;
        if self.eat_punct('(') {
            match self.peek().cloned() {
                Some(Tok::Num(n)) => {
                    self.pos += 1;
                    arg = n.parse::<u32>().ok();
                    while self.eat_punct(',') {
                        self.pos += 1;
                    }
                }
                _ => {
                    return Err(SchemaError(format!("{cctx}: expected a length {}", self.near())));
                }
            }
            self.expect_punct(')', &cctx)?;
        }
        let Some((ty, max_len)) = col_type(&words, arg) else {
            let given = words.join(" ");
            let hint = match given.to_ascii_lowercase().as_str() {
                "timestamp" | "timestamp without time zone" | "datetime" => {
                    "use timestamptz (stored as ISO-8601 text with an offset)".to_owned()
                }
                "numeric" | "decimal" => "use real, or text for exact decimals".to_owned(),
                _ => "supported types: uuid, text, varchar(n), integer, bigint, real, double precision, boolean, timestamptz, date, jsonb, bytea".to_owned(),
            };
            return Err(SchemaError(format!("{cctx}: unknown type '{given}'; {hint}")));
        };
        let mut col = Column {
            name,
            ty,
            not_null: false,
            max_len,
            allowed: None,
            default: None,
            references: None,
            unique: false,
        };
        loop {
            if self.eat_kw("CONSTRAINT") {
                self.ident(&cctx)?;
            }
            if self.eat_kw("PRIMARY") {
                self.expect_kw("KEY", &cctx)?;
                pk.push(col.name.clone());
            } else if self.eat_kw("NOT") {
                self.expect_kw("NULL", &cctx)?;
                col.not_null = true;
            } else if self.eat_kw("NULL") {
            } else if self.eat_kw("UNIQUE") {
                col.unique = true;
            } else if self.eat_kw("DEFAULT") {
                col.default = Some(self.default_value(&cctx, ty)?);
            } else if self.peek_kw("REFERENCES") {
                col.references = Some(self.references(&cctx)?);
            } else if self.peek_kw("CHECK") {
                let (c, allowed) = self.check(&cctx)?;
                if c != col.name {
                    return Err(SchemaError(format!("{cctx}: CHECK names another column '{c}'")));
                }
                col.allowed = Some(allowed);
            } else {
                break;
            }
        }
        Ok(col)
    }

    fn default_value(&mut self, ctx: &str, ty: ColType) -> Result<Value, SchemaError> {
        let tok = self.peek().cloned();
        self.pos += 1;
        let v = match (&tok, ty) {
            (Some(Tok::Word(w)), _) if w.eq_ignore_ascii_case("null") => Value::Null,
            (Some(Tok::Word(w)), ColType::Boolean) if w.eq_ignore_ascii_case("true") => Value::Integer(1),
            (Some(Tok::Word(w)), ColType::Boolean) if w.eq_ignore_ascii_case("false") => Value::Integer(0),
            (Some(Tok::Num(n)), ColType::Integer | ColType::BigInt | ColType::Boolean) => {
                n.parse().map(Value::Integer).map_err(|_| bad_default(ctx, n))?
            }
            (Some(Tok::Num(n)), ColType::Real) => n.parse().map(Value::Real).map_err(|_| bad_default(ctx, n))?,
            (Some(Tok::Str(s)), t) if t.is_textual() => Value::Text(s.clone()),
            (other, _) => {
                let shown = other.as_ref().map(|t| t.to_string()).unwrap_or_default();
                return Err(SchemaError(format!(
                    "{ctx}: DEFAULT {shown} is not supported; only constant defaults of the column's type are (defaults such as now() differ between SQLite and PostgreSQL: set the value in the application)"
                )));
            }
        };
        Ok(v)
    }
}

fn bad_default(ctx: &str, n: &str) -> SchemaError {
    SchemaError(format!("{ctx}: DEFAULT {n} does not fit the column's type"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<Schema, SchemaError> {
        Schema::parse(sql, &BTreeMap::new())
    }

    pub(crate) const JUMPS: &str = r#"
        -- a comment
        CREATE TABLE jump_log (
            id uuid PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            jump_number integer NOT NULL DEFAULT 0,
            altitude_ft real,
            kind varchar(20) NOT NULL CHECK (kind IN ('belly', 'freefly')),
            visible boolean NOT NULL DEFAULT false,
            jumped_at timestamp with time zone,
            video bytea
        );
    "#;

    #[test]
    fn parses_the_subset_and_round_trips_through_canonical_text() {
        let s = parse(JUMPS).unwrap();
        let t = s.table("jump_log").unwrap();
        assert_eq!(t.pk_column().name, "id");
        assert_eq!(t.column("kind").unwrap().max_len, Some(20));
        assert_eq!(t.column("kind").unwrap().allowed.as_deref(), Some(&["belly".into(), "freefly".into()][..]));
        assert_eq!(t.column("jumped_at").unwrap().ty, ColType::Timestamptz);
        assert_eq!(t.column("user_id").unwrap().references, Some(("users".into(), "id".into())));
        let again = parse(&s.to_sql()).unwrap();
        assert_eq!(again, s);
        assert_eq!(again.version(), s.version());
    }

    #[test]
    fn a_table_without_a_primary_key_is_refused_with_the_fix() {
        let err = parse("CREATE TABLE notes (body text);").unwrap_err();
        assert!(err.0.contains("table 'notes' has no primary key"), "{err}");
        assert!(err.0.contains("id uuid PRIMARY KEY"), "{err}");
    }

    #[test]
    fn an_integer_primary_key_is_refused_with_a_pointer_to_uuids() {
        let err = parse("CREATE TABLE notes (id integer PRIMARY KEY, body text);").unwrap_err();
        assert!(err.0.contains("table 'notes'") && err.0.contains("uuid"), "{err}");
    }

    #[test]
    fn an_unknown_type_is_named() {
        let err = parse("CREATE TABLE notes (id uuid PRIMARY KEY, body money);").unwrap_err();
        assert!(err.0.contains("table 'notes', column 'body': unknown type 'money'"), "{err}");
    }

    #[test]
    fn an_option_for_an_unknown_table_or_column_is_refused() {
        let mut opts = BTreeMap::new();
        opts.insert("jumps".to_owned(), TableOptions { owner: Some("user_id".into()), ..TableOptions::default() });
        let err = Schema::parse(JUMPS, &opts).unwrap_err();
        assert!(err.0.contains("'jumps'") && err.0.contains("jump_log"), "{err}");
        let mut opts = BTreeMap::new();
        opts.insert("jump_log".to_owned(), TableOptions { owner: Some("owner".into()), ..TableOptions::default() });
        let err = Schema::parse(JUMPS, &opts).unwrap_err();
        assert!(err.0.contains("owner column 'owner' does not exist"), "{err}");
    }

    /// `filter` hides the rows it holds true for (not those it leaves unknown), on top of the
    /// read rule; a filter with a subquery is refused with the fix.
    #[test]
    fn a_filter_hides_only_the_rows_it_holds_true_for() {
        let sql = "CREATE TABLE g (id uuid PRIMARY KEY, name text, owner uuid);
                   CREATE TABLE m (id uuid PRIMARY KEY, g uuid);";
        let options = |read: Option<&str>, filter: &str| {
            let g = TableOptions {
                read: read.map(str::to_owned),
                filter: Some(filter.to_owned()),
                ..TableOptions::default()
            };
            BTreeMap::from([("g".to_owned(), g)])
        };
        let schema = Schema::parse(sql, &options(None, "name = 'demo'")).unwrap();
        let read = schema.table("g").unwrap().access.read.clone().unwrap();
        let row = |name: Option<&str>, owner: &str| {
            BTreeMap::from([
                ("name".to_owned(), name.map_or(Value::Null, |n| Value::Text(n.into()))),
                ("owner".to_owned(), Value::Text(owner.into())),
            ])
        };
        let none = BTreeMap::new();
        assert!(!read.allows(&row(Some("demo"), "u"), "u", &none));
        assert!(read.allows(&row(Some("real"), "u"), "u", &none));
        assert!(read.allows(&row(None, "u"), "u", &none), "an unknown filter hides nothing");
        let schema = Schema::parse(sql, &options(Some("owner = :user"), "name = 'demo'")).unwrap();
        let read = schema.table("g").unwrap().access.read.clone().unwrap();
        assert!(read.allows(&row(Some("real"), "u"), "u", &none));
        assert!(!read.allows(&row(Some("real"), "u"), "v", &none), "the read rule still holds");
        assert!(!read.allows(&row(Some("demo"), "u"), "u", &none));
        let err = Schema::parse(sql, &options(None, "id IN (SELECT g FROM m)")).unwrap_err().to_string();
        assert!(err.contains("filter `id IN (SELECT g FROM m)` holds a subquery"), "{err}");
    }

    #[test]
    fn other_statements_are_refused() {
        let err = parse("CREATE INDEX i ON t(x);").unwrap_err();
        assert!(err.0.contains("TABLE"), "{err}");
        let err = parse("DROP TABLE t;").unwrap_err();
        assert!(err.0.contains("only CREATE TABLE"), "{err}");
    }
}

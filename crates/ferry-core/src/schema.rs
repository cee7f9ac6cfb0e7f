//! The schema: one set of `CREATE TABLE` statements in a portable SQL subset, plus per-table
//! sync options, is the source of truth for every replica.
//!
//! This module parses the subset, refuses what Ferry cannot sync safely (with the table
//! and the fix in the message), maps each column's logical type to SQLite and PostgreSQL,
//! generates DDL for both, and checks values against the column rules. The subset and the
//! type mapping are documented in `docs/schema.md`; keep the two in step.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use crate::limits;
use crate::value::Value;

/// The logical type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    Uuid,
    Text,
    Integer,
    BigInt,
    Real,
    Boolean,
    Timestamptz,
    Date,
    Json,
    Blob,
}

impl ColType {
    /// The name used in Ferry's canonical schema text (and on the wire).
    pub fn name(self) -> &'static str {
        match self {
            ColType::Uuid => "uuid",
            ColType::Text => "text",
            ColType::Integer => "integer",
            ColType::BigInt => "bigint",
            ColType::Real => "real",
            ColType::Boolean => "boolean",
            ColType::Timestamptz => "timestamptz",
            ColType::Date => "date",
            ColType::Json => "jsonb",
            ColType::Blob => "bytea",
        }
    }

    /// The SQLite column type (its storage class affinity).
    pub fn sqlite(self) -> &'static str {
        match self {
            ColType::Uuid | ColType::Text | ColType::Timestamptz | ColType::Date | ColType::Json => "TEXT",
            ColType::Integer | ColType::BigInt | ColType::Boolean => "INTEGER",
            ColType::Real => "REAL",
            ColType::Blob => "BLOB",
        }
    }

    /// The PostgreSQL column type.
    pub fn postgres(self) -> &'static str {
        match self {
            ColType::Uuid => "uuid",
            ColType::Text => "text",
            ColType::Integer => "integer",
            ColType::BigInt => "bigint",
            ColType::Real => "double precision",
            ColType::Boolean => "boolean",
            ColType::Timestamptz => "timestamptz",
            ColType::Date => "date",
            ColType::Json => "jsonb",
            ColType::Blob => "bytea",
        }
    }

    /// Whether values of this type are kept as SQLite TEXT.
    pub fn is_textual(self) -> bool {
        self.sqlite() == "TEXT"
    }

    fn parse(words: &[String], arg: Option<u32>) -> Option<(ColType, Option<u32>)> {
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
}

/// One column of a synced table.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColType,
    pub not_null: bool,
    /// `varchar(n)`: the longest text allowed, in characters.
    pub max_len: Option<u32>,
    /// `CHECK (col IN ('a', 'b'))`: the allowed values.
    pub allowed: Option<Vec<String>>,
    pub default: Option<Value>,
    /// `REFERENCES table(column)`: documented, not enforced (see `docs/schema.md`).
    pub references: Option<(String, String)>,
    /// `UNIQUE`: documented, not enforced across replicas (see `docs/schema.md`).
    pub unique: bool,
}

/// Per-table sync options, from `[tables.NAME]` in `ferry.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// Rows belong to the user whose id is in this column; only that user reads or writes them.
    pub owner: Option<String>,
    /// What happens when two replicas write the same field concurrently.
    pub conflict: ConflictStrategy,
    /// Under `authoritative`: the device role whose writes always win (`authority = "main"`;
    /// devices get a role with `ferry token create --role main`).
    pub authority: Option<String>,
    /// File columns (`files = ["video"]`): each holds the SHA-256 (64 lowercase hex digits)
    /// of a file's content, or null; the file itself travels separately (`docs/files.md`).
    pub files: Vec<String>,
}

/// A table's conflict strategy (`conflict = "…"` in `[tables.NAME]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConflictStrategy {
    /// Column-level last-writer-wins: the later clock wins at once; the loser is logged.
    #[default]
    Lww,
    /// Row-level last-writer-wins: of two concurrent changes to one row, the whole row of
    /// the later one wins, even for fields only the other changed.
    RowLww,
    /// Writes by devices holding the table's `authority` role win every conflict; between
    /// other devices, `lww`.
    Authoritative,
    /// A change made on a version of the row older than the server's is refused (409) and
    /// stays with its device, marked conflicted, until someone there decides.
    RejectStale,
    /// The later clock is kept provisionally and the conflict stays open until a person
    /// picks a version (`ferry conflicts resolve`).
    Manual,
}

impl ConflictStrategy {
    pub const ALL: [ConflictStrategy; 5] = [
        ConflictStrategy::Lww,
        ConflictStrategy::RowLww,
        ConflictStrategy::Authoritative,
        ConflictStrategy::RejectStale,
        ConflictStrategy::Manual,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConflictStrategy::Lww => "lww",
            ConflictStrategy::RowLww => "row-lww",
            ConflictStrategy::Authoritative => "authoritative",
            ConflictStrategy::RejectStale => "reject-stale",
            ConflictStrategy::Manual => "manual",
        }
    }

    /// Parses a strategy name.
    ///
    /// # Errors
    /// A message naming the value and the strategies available.
    pub fn parse(s: &str) -> Result<ConflictStrategy, String> {
        ConflictStrategy::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            let names: Vec<String> = ConflictStrategy::ALL.iter().map(|c| format!("\"{}\"", c.name())).collect();
            format!("unknown conflict strategy '{s}'; use one of {} (\"lww\" is the default)", names.join(", "))
        })
    }
}

/// One synced table.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// Index into `columns` of the primary key.
    pub pk: usize,
    pub options: TableOptions,
}

/// The whole synced schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    pub tables: Vec<Table>,
}

/// Why a schema was refused. Every message names the table (and column) and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// Why a value does not fit a column.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("column '{column}': {rule}")]
pub struct ValueError {
    pub column: String,
    pub rule: String,
}

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
        Ok(Schema { tables })
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn table_names(&self) -> Vec<&str> {
        self.tables.iter().map(|t| t.name.as_str()).collect()
    }

    /// The schema in Ferry's canonical text form; [`Schema::parse`] reads it back to an equal
    /// schema (given the same options). Clients receive this text from the server.
    pub fn to_sql(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            let _ = writeln!(out, "CREATE TABLE {} (", quote(&t.name));
            for (i, c) in t.columns.iter().enumerate() {
                let ty = match (c.ty, c.max_len) {
                    (ColType::Text, Some(n)) => format!("varchar({n})"),
                    (ty, _) => ty.name().to_owned(),
                };
                let _ = write!(out, "  {} {ty}", quote(&c.name));
                if i == t.pk {
                    out.push_str(" PRIMARY KEY");
                }
                column_rules(&mut out, c, |v| literal(v, c.ty, Dialect::Portable));
                if c.unique && i != t.pk {
                    out.push_str(" UNIQUE");
                }
                if let Some((rt, rc)) = &c.references {
                    let _ = write!(out, " REFERENCES {}({})", quote(rt), quote(rc));
                }
                out.push_str(if i + 1 < t.columns.len() { ",\n" } else { "\n" });
            }
            out.push_str(");\n");
        }
        out
    }

    /// A short fingerprint of the canonical schema text and options (FNV-1a, hex): two
    /// replicas with the same version have the same tables.
    pub fn version(&self) -> String {
        let mut text = self.to_sql();
        for t in &self.tables {
            if let Some(o) = &t.options.owner {
                let _ = write!(text, "\nowner {} {}", t.name, o);
            }
            if t.options.conflict != ConflictStrategy::Lww {
                let _ = write!(text, "\nconflict {} {}", t.name, t.options.conflict.name());
            }
            if let Some(a) = &t.options.authority {
                let _ = write!(text, "\nauthority {} {}", t.name, a);
            }
            for f in &t.options.files {
                let _ = write!(text, "\nfile {} {}", t.name, f);
            }
        }
        fingerprint(&text)
    }
}

#[derive(Clone, Copy)]
enum Dialect {
    Portable,
    Sqlite,
    Postgres,
}

fn column_rules(out: &mut String, c: &Column, lit: impl Fn(&Value) -> String) {
    if c.not_null {
        out.push_str(" NOT NULL");
    }
    if let Some(d) = &c.default {
        let _ = write!(out, " DEFAULT {}", lit(d));
    }
    if let Some(allowed) = &c.allowed {
        let list: Vec<String> = allowed.iter().map(|a| quote_literal(a)).collect();
        let _ = write!(out, " CHECK ({} IN ({}))", quote(&c.name), list.join(", "));
    }
}

fn literal(v: &Value, ty: ColType, dialect: Dialect) -> String {
    match (v, ty, dialect) {
        (Value::Integer(i), ColType::Boolean, Dialect::Portable | Dialect::Postgres) => {
            (if *i != 0 { "true" } else { "false" }).to_owned()
        }
        (Value::Null, ..) => "NULL".into(),
        (Value::Integer(i), ..) => i.to_string(),
        (Value::Real(r), ..) => format!("{r:?}"),
        (Value::Text(s), ..) => quote_literal(s),
        (Value::Blob(b), _, Dialect::Postgres) => {
            format!("'\\x{}'", crate::value::to_hex(b))
        }
        (Value::Blob(b), ..) => format!("X'{}'", crate::value::to_hex(b)),
    }
}

/// Quotes an identifier for SQL (both SQLite and PostgreSQL accept double quotes).
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A short, stable fingerprint of `text` (64-bit FNV-1a, 16 hex digits). Not cryptographic:
/// it names versions and generated objects.
pub fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Quotes a string literal for SQL (SQLite and PostgreSQL alike).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn pk_column(&self) -> &Column {
        &self.columns[self.pk]
    }

    /// The columns other than the primary key, in schema order.
    pub fn data_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().enumerate().filter(move |(i, _)| *i != self.pk).map(|(_, c)| c)
    }

    /// `CREATE TABLE IF NOT EXISTS` for SQLite.
    pub fn sqlite_ddl(&self) -> String {
        self.ddl(Dialect::Sqlite)
    }

    /// `CREATE TABLE IF NOT EXISTS` for PostgreSQL.
    pub fn postgres_ddl(&self) -> String {
        self.ddl(Dialect::Postgres)
    }

    fn ddl(&self, dialect: Dialect) -> String {
        let defs: Vec<String> = (0..self.columns.len()).map(|i| self.column_def(i, dialect)).collect();
        format!("CREATE TABLE IF NOT EXISTS {} ({})", quote(&self.name), defs.join(", "))
    }

    /// The SQLite definition of column `i` as in `CREATE TABLE` (and `ALTER TABLE ADD COLUMN`).
    pub fn sqlite_column_def(&self, i: usize) -> String {
        self.column_def(i, Dialect::Sqlite)
    }

    /// The PostgreSQL definition of column `i` as in `CREATE TABLE` (and `ALTER TABLE ADD COLUMN`).
    pub fn postgres_column_def(&self, i: usize) -> String {
        self.column_def(i, Dialect::Postgres)
    }

    fn column_def(&self, i: usize, dialect: Dialect) -> String {
        let c = &self.columns[i];
        let ty = match (dialect, c.ty, c.max_len) {
            (Dialect::Postgres, ColType::Text, Some(n)) => format!("varchar({n})"),
            (Dialect::Postgres, ty, _) => ty.postgres().to_owned(),
            (_, ty, _) => ty.sqlite().to_owned(),
        };
        let mut out = format!("{} {ty}", quote(&c.name));
        if i == self.pk {
            out.push_str(" PRIMARY KEY");
        }
        column_rules(&mut out, c, |v| literal(v, c.ty, dialect));
        out
    }

    /// Checks that a value can be stored at all, alike in both stores, whether the row is
    /// live or a tombstone: the [`limits`] (key and value size, JSON nesting), no NUL in
    /// text, and reals that both stores keep bit for bit (no NaN, no negative zero).
    ///
    /// # Errors
    /// A [`ValueError`] naming the column, the limit or rule, and the fix.
    pub fn check_storable(&self, column: &Column, value: &Value) -> Result<(), ValueError> {
        let fail = |rule: String| Err(ValueError { column: column.name.clone(), rule });
        let size = match value {
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len(),
            _ => 0,
        };
        if column.name == self.pk_column().name {
            if size > limits::MAX_KEY_BYTES {
                return fail(format!(
                    "is {size} bytes long; a key may be at most {} bytes (docs/schema.md, Limits)",
                    limits::MAX_KEY_BYTES
                ));
            }
        } else if size > limits::MAX_VALUE_BYTES {
            return fail(format!(
                "holds {size} bytes; a value may be at most {} bytes (docs/schema.md, Limits): keep large content in a file column (files = [...])",
                limits::MAX_VALUE_BYTES
            ));
        }
        match value {
            Value::Real(r) if r.is_nan() => {
                return fail(
                    "is NaN, which Ferry does not store (SQLite keeps NaN as NULL); send null or a number".into(),
                );
            }
            Value::Real(r) if *r == 0.0 && r.is_sign_negative() => {
                return fail("is -0.0, which Ferry does not store (SQLite keeps it as 0.0); send 0.0".into());
            }
            Value::Text(s) => {
                if s.contains('\0') {
                    return fail("contains a NUL character, which PostgreSQL text cannot hold".into());
                }
                if column.ty == ColType::Json {
                    if s.contains("\\u0000") {
                        return fail("holds JSON with \\u0000, which PostgreSQL jsonb cannot hold".into());
                    }
                    let depth = limits::json_depth(s);
                    if depth > limits::MAX_JSON_DEPTH {
                        return fail(format!(
                            "holds JSON nested {depth} levels deep; the most allowed is {} (docs/schema.md, Limits)",
                            limits::MAX_JSON_DEPTH
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks one value against the column's type and rules (NOT NULL, allowed values,
    /// maximum length, uuid and boolean form), after [`Table::check_storable`].
    ///
    /// # Errors
    /// A [`ValueError`] naming the column and the rule broken.
    pub fn check_value(&self, column: &Column, value: &Value) -> Result<(), ValueError> {
        let fail = |rule: String| Err(ValueError { column: column.name.clone(), rule });
        self.check_storable(column, value)?;
        if value.is_null() {
            if column.not_null || column.name == self.pk_column().name {
                return fail("is NOT NULL, got null".into());
            }
            return Ok(());
        }
        let expected = column.ty.sqlite();
        let class_ok = matches!(
            (expected, value),
            ("TEXT", Value::Text(_))
                | ("INTEGER", Value::Integer(_))
                | ("REAL", Value::Real(_))
                | ("BLOB", Value::Blob(_))
        );
        if !class_ok {
            return fail(format!("expects {}, got {}", column.ty.name(), value.kind()));
        }
        match (column.ty, value) {
            (ColType::Boolean, Value::Integer(i)) if *i != 0 && *i != 1 => {
                return fail(format!("is boolean, got {i}; use true/false or 1/0"));
            }
            (ColType::Integer, Value::Integer(i)) if i32::try_from(*i).is_err() => {
                return fail(format!("is a 32-bit integer, got {i}; make the column bigint for larger numbers"));
            }
            (ColType::Timestamptz, Value::Text(s)) if !is_timestamptz(s) => {
                return fail(format!(
                    "expects an ISO-8601 timestamp with a zone like 2026-11-21T10:00:00Z or 2026-11-21T11:00:00.5+01:00, got '{s}'"
                ));
            }
            (ColType::Date, Value::Text(s)) if !is_date(s) => {
                return fail(format!("expects a date like 2026-11-21, got '{s}'"));
            }
            (ColType::Json, Value::Text(s)) if serde_json::from_str::<serde::de::IgnoredAny>(s).is_err() => {
                let shown: String = s.chars().take(40).collect();
                return fail(format!("expects JSON text, got '{shown}'"));
            }
            (ColType::Uuid, Value::Text(s)) if !is_uuid(s) => {
                return fail(format!("expects a lowercase uuid like 0190f5a2-7c1e-7d3a-9b1f-2c3d4e5f6a7b, got '{s}'"));
            }
            _ => {}
        }
        if let Value::Text(s) = value
            && self.options.files.contains(&column.name)
            && !is_file_hash(s)
        {
            let shown: String = s.chars().take(70).collect();
            return fail(format!(
                "is a file column and holds a SHA-256 in 64 lowercase hex digits (what `ferry file add` prints), got '{shown}'"
            ));
        }
        if let (Some(max), Value::Text(s)) = (column.max_len, value) {
            let n = s.chars().count();
            if n > max as usize {
                return fail(format!("is varchar({max}), got {n} characters"));
            }
        }
        if let (Some(allowed), Value::Text(s)) = (&column.allowed, value)
            && !allowed.iter().any(|a| a == s)
        {
            return fail(format!("allows only {}, got '{s}'", allowed.join(", ")));
        }
        Ok(())
    }
}

fn digits(s: &[u8], n: usize) -> Option<(u32, &[u8])> {
    if s.len() < n || !s[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = s[..n].iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    Some((v, &s[n..]))
}

fn date_prefix(s: &[u8]) -> Option<&[u8]> {
    let (year, s) = digits(s, 4)?;
    let s = s.strip_prefix(b"-")?;
    let (month, s) = digits(s, 2)?;
    let s = s.strip_prefix(b"-")?;
    let (day, s) = digits(s, 2)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (year >= 1 && (1..=days).contains(&day)).then_some(s)
}

/// Whether `s` is a calendar date `YYYY-MM-DD`.
pub fn is_date(s: &str) -> bool {
    date_prefix(s.as_bytes()).is_some_and(<[u8]>::is_empty)
}

/// Whether `s` is an ISO-8601 timestamp with a zone: `YYYY-MM-DD`, `T` (or a space),
/// `HH:MM[:SS[.fraction]]`, then `Z` or `±HH[:MM]`. A zone is required: without one, SQLite
/// and PostgreSQL would read the same text as different instants.
pub fn is_timestamptz(s: &str) -> bool {
    let time = |s: &[u8]| -> Option<()> {
        let s = date_prefix(s)?;
        let s = s.strip_prefix(b"T").or_else(|| s.strip_prefix(b"t")).or_else(|| s.strip_prefix(b" "))?;
        let (h, s) = digits(s, 2)?;
        let (m, mut s) = digits(s.strip_prefix(b":")?, 2)?;
        if let Some(rest) = s.strip_prefix(b":") {
            let (sec, rest) = digits(rest, 2)?;
            if sec > 60 {
                return None;
            }
            s = rest;
            if let Some(frac) = s.strip_prefix(b".") {
                let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
                if n == 0 {
                    return None;
                }
                s = &frac[n..];
            }
        }
        if h > 23 || m > 59 {
            return None;
        }
        match s {
            b"Z" | b"z" => Some(()),
            [b'+' | b'-', zone @ ..] => {
                let (zh, rest) = digits(zone, 2)?;
                let rest = rest.strip_prefix(b":").unwrap_or(rest);
                let ok = rest.is_empty() || digits(rest, 2).is_some_and(|(zm, r)| zm < 60 && r.is_empty());
                // PostgreSQL accepts offsets up to ±15:59.
                (zh <= 15 && ok).then_some(())
            }
            _ => None,
        }
    };
    time(s.as_bytes()).is_some()
}

/// Whether `s` is a UUID in its canonical form: hyphenated, lowercase. Lowercase only,
/// because SQLite compares keys as text (`'ABC…'` and `'abc…'` would be two rows) while
/// PostgreSQL compares them as uuids (one row).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

// ---------------------------------------------------------------------------------------
// Parsing the portable subset.

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
            let close = if c == '`' { '`' } else { c };
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(SchemaError(format!(
                            "unterminated {} in the schema near '{}'; close it",
                            if c == '\'' { "string" } else { "quoted name" },
                            s.chars().take(30).collect::<String>()
                        )));
                    }
                    Some(&d) if d == close && chars.get(i + 1) == Some(&close) => {
                        s.push(d);
                        i += 2;
                    }
                    Some(&d) if d == close => {
                        i += 1;
                        break;
                    }
                    Some(&d) => {
                        s.push(d);
                        i += 1;
                    }
                }
            }
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
        Ok(Table { name, columns, pk: pk_index, options: TableOptions::default() })
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
        let Some((ty, max_len)) = ColType::parse(&words, arg) else {
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
mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<Schema, SchemaError> {
        Schema::parse(sql, &BTreeMap::new())
    }

    const JUMPS: &str = r#"
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
    fn generates_ddl_for_both_stores() {
        let s = parse(JUMPS).unwrap();
        let t = s.table("jump_log").unwrap();
        let lite = t.sqlite_ddl();
        assert!(lite.contains("\"id\" TEXT PRIMARY KEY NOT NULL"), "{lite}");
        assert!(lite.contains("\"visible\" INTEGER NOT NULL DEFAULT 0"), "{lite}");
        assert!(lite.contains("\"video\" BLOB"), "{lite}");
        let pg = t.postgres_ddl();
        assert!(pg.contains("\"id\" uuid PRIMARY KEY"), "{pg}");
        assert!(pg.contains("\"visible\" boolean NOT NULL DEFAULT false"), "{pg}");
        assert!(pg.contains("\"kind\" varchar(20)"), "{pg}");
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

    #[test]
    fn other_statements_are_refused() {
        let err = parse("CREATE INDEX i ON t(x);").unwrap_err();
        assert!(err.0.contains("TABLE"), "{err}");
        let err = parse("DROP TABLE t;").unwrap_err();
        assert!(err.0.contains("only CREATE TABLE"), "{err}");
    }

    #[test]
    fn values_are_checked_against_the_column_rules() {
        let s = parse(JUMPS).unwrap();
        let t = s.table("jump_log").unwrap();
        let kind = t.column("kind").unwrap();
        assert!(t.check_value(kind, &Value::Text("belly".into())).is_ok());
        let err = t.check_value(kind, &Value::Text("tandem".into())).unwrap_err();
        assert_eq!(err.to_string(), "column 'kind': allows only belly, freefly, got 'tandem'");
        let err = t.check_value(kind, &Value::Null).unwrap_err();
        assert!(err.to_string().contains("NOT NULL"));
        let n = t.column("jump_number").unwrap();
        let err = t.check_value(n, &Value::Text("x".into())).unwrap_err();
        assert_eq!(err.to_string(), "column 'jump_number': expects integer, got text");
        let user = t.column("user_id").unwrap();
        assert!(t.check_value(user, &Value::Text("nope".into())).is_err());
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn timestamps_need_a_zone_and_sane_fields() {
        for ok in [
            "2026-11-21T10:00:00Z",
            "2026-11-21 10:00Z",
            "2026-11-21T10:00:00.123456+01:00",
            "2026-11-21T23:59:60-0530",
        ] {
            assert!(is_timestamptz(ok), "{ok}");
        }
        for bad in
            ["2026-11-21T10:00:00", "2026-13-01T00:00Z", "yesterday", "2026-11-21T24:00Z", "2026-11-21T10:00:00.Z", ""]
        {
            assert!(!is_timestamptz(bad), "{bad}");
        }
        assert!(is_date("2026-02-28") && !is_date("2026-2-28") && !is_date("2026-02-28T00:00Z"));
    }
}

#[cfg(test)]
mod parity_tests {
    use super::*;

    #[test]
    fn values_postgresql_would_refuse_are_refused_everywhere() {
        for bad in ["2026-02-30", "2026-02-29", "2026-04-31", "0000-01-01"] {
            assert!(!is_date(bad), "{bad}");
        }
        assert!(is_date("2024-02-29"));
        assert!(!is_timestamptz("2026-11-21T10:00:00+20:00"));
        assert!(is_timestamptz("2026-11-21T10:00:00+14:00"));
        let s = Schema::parse("CREATE TABLE t (id uuid PRIMARY KEY, note text, doc jsonb);", &BTreeMap::new()).unwrap();
        let t = s.table("t").unwrap();
        let err = t.check_value(t.column("note").unwrap(), &Value::Text("a\0b".into())).unwrap_err();
        assert!(err.rule.contains("NUL"), "{err}");
        let err = t.check_value(t.column("doc").unwrap(), &Value::Text(r#"{"a":"\u0000"}"#.into())).unwrap_err();
        assert!(err.rule.contains("\\u0000"), "{err}");
    }
}

/// Whether `s` is a file hash as file columns hold it: SHA-256, 64 lowercase hex digits.
pub fn is_file_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a device role name (`ferry token create --role`, `authority = "…"`): 1 to 64
/// characters, letters, digits, `-` and `_`.
///
/// # Errors
/// A message naming the rule.
pub fn check_role(role: &str) -> Result<(), String> {
    if role.is_empty() || role.len() > 64 || !role.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("role '{role}' must be 1 to 64 letters, digits, '-' or '_'"));
    }
    Ok(())
}

#[cfg(test)]
mod file_column_tests {
    use super::*;

    #[test]
    fn file_columns_must_be_text_and_hold_hashes() {
        let sql = "CREATE TABLE notes (id uuid PRIMARY KEY, n integer, photo text);";
        let opts = |files: &[&str]| {
            let mut o = BTreeMap::new();
            o.insert(
                "notes".to_owned(),
                TableOptions { files: files.iter().map(|f| f.to_string()).collect(), ..TableOptions::default() },
            );
            o
        };
        let schema = Schema::parse(sql, &opts(&["photo"])).unwrap();
        let t = schema.table("notes").unwrap();
        let photo = t.column("photo").unwrap();
        assert!(t.check_value(photo, &Value::Text("ab".repeat(32))).is_ok());
        assert!(t.check_value(photo, &Value::Null).is_ok());
        let bad = t.check_value(photo, &Value::Text("IMG_0001.jpg".into())).unwrap_err();
        assert!(bad.to_string().contains("IMG_0001.jpg") && bad.to_string().contains("SHA-256"), "{bad}");
        assert!(t.check_value(photo, &Value::Text("AB".repeat(32))).is_err(), "uppercase is refused");
        for (files, needle) in
            [(&["nope"][..], "does not exist"), (&["n"][..], "must be a text column"), (&["id"][..], "primary key")]
        {
            let e = Schema::parse(sql, &opts(files)).unwrap_err().to_string();
            assert!(e.contains(needle), "{files:?}: {e}");
        }
        assert_ne!(
            Schema::parse(sql, &opts(&["photo"])).unwrap().version(),
            Schema::parse(sql, &opts(&[])).unwrap().version()
        );
    }
}

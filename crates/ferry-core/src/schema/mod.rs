//! The schema: one set of `CREATE TABLE` statements in a portable SQL subset, plus per-table
//! sync options, is the source of truth for every replica.
//!
//! This module holds the schema's types, its canonical text and fingerprint, and the SQL
//! quoting every dialect shares. `parse` reads the subset and refuses what Ferry cannot sync
//! safely (with the table and the fix in the message); `checks` holds the rules a value must
//! follow to be stored alike in every store. It writes no dialect's DDL: each store maps the
//! logical types to its own (`ferry_sqlite::ddl`, and `postgres/ddl.rs` in `ferry-store`).
//! The subset and the type mapping are documented in `docs/schema.md`; keep the two in step.

mod checks;
mod parse;

use std::fmt::Write as _;

use crate::value::Value;

pub use checks::{check_role, is_date, is_file_hash, is_timestamptz, is_uuid};
pub(crate) use parse::quoted;

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

    /// Whether values of this type are kept as text ([`Value::Text`]).
    pub fn is_textual(self) -> bool {
        matches!(self, ColType::Uuid | ColType::Text | ColType::Timestamptz | ColType::Date | ColType::Json)
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
    /// Rows belong to the user whose id is in this column; only that user reads or writes them
    /// (unless `read` or `write` say otherwise).
    pub owner: Option<String>,
    /// Who may read a row: a rule (see [`crate::rules`]); without it and without `owner`,
    /// every signed-in user.
    pub read: Option<String>,
    /// Who may write a row (the row before and after the write must pass).
    pub write: Option<String>,
    /// Rows matching this rule never leave the server (`filter = "is_demo"`): no device
    /// receives them, and none may write one.
    pub filter: Option<String>,
    /// Devices may not write the table (`read_only = true`); the server's own SQL may.
    pub read_only: bool,
    /// The table exists on devices only and never syncs (`local_only = true`): devices create
    /// it without capture, and the server keeps no such table.
    pub local_only: bool,
    /// Columns that exist on devices only (`local_only_columns = ["draft"]`): devices keep
    /// them out of capture and pulls leave them as they are; the server has no such columns.
    pub local_only_columns: Vec<String>,
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
    /// `read` and `write` (or `owner`) checked against the schema.
    pub access: crate::rules::Access,
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
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn table_names(&self) -> Vec<&str> {
        self.tables.iter().map(|t| t.name.as_str()).collect()
    }

    /// The tables that sync (all but `local_only` ones).
    pub fn synced_tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().filter(|t| !t.options.local_only)
    }

    /// What syncs of this schema, as the server keeps it: the tables that sync, each without
    /// its local-only columns ([`Table::synced`]).
    pub fn synced(&self) -> Schema {
        Schema { tables: self.synced_tables().map(Table::synced).collect() }
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
                out.push_str(&c.rules_sql(|v| literal(v, c.ty)));
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
            if t.options.read_only {
                let _ = write!(text, "\nread-only {}", t.name);
            }
            if t.options.local_only {
                let _ = write!(text, "\nlocal-only {}", t.name);
            }
            for c in &t.options.local_only_columns {
                let _ = write!(text, "\nlocal-only column {} {}", t.name, c);
            }
        }
        fingerprint(&text)
    }
}

impl Column {
    /// The column's rules as they follow its type in `CREATE TABLE`, in every dialect:
    /// ` NOT NULL`, ` DEFAULT …` and ` CHECK (… IN (…))`. `literal` renders the default, the
    /// one part that differs between dialects.
    pub fn rules_sql(&self, literal: impl Fn(&Value) -> String) -> String {
        let mut out = String::new();
        if self.not_null {
            out.push_str(" NOT NULL");
        }
        if let Some(d) = &self.default {
            let _ = write!(out, " DEFAULT {}", literal(d));
        }
        if let Some(allowed) = &self.allowed {
            let list: Vec<String> = allowed.iter().map(|a| quote_literal(a)).collect();
            let _ = write!(out, " CHECK ({} IN ({}))", quote(&self.name), list.join(", "));
        }
        out
    }
}

/// A default value in the canonical text: booleans as `true`/`false`, blobs as `X'…'`.
fn literal(v: &Value, ty: ColType) -> String {
    sql_literal(v, ty, |hex| format!("X'{hex}'"))
}

/// A value as an SQL literal: booleans as `true`/`false`, a blob as its dialect spells hex
/// (`blob`, given the hex digits).
pub fn sql_literal(v: &Value, ty: ColType, blob: impl Fn(&str) -> String) -> String {
    match (v, ty) {
        (Value::Integer(i), ColType::Boolean) => (if *i != 0 { "true" } else { "false" }).to_owned(),
        (Value::Null, _) => "NULL".into(),
        (Value::Integer(i), _) => i.to_string(),
        (Value::Real(r), _) => format!("{r:?}"),
        (Value::Text(s), _) => quote_literal(s),
        (Value::Blob(b), _) => blob(&crate::value::to_hex(b)),
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

    /// The table as it syncs: without its local-only columns.
    pub fn synced(&self) -> Table {
        let local = &self.options.local_only_columns;
        let pk_name = &self.columns[self.pk].name;
        let columns: Vec<Column> = self.columns.iter().filter(|c| !local.contains(&c.name)).cloned().collect();
        let pk = columns.iter().position(|c| &c.name == pk_name).expect("the key is never local-only");
        Table { columns, pk, ..self.clone() }
    }

    /// The columns other than the primary key, in schema order.
    pub fn data_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().enumerate().filter(move |(i, _)| *i != self.pk).map(|(_, c)| c)
    }
}

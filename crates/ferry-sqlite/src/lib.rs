//! How Ferry keeps row state in an SQLite file: shared by the device replica
//! (`ferry-client`) and the embedded server store (`ferry-store`).
//!
//! Application tables keep exactly the schema's columns. Each synced row also has one
//! bookkeeping row in `_ferry_rows` holding its clocks: the existence register, a base
//! clock shared by most columns and a JSON object of the columns whose clock differs. A
//! deleted row's last values live there too (`dead`), because a later re-insert or a late
//! update may need them for replicas to converge.
//!
//! This crate knows SQL text and SQLite types; it knows nothing of HTTP or of which side
//! (device or server) it runs on. Identifiers come only from the parsed schema and are
//! always quoted; values are always bound, never spliced.

pub mod ddl;

use std::collections::BTreeMap;

use ferry_core::schema::{Table, quote};
use ferry_core::{Hlc, RowState, Stamped, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, params};

/// Creates `_ferry_rows` or brings an older one up to date (columns added since).
pub fn ensure_rows_table(conn: &Connection) -> Result<()> {
    conn.execute_batch(ROWS_DDL)?;
    let has_base: bool =
        conn.query_row("SELECT count(*) > 0 FROM pragma_table_info('_ferry_rows') WHERE name = 'base'", [], |r| {
            r.get(0)
        })?;
    if !has_base {
        conn.execute_batch("ALTER TABLE _ferry_rows ADD COLUMN base TEXT")?;
    }
    let has_seen: bool =
        conn.query_row("SELECT count(*) > 0 FROM pragma_table_info('_ferry_rows') WHERE name = 'seen'", [], |r| {
            r.get(0)
        })?;
    if !has_seen {
        conn.execute_batch("ALTER TABLE _ferry_rows ADD COLUMN seen TEXT")?;
    }
    Ok(())
}

/// `_ferry_rows`, the clocks of every synced row. `seq`, `owner` and `origin` are used by
/// the server store (feed position, owning user, last writing device), `pending` by the
/// device replica (the outbox position of the last local change not yet acknowledged; `base`:
/// for each column changed locally since, the clock of the value it replaced, which tells
/// the server whether the change saw the server's latest write; `seen`: the clocks of every
/// register of the version the first of those changes started from).
pub const ROWS_DDL: &str = "CREATE TABLE IF NOT EXISTS _ferry_rows (
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    alive INTEGER NOT NULL,
    alive_at TEXT NOT NULL,
    clock TEXT NOT NULL,
    clocks TEXT,
    dead TEXT,
    seq INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    origin TEXT,
    pending INTEGER NOT NULL DEFAULT 0,
    base TEXT,
    seen TEXT,
    PRIMARY KEY (tbl, pk)
) WITHOUT ROWID";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt bookkeeping for {table} '{key}': {detail}")]
    Corrupt { table: String, key: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Binds a [`Value`] as an SQLite parameter.
pub struct Param<'a>(pub &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// Reads an SQLite value as a [`Value`]; invalid UTF-8 text is kept as a blob.
pub fn value_from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::Blob(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// The SQL for one application table, built once from the schema.
#[derive(Clone, Debug)]
pub struct TableSql {
    pub table: Table,
    select: String,
    upsert: String,
    delete: String,
    feed: String,
    stored: String,
}

impl TableSql {
    pub fn new(table: &Table) -> TableSql {
        let name = quote(&table.name);
        let pk = quote(&table.pk_column().name);
        let data: Vec<String> = table.data_columns().map(|c| quote(&c.name)).collect();
        let select = if data.is_empty() {
            format!("SELECT 1 FROM {name} WHERE {pk} = ?1")
        } else {
            format!("SELECT {} FROM {name} WHERE {pk} = ?1", data.join(", "))
        };
        let all: Vec<&str> = std::iter::once(pk.as_str()).chain(data.iter().map(String::as_str)).collect();
        let marks: Vec<String> = (1..=all.len()).map(|i| format!("?{i}")).collect();
        let on_conflict = if data.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            let sets: Vec<String> = data.iter().map(|c| format!("{c} = excluded.{c}")).collect();
            format!("DO UPDATE SET {}", sets.join(", "))
        };
        let upsert = format!(
            "INSERT INTO {name} ({}) VALUES ({}) ON CONFLICT({pk}) {on_conflict}",
            all.join(", "),
            marks.join(", ")
        );
        let delete = format!("DELETE FROM {name} WHERE {pk} = ?1");
        let values: String = data.iter().map(|c| format!(", t.{c}")).collect();
        let meta: Vec<String> = META_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect();
        // `+r.tbl`: read through the feed index (seq), not the (tbl, pk) key, which walks
        // every row of the table for each page.
        let feed = format!(
            "SELECT r.pk, {}, t.rowid{values} FROM _ferry_rows r LEFT JOIN {name} t ON r.alive AND t.{pk} = r.pk
             WHERE +r.tbl = ?1 AND r.seq > ?2 AND r.seq <= ?3 AND (?4 IS NULL OR r.owner IS NULL OR r.owner = ?4)",
            meta.join(", ")
        );
        // Every key of a JSON array, with what is stored of it: bookkeeping (NULLs when
        // never seen), the client's change record, and the application row (NULLs when absent).
        let stored = format!(
            "SELECT k.value, {}, r.base, r.seen, t.rowid{values} FROM json_each(?1) k
             LEFT JOIN _ferry_rows r ON r.tbl = ?2 AND r.pk = k.value LEFT JOIN {name} t ON t.{pk} = k.value",
            meta.join(", ")
        );
        TableSql { table: table.clone(), select, upsert, delete, feed, stored }
    }

    /// The values of the data columns (schema order, key excluded), or `None` if no row has `pk`.
    pub fn read(&self, conn: &Connection, pk: &str) -> Result<Option<Vec<Value>>> {
        let n = self.table.columns.len() - 1;
        let mut stmt = conn.prepare_cached(&self.select)?;
        let row = stmt
            .query_row([pk], |r| (0..n).map(|i| r.get_ref(i).map(value_from_sql)).collect::<rusqlite::Result<Vec<_>>>())
            .optional()?;
        Ok(row)
    }

    /// Inserts or replaces the row `pk` with the values of `state` (absent columns as NULL),
    /// bound where they are, without copying them into a row first.
    pub fn write(&self, conn: &Connection, pk: &str, state: &RowState) -> Result<()> {
        static NULL: Value = Value::Null;
        let mut stmt = conn.prepare_cached(&self.upsert)?;
        stmt.raw_bind_parameter(1, pk)?;
        for (i, c) in self.table.data_columns().enumerate() {
            stmt.raw_bind_parameter(i + 2, Param(state.cols.get(&c.name).map_or(&NULL, |s| &s.value)))?;
        }
        stmt.raw_execute()?;
        Ok(())
    }

    pub fn delete(&self, conn: &Connection, pk: &str) -> Result<()> {
        conn.prepare_cached(&self.delete)?.execute([pk])?;
        Ok(())
    }

    /// The state's values for the data columns in schema order (absent columns read as NULL).
    pub fn values_of(&self, state: &RowState) -> Vec<Value> {
        values_of(&self.table, state)
    }
}

/// The state's values for the data columns in schema order (absent columns read as NULL).
pub fn values_of(table: &Table, state: &RowState) -> Vec<Value> {
    table.data_columns().map(|c| state.cols.get(&c.name).map(|s| s.value.clone()).unwrap_or(Value::Null)).collect()
}

/// The bookkeeping of one row as stored in `_ferry_rows`.
#[derive(Clone, Debug)]
pub struct Meta {
    pub alive: bool,
    pub alive_at: Hlc,
    pub clock: Hlc,
    pub clocks: BTreeMap<String, Hlc>,
    pub dead: Option<BTreeMap<String, Value>>,
    pub seq: i64,
    pub owner: Option<String>,
    pub pending: i64,
}

/// Extra bookkeeping written beside the clocks.
#[derive(Clone, Debug, Default)]
pub struct Extra<'a> {
    pub seq: i64,
    pub owner: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub pending: i64,
    /// A client's change record, written in the same statement: the base clocks (JSON,
    /// replacing the stored ones) and the version first changed (JSON, kept when `None`).
    pub change: Option<(Option<&'a str>, Option<&'a str>)>,
}

fn corrupt(table: &str, key: &str, detail: impl ToString) -> Error {
    Error::Corrupt { table: table.to_owned(), key: key.to_owned(), detail: detail.to_string() }
}

const META_COLUMNS: &str = "alive, alive_at, clock, clocks, dead, seq, owner, pending";

/// The stored bookkeeping of one row as read: alive, alive_at, clock, clocks, dead, seq, owner, pending.
pub type RawMeta = (bool, String, String, Option<String>, Option<String>, i64, Option<String>, i64);

/// Reads the eight [`META_COLUMNS`] starting at column `at` of `r`.
fn raw_meta(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<RawMeta> {
    Ok((
        r.get(at)?,
        r.get(at + 1)?,
        r.get(at + 2)?,
        r.get(at + 3)?,
        r.get(at + 4)?,
        r.get(at + 5)?,
        r.get(at + 6)?,
        r.get(at + 7)?,
    ))
}

/// Parses stored bookkeeping (the same form in every store).
pub fn parse_meta(table: &Table, pk: &str, raw: RawMeta) -> Result<Meta> {
    let (alive, alive_at, clock, clocks, dead, seq, owner, pending) = raw;
    let t = &table.name;
    let hlc = |s: &str| s.parse::<Hlc>().map_err(|e| corrupt(t, pk, e));
    let clocks = match clocks {
        None => BTreeMap::new(),
        Some(json) => {
            let map: BTreeMap<String, String> = serde_json::from_str(&json).map_err(|e| corrupt(t, pk, e))?;
            map.into_iter().map(|(c, h)| Ok((c, hlc(&h)?))).collect::<Result<_>>()?
        }
    };
    let dead = dead.map(|json| decode_values(table, &json)).transpose().map_err(|e| corrupt(t, pk, e))?;
    Ok(Meta { alive, alive_at: hlc(&alive_at)?, clock: hlc(&clock)?, clocks, dead, seq, owner, pending })
}

/// Reads the bookkeeping of `pk` in `ts`'s table.
pub fn load_meta(conn: &Connection, ts: &TableSql, pk: &str) -> Result<Option<Meta>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {META_COLUMNS} FROM _ferry_rows WHERE tbl = ?1 AND pk = ?2"))?;
    match stmt.query_row(params![ts.table.name, pk], |r| raw_meta(r, 0)).optional()? {
        Some(raw) => Ok(Some(parse_meta(&ts.table, pk, raw)?)),
        None => Ok(None),
    }
}

/// The feed entries of `ts`'s table with `after < seq <= upto`, with their whole states, in
/// one joined query (a pull page reads many rows; per-row lookups would dominate). With
/// `owner`, only rows of that owner and rows without one.
pub fn feed_states(
    conn: &Connection,
    ts: &TableSql,
    after: i64,
    upto: i64,
    owner: Option<&str>,
) -> Result<Vec<(i64, String, RowState)>> {
    let mut stmt = conn.prepare_cached(&ts.feed)?;
    let mut rows = stmt.query(params![ts.table.name, after, upto, owner])?;
    let n = ts.table.columns.len() - 1;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let pk: String = r.get(0)?;
        let meta = parse_meta(&ts.table, &pk, raw_meta(r, 1)?)?;
        let values = row_values(r, 9, n)?;
        let state = state_of(&ts.table, &meta, values);
        out.push((meta.seq, pk, state));
    }
    Ok(out)
}

/// The `n` data columns of a joined application row whose rowid is column `at` and whose
/// values follow it; `None` when the join found no row.
fn row_values(r: &rusqlite::Row<'_>, at: usize, n: usize) -> rusqlite::Result<Option<Vec<Value>>> {
    if r.get::<_, Option<i64>>(at)?.is_none() {
        return Ok(None);
    }
    (1..=n).map(|i| r.get_ref(at + i).map(value_from_sql)).collect::<rusqlite::Result<Vec<_>>>().map(Some)
}

/// What is stored of one key (see [`stored`]).
#[derive(Debug)]
pub struct Stored {
    pub key: String,
    /// The bookkeeping, `None` if the key was never seen.
    pub meta: Option<Meta>,
    /// The application row's data columns in schema order, `None` if it has no row.
    pub values: Option<Vec<Value>>,
    /// The client's change record as stored: base clocks and the version first changed.
    pub base: Option<String>,
    pub seen: Option<String>,
}

/// What is stored of each of `keys` (distinct) in `ts`'s table, in their order, in one
/// joined query instead of several lookups per key.
pub fn stored(conn: &Connection, ts: &TableSql, keys: &[&str]) -> Result<Vec<Stored>> {
    let keys_json = serde_json::to_string(keys).expect("keys serialize");
    let mut stmt = conn.prepare_cached(&ts.stored)?;
    let mut rows = stmt.query(params![keys_json, ts.table.name])?;
    let n = ts.table.columns.len() - 1;
    let mut out = Vec::with_capacity(keys.len());
    // Columns: the key (0), the eight META_COLUMNS (1–8), base (9), seen (10), the
    // application row's rowid (11), its data columns (12…).
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        let known: Option<String> = r.get(2)?;
        let meta = match known {
            Some(_) => Some(parse_meta(&ts.table, &key, raw_meta(r, 1)?)?),
            None => None,
        };
        let values = row_values(r, 11, n)?;
        out.push(Stored { key, meta, values, base: r.get(9)?, seen: r.get(10)? });
    }
    Ok(out)
}

/// Builds the row's state from its bookkeeping and its values (`values` are the data
/// columns in schema order when the row exists in the application table).
pub fn state_of(table: &Table, meta: &Meta, values: Option<Vec<Value>>) -> RowState {
    let mut cols = BTreeMap::new();
    let mut values = values.map(|v| v.into_iter());
    for col in table.data_columns() {
        let at = meta.clocks.get(&col.name).copied().unwrap_or(meta.clock);
        let value = match (&mut values, &meta.dead) {
            (Some(vs), _) => vs.next().unwrap_or(Value::Null),
            (None, Some(dead)) => dead.get(&col.name).cloned().unwrap_or(Value::Null),
            (None, None) => Value::Null,
        };
        if at != Hlc::ZERO {
            cols.insert(col.name.clone(), Stamped::new(value, at));
        }
    }
    RowState { exists: Stamped::new(meta.alive, meta.alive_at), cols }
}

/// The digest of the version `meta` records ([`ferry_core::digest::row_digest`]): the same
/// for the same state in every store and replica.
pub fn meta_digest(table: &Table, pk: &str, meta: &Meta) -> u64 {
    let cols = table
        .data_columns()
        .map(|c| (c.name.as_str(), meta.clocks.get(&c.name).copied().unwrap_or(meta.clock)))
        .filter(|(_, at)| *at != Hlc::ZERO);
    ferry_core::digest::row_digest(pk, meta.alive, meta.alive_at, cols)
}

/// Every row of `ts`'s table as a digest entry, tombstones decided before `tombstones_from`
/// (a clock's text) left out: what an integrity check compares.
pub fn digests(conn: &Connection, ts: &TableSql, tombstones_from: &str) -> Result<Vec<ferry_core::digest::Entry>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT pk, {META_COLUMNS} FROM _ferry_rows WHERE tbl = ?1 AND (alive OR alive_at >= ?2)"
    ))?;
    let mut rows = stmt.query(params![ts.table.name, tombstones_from])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let pk: String = r.get(0)?;
        let meta = parse_meta(&ts.table, &pk, raw_meta(r, 1)?)?;
        let digest = meta_digest(&ts.table, &pk, &meta);
        out.push(ferry_core::digest::Entry::new(pk, digest, !meta.alive));
    }
    Ok(out)
}

/// Loads the whole state of `pk`: bookkeeping plus values, or `None` if never seen.
pub fn load_state(conn: &Connection, ts: &TableSql, pk: &str) -> Result<Option<(RowState, Meta)>> {
    let Some(meta) = load_meta(conn, ts, pk)? else {
        return Ok(None);
    };
    let values = if meta.alive { ts.read(conn, pk)? } else { None };
    Ok(Some((state_of(&ts.table, &meta, values), meta)))
}

/// Writes `state` for `pk`: the application row (upsert, or delete when the row is dead)
/// and its bookkeeping.
pub fn store_state(conn: &Connection, ts: &TableSql, pk: &str, state: &RowState, extra: &Extra<'_>) -> Result<()> {
    let dead = if state.is_alive() {
        ts.write(conn, pk, state)?;
        None
    } else {
        ts.delete(conn, pk)?;
        Some(encode_values(&ts.table, &ts.values_of(state)))
    };
    write_meta(conn, ts, pk, state, dead.as_deref(), extra)
}

/// Writes only the bookkeeping of `pk` (the caller keeps the application row in step).
pub fn write_meta(
    conn: &Connection,
    ts: &TableSql,
    pk: &str,
    state: &RowState,
    dead: Option<&str>,
    extra: &Extra<'_>,
) -> Result<()> {
    let (clock, clocks) = encode_clocks(&ts.table, state);
    let (mut alive_at, mut clock_text) = ([0u8; 32], [0u8; 32]);
    let (alive_at, clock) = (state.exists.at.encode(&mut alive_at), clock.encode(&mut clock_text));
    // `?14` says whether a change record comes along: then `base` is replaced; otherwise
    // what is stored stays (`seen` only ever changes to a given value).
    let (change, base, seen) = extra.change.map_or((false, None, None), |(b, s)| (true, b, s));
    conn.prepare_cached(
        "INSERT INTO _ferry_rows (tbl, pk, alive, alive_at, clock, clocks, dead, seq, owner, origin, pending, base, seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (tbl, pk) DO UPDATE SET alive = excluded.alive, alive_at = excluded.alive_at,
           clock = excluded.clock, clocks = excluded.clocks, dead = excluded.dead, seq = excluded.seq,
           owner = excluded.owner, origin = excluded.origin, pending = excluded.pending,
           base = CASE WHEN ?14 THEN excluded.base ELSE _ferry_rows.base END,
           seen = coalesce(excluded.seen, _ferry_rows.seen)",
    )?
    .execute(params![
        ts.table.name,
        pk,
        state.is_alive(),
        alive_at,
        clock,
        clocks,
        dead,
        extra.seq,
        extra.owner,
        extra.origin,
        extra.pending,
        base,
        seen,
        change,
    ])?;
    Ok(())
}

/// The base clock (the one most columns share) and a JSON object of the exceptions.
/// Columns the state lacks are stored with the zero clock, which reads back as absent.
pub fn encode_clocks(table: &Table, state: &RowState) -> (Hlc, Option<String>) {
    let base = state.common_clock();
    let at = |name: &str| state.cols.get(name).map_or(Hlc::ZERO, |s| s.at);
    let exceptions: BTreeMap<&str, String> = table
        .data_columns()
        .filter(|c| at(&c.name) != base)
        .map(|c| (c.name.as_str(), at(&c.name).to_string()))
        .collect();
    let json = (!exceptions.is_empty()).then(|| serde_json::to_string(&exceptions).expect("string map"));
    (base, json)
}

/// Tombstone values as JSON, in the stored form capture triggers also write (blobs as hex,
/// reals as text): the codec every crate shares, in `ferry_protocol::codec`.
pub use ferry_protocol::codec::{decode_values, encode_values};

/// Opens (or creates) an SQLite file with the settings every Ferry file uses: WAL, a busy
/// timeout so that other processes writing the same file wait instead of failing.
pub fn open(path: &std::path::Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Creates `table` in `conn` if it is missing; if it exists, checks it against the schema
/// and adds missing nullable columns (the additive changes that need no resync).
///
/// # Errors
/// A message naming each difference that cannot be fixed by adding a column.
pub fn ensure_table(conn: &Connection, table: &Table) -> std::result::Result<Vec<String>, String> {
    let mut stmt = conn.prepare("SELECT name, type, pk FROM pragma_table_info(?1)").map_err(|e| e.to_string())?;
    let existing: Vec<(String, String, i64)> = stmt
        .query_map([&table.name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    if existing.is_empty() {
        conn.execute_batch(&ddl::create_table(table)).map_err(|e| format!("creating table '{}': {e}", table.name))?;
        return Ok(vec![format!("created table '{}'", table.name)]);
    }
    let mut problems = Vec::new();
    let mut added = Vec::new();
    for col in &table.columns {
        match existing.iter().find(|(n, ..)| n == &col.name) {
            Some((_, ty, _)) if !ty.eq_ignore_ascii_case(ddl::column_type(col.ty)) => problems.push(format!(
                "column '{}' is {ty} in the file but {} ({}) in the schema",
                col.name,
                ddl::column_type(col.ty),
                col.ty.name()
            )),
            Some((_, _, pk)) if (*pk > 0) != (col.name == table.pk_column().name) => {
                problems.push(format!("column '{}' differs in being the primary key", col.name))
            }
            Some(_) => {}
            None if col.not_null && col.default.is_none() => problems.push(format!(
                "column '{}' is missing and NOT NULL without a default, so it cannot be added in place",
                col.name
            )),
            None => added.push(col),
        }
    }
    for (name, ..) in &existing {
        if table.column(name).is_none() {
            problems.push(format!("column '{name}' is in the file but not in the schema"));
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "table '{}' does not match the schema: {}; migrate the table or fix the schema",
            table.name,
            problems.join("; ")
        ));
    }
    let mut done = Vec::new();
    for col in added {
        let i = table.column_index(&col.name).expect("column of the table");
        conn.execute_batch(&format!("ALTER TABLE {} ADD COLUMN {}", quote(&table.name), ddl::column_def(table, i)))
            .map_err(|e| format!("adding column '{}' to '{}': {e}", col.name, table.name))?;
        done.push(format!("added column '{}' to '{}'", col.name, table.name));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::SiteId;
    use ferry_core::schema::Schema;

    fn setup() -> (Connection, TableSql) {
        let schema = Schema::parse(
            "CREATE TABLE notes (id uuid PRIMARY KEY, body text, n integer, r real, b bytea);",
            &BTreeMap::new(),
        )
        .unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(ROWS_DDL).unwrap();
        let t = &schema.tables[0];
        conn.execute_batch(&ddl::create_table(t)).unwrap();
        (conn, TableSql::new(t))
    }

    #[test]
    fn states_round_trip_through_the_file_alive_and_dead() {
        let (conn, ts) = setup();
        let at = |ms| Hlc::new(ms, 0, SiteId(9));
        let mut state = RowState::inserted(
            [
                ("body".to_owned(), Value::Text("hi".into())),
                ("n".to_owned(), Value::Integer(3)),
                ("r".to_owned(), Value::Real(1.0)),
                ("b".to_owned(), Value::Blob(vec![0, 255])),
            ],
            at(1),
        );
        state.update([("n".to_owned(), Value::Integer(4))], at(2));
        store_state(&conn, &ts, "k", &state, &Extra::default()).unwrap();
        let (loaded, _) = load_state(&conn, &ts, "k").unwrap().unwrap();
        assert_eq!(loaded, state);

        state.delete(at(3));
        store_state(&conn, &ts, "k", &state, &Extra::default()).unwrap();
        assert!(ts.read(&conn, "k").unwrap().is_none(), "a dead row leaves the application table");
        let (loaded, _) = load_state(&conn, &ts, "k").unwrap().unwrap();
        assert_eq!(loaded, state, "the tombstone keeps values and clocks");
    }
}

//! The replica: an application's SQLite file plus Ferry's bookkeeping in it.
//!
//! Every method that changes bookkeeping is one transaction, and never spans a network
//! call: the outbox is stamped, a pushed batch acknowledged, a pulled page applied together
//! with its cursor, each atomically. A process killed at any instruction leaves a file
//! from which the next sync simply continues.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ferry_core::schema::Schema;
use ferry_core::{Clock, Hlc, RowState, SiteId, Stamped, Value};
use ferry_protocol::SchemaResponse;
use ferry_sqlite::{Extra, Meta, TableSql};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::capture;
use crate::error::{Error, Result};

/// A replica file opened for syncing.
pub struct Replica {
    conn: Connection,
    schema: Option<Schema>,
    tables: HashMap<String, TableSql>,
}

/// One row ready to push: its table, key, whole state, and the stamp it was read at.
#[derive(Clone, Debug)]
pub struct PendingRow {
    pub table: String,
    pub key: String,
    pub state: RowState,
    pub stamp: i64,
    /// For each column changed locally since the last acknowledgement, the clock of the
    /// value it replaced.
    pub base: BTreeMap<String, Hlc>,
}

/// A pulled row to merge in.
#[derive(Clone, Debug)]
pub struct PulledRow {
    pub table: String,
    pub key: String,
    pub state: RowState,
}

/// What applying a pulled page did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub received: usize,
    pub changed: usize,
    pub conflicts: usize,
}

/// What `ferry status` shows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    /// Rows with local changes the server has not acknowledged.
    pub pending: u64,
    /// Captured writes not yet given clocks (for example, made by another process).
    pub unstamped: u64,
    pub last_sync: Option<String>,
    pub cursor: String,
    pub conflicts: u64,
    /// Captured writes set aside because they cannot be synced (see `_ferry_rejected`).
    pub rejected: u64,
    pub user_id: Option<String>,
    pub server: Option<String>,
    pub store_id: Option<String>,
    pub site_id: String,
    pub schema_version: Option<String>,
    pub tables: Vec<String>,
}

/// Outbox entries stamped per transaction by [`Replica::stamp`].
pub const STAMP_CHUNK: i64 = 2000;

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn get_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM _ferry_meta WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO _ferry_meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

/// The base clocks recorded for a row's unacknowledged local changes.
fn read_base(conn: &Connection, table: &str, pk: &str) -> Result<BTreeMap<String, Hlc>> {
    let json: Option<String> = conn
        .prepare_cached("SELECT base FROM _ferry_rows WHERE tbl = ?1 AND pk = ?2")?
        .query_row([table, pk], |r| r.get(0))
        .optional()?
        .flatten();
    let Some(json) = json else { return Ok(BTreeMap::new()) };
    let map: BTreeMap<String, String> =
        serde_json::from_str(&json).map_err(|e| Error::Local(format!("stored base clocks of {table} '{pk}': {e}")))?;
    map.into_iter()
        .map(|(c, h)| Ok((c, h.parse().map_err(|e| Error::Local(format!("stored base clock: {e}")))?)))
        .collect()
}

fn write_base(conn: &Connection, table: &str, pk: &str, base: &BTreeMap<String, Hlc>) -> Result<()> {
    let json = (!base.is_empty())
        .then(|| serde_json::to_string(&base.iter().map(|(c, h)| (c, h.to_string())).collect::<BTreeMap<_, _>>()))
        .transpose()
        .map_err(|e| Error::Local(e.to_string()))?;
    conn.prepare_cached("UPDATE _ferry_rows SET base = ?3 WHERE tbl = ?1 AND pk = ?2")?
        .execute(params![table, pk, json])?;
    Ok(())
}

fn json_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => serde_json::Number::from_f64(*r).map_or("null".into(), |n| n.to_string()),
        Value::Text(s) => serde_json::Value::String(s.clone()).to_string(),
        Value::Blob(b) => format!("\"{}\"", ferry_core::to_hex(b)),
    }
}

impl Replica {
    /// Opens (creating if needed) the replica file at `path` and Ferry's bookkeeping in it.
    ///
    /// # Errors
    /// When the file cannot be opened or is not an SQLite database.
    pub fn open(path: &Path) -> Result<Replica> {
        let conn =
            ferry_sqlite::open(path).map_err(|e| Error::Local(format!("cannot open '{}': {e}", path.display())))?;
        ferry_sqlite::ensure_rows_table(&conn)?;
        conn.execute_batch(capture::BOOKKEEPING)?;
        if get_meta(&conn, "site")?.is_none() {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| Error::Local(format!("no randomness: {e}")))?;
            let site = SiteId::from_bytes(b);
            set_meta(&conn, "site", &site.to_string())?;
        }
        let mut replica = Replica { conn, schema: None, tables: HashMap::new() };
        if let Some(json) = get_meta(&replica.conn, "schema")? {
            let resp: SchemaResponse =
                serde_json::from_str(&json).map_err(|e| Error::Local(format!("stored schema is unreadable: {e}")))?;
            replica.set_schema(resp.to_schema().map_err(|e| Error::Local(format!("stored schema: {e}")))?);
        }
        Ok(replica)
    }

    fn set_schema(&mut self, schema: Schema) {
        self.tables = schema.tables.iter().map(|t| (t.name.clone(), TableSql::new(t))).collect();
        self.schema = Some(schema);
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn schema(&self) -> Option<&Schema> {
        self.schema.as_ref()
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(get_meta(&self.conn, key)?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        Ok(set_meta(&self.conn, key, value)?)
    }

    fn clock(tx: &Connection) -> Result<Clock> {
        let site: SiteId = get_meta(tx, "site")?
            .ok_or_else(|| Error::Local("replica has no site id".into()))?
            .parse()
            .map_err(|e| Error::Local(format!("stored site id: {e}")))?;
        let last = match get_meta(tx, "clock")? {
            Some(s) => s.parse().map_err(|e| Error::Local(format!("stored clock: {e}")))?,
            None => Hlc::ZERO,
        };
        Ok(Clock::new(site, last))
    }

    /// Creates or migrates the synced tables to the server's schema and (re)installs the
    /// capture triggers. Rows written under the old triggers are stamped first.
    ///
    /// Also repairs capture that went missing while the schema stayed the same (rebuilding a
    /// table the usual SQLite way drops its triggers), and adopts rows Ferry has never
    /// tracked (a table that existed with data before the first sync, or rows written while
    /// the triggers were missing): they are recorded as inserts and so get synced.
    ///
    /// # Errors
    /// When a local table differs from the schema in a way that needs more than adding a
    /// nullable column; the message names both schema versions and each difference.
    pub fn install_schema(&mut self, resp: &SchemaResponse) -> Result<Vec<String>> {
        let stored = get_meta(&self.conn, "schema_version")?;
        let same_version = stored.as_deref() == Some(resp.version.as_str());
        if same_version && self.capture_is_intact()? {
            return Ok(Vec::new());
        }
        let schema = resp.to_schema().map_err(|e| Error::Schema(format!("the server's schema: {e}")))?;
        self.stamp()?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut done = Vec::new();
        if let Some(old) = &self.schema {
            for t in &old.tables {
                tx.execute_batch(&capture::drop_triggers(&t.name))?;
            }
        }
        for table in &schema.tables {
            let changes = ferry_sqlite::ensure_table(&tx, table).map_err(|e| {
                Error::Schema(format!(
                    "{e} (local schema version {}, server's {})",
                    stored.as_deref().unwrap_or("none"),
                    resp.version
                ))
            })?;
            done.extend(changes);
            tx.execute_batch(&capture::drop_triggers(&table.name))?;
            tx.execute_batch(&capture::triggers(table))?;
            let adopted = tx.execute(&capture::adopt_untracked(table), [])?;
            if adopted > 0 {
                done.push(format!("adopted {adopted} existing rows of '{}'", table.name));
            }
        }
        if same_version {
            done.push("reinstalled missing capture triggers".to_owned());
        }
        let json = serde_json::to_string(resp).expect("schema serializes");
        set_meta(&tx, "schema", &json)?;
        set_meta(&tx, "schema_version", &resp.version)?;
        tx.commit()?;
        self.set_schema(schema);
        Ok(done)
    }

    /// Whether every synced table still has all its capture triggers.
    fn capture_is_intact(&self) -> Result<bool> {
        let Some(schema) = &self.schema else { return Ok(false) };
        let mut stmt =
            self.conn.prepare_cached("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1")?;
        for table in &schema.tables {
            let present: Vec<String> = stmt.query_map([&table.name], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            if capture::trigger_names(table).iter().any(|n| !present.contains(n)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Assigns clocks to the captured changes in the outbox, in transactions of at most
    /// [`STAMP_CHUNK`] entries each: a process killed while stamping a large outbox keeps
    /// what it finished and the next run continues from there. Returns how many outbox
    /// entries were stamped.
    ///
    /// Also looks for rows deleted without capture: `INSERT OR REPLACE` through a unique
    /// index of the application's removes the other row without firing a delete trigger.
    /// Only tables with such an index are scanned.
    pub fn stamp(&mut self) -> Result<usize> {
        let mut n = 0;
        loop {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let done = Self::stamp_in(&tx, &self.tables, STAMP_CHUNK)?;
            tx.commit()?;
            n += done;
            if done < STAMP_CHUNK as usize {
                break;
            }
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut clock = Self::clock(&tx)?;
        for ts in self.tables.values() {
            let extra_unique: i64 = tx.query_row(
                "SELECT count(*) FROM pragma_index_list(?1) WHERE \"unique\" AND origin <> 'pk'",
                [&ts.table.name],
                |r| r.get(0),
            )?;
            if extra_unique == 0 {
                continue;
            }
            let missing: Vec<String> = tx
                .prepare(&capture::alive_but_missing(&ts.table))?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for pk in missing {
                Self::load_local(&tx, ts, &pk, &mut clock)?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// A fresh pending mark: greater than every mark handed out before, so acknowledging a
    /// push (which clears only the mark it read) never clears a later change.
    fn next_stamp(tx: &Connection) -> Result<i64> {
        let stamp = get_meta(tx, "stamp")?.and_then(|s| s.parse::<i64>().ok()).unwrap_or(0) + 1;
        set_meta(tx, "stamp", &stamp.to_string())?;
        Ok(stamp)
    }

    /// Loads a row's local state. A row the bookkeeping holds as alive but that is missing
    /// from the application table was deleted without capture (for example by `INSERT OR
    /// REPLACE` through a unique index of the application's, which fires no delete trigger):
    /// that delete is recorded now, as a local change. Its column values are gone, so the
    /// tombstone carries none; other replicas keep theirs.
    fn load_local(tx: &Connection, ts: &TableSql, pk: &str, clock: &mut Clock) -> Result<Option<(RowState, Meta)>> {
        let Some(mut meta) = ferry_sqlite::load_meta(tx, ts, pk)? else { return Ok(None) };
        if !meta.alive {
            return Ok(Some((ferry_sqlite::state_of(&ts.table, &meta, None), meta)));
        }
        if let Some(values) = ts.read(tx, pk)? {
            return Ok(Some((ferry_sqlite::state_of(&ts.table, &meta, Some(values)), meta)));
        }
        let mut state = RowState { exists: Stamped::new(true, meta.alive_at), cols: BTreeMap::new() };
        state.delete(clock.tick(wall_ms()));
        meta.pending = Self::next_stamp(tx)?;
        meta.alive = false;
        let extra = Extra { pending: meta.pending, ..Extra::default() };
        ferry_sqlite::write_meta(tx, ts, pk, &state, Some("{}"), &extra)?;
        set_meta(tx, "clock", &clock.last().to_string())?;
        Ok(Some((state, meta)))
    }

    /// Stamps inside the caller's transaction. Each entry gets a fresh clock in outbox
    /// order; each touched row's bookkeeping is updated once, with the row's current values
    /// (or, if the row is gone, the last values its delete recorded), and marked pending.
    fn stamp_in(tx: &Transaction<'_>, tables: &HashMap<String, TableSql>, limit: i64) -> Result<usize> {
        // A key that is not text (a blob or number written into the key column by another
        // program) cannot name a row on other replicas: such entries are set aside in
        // `_ferry_rejected` with the reason, and the rest of the outbox moves on.
        tx.execute(
            "INSERT INTO _ferry_rejected (tbl, pk, op, reason)
             SELECT tbl, quote(pk), op, 'the primary key is ' || typeof(pk) || ', not text (a uuid)'
             FROM _ferry_outbox WHERE typeof(pk) <> 'text'",
            [],
        )?;
        tx.execute("DELETE FROM _ferry_outbox WHERE typeof(pk) <> 'text'", [])?;
        let entries: Vec<(i64, String, String, String, Option<String>, Option<String>, i64)> = tx
            .prepare_cached("SELECT rowid, tbl, pk, op, cols, old, wall_ms FROM _ferry_outbox ORDER BY rowid LIMIT ?1")?
            .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last_rowid) = entries.last().map(|e| e.0) else {
            return Ok(0);
        };
        let mut clock = Self::clock(tx)?;
        let stamp = Self::next_stamp(tx)?;
        // A wall time captured while the device's clock ran ahead must not push this
        // replica's clock into the future for good: never stamp later than now.
        let now = wall_ms();
        // Group by row, keeping the first-seen order, with each entry's clock.
        let mut order: Vec<(String, String)> = Vec::new();
        let mut ops: HashMap<(String, String), Vec<(String, Option<String>, Option<String>, Hlc)>> = HashMap::new();
        for (_, tbl, pk, op, cols, old, wall) in &entries {
            let at = clock.tick(((*wall).max(0) as u64).min(now));
            let k = (tbl.clone(), pk.clone());
            if !ops.contains_key(&k) {
                order.push(k.clone());
            }
            ops.entry(k).or_default().push((op.clone(), cols.clone(), old.clone(), at));
        }
        for key in order {
            let Some(ts) = tables.get(&key.0) else {
                continue;
            };
            let row_ops = &ops[&key];
            let pk = key.1.as_str();
            let mut state = match ferry_sqlite::load_meta(tx, ts, pk)? {
                Some(meta) => ferry_sqlite::state_of(&ts.table, &meta, None),
                None => RowState::unknown(),
            };
            let known = state.exists.at != Hlc::ZERO;
            let current = ts.read(tx, pk)?;
            let last_values: BTreeMap<String, Value> = match &current {
                Some(vals) => ts.table.data_columns().map(|c| c.name.clone()).zip(vals.iter().cloned()).collect(),
                None => match row_ops.iter().rev().find_map(|o| o.2.as_ref()) {
                    Some(json) => ferry_sqlite::decode_values(&ts.table, json)
                        .map_err(|e| Error::Local(format!("outbox entry for {} '{pk}': {e}", ts.table.name)))?,
                    None => state.cols.iter().map(|(c, s)| (c.clone(), s.value.clone())).collect(),
                },
            };
            // What the local writer had seen of each column it changed: the clock of the
            // value replaced by the first change not yet acknowledged by the server.
            let mut base = read_base(tx, &ts.table.name, pk)?;
            let mut saw = |state: &RowState, cols: &mut dyn Iterator<Item = &String>| {
                for c in cols {
                    base.entry(c.clone()).or_insert_with(|| state.cols.get(c).map_or(Hlc::ZERO, |s| s.at));
                }
            };
            for (op, cols, _, at) in row_ops {
                match op.as_str() {
                    // An update of a row Ferry never tracked (it predates capture) is its first
                    // appearance: record the whole row, as an insert.
                    "I" | "U" if op == "I" || (!known && state.exists.at == Hlc::ZERO) => {
                        saw(&state, &mut last_values.keys());
                        state.insert(last_values.clone(), *at);
                    }
                    "D" => state.delete(*at),
                    _ => {
                        let names: Vec<String> = cols
                            .as_deref()
                            .map(serde_json::from_str)
                            .transpose()
                            .map_err(|e| Error::Local(format!("outbox entry for {} '{pk}': {e}", ts.table.name)))?
                            .unwrap_or_default();
                        saw(&state, &mut names.iter());
                        let changed = names.into_iter().filter_map(|c| last_values.get(&c).map(|v| (c, v.clone())));
                        state.update(changed, *at);
                    }
                }
            }
            for (col, s) in state.cols.iter_mut() {
                if let Some(v) = last_values.get(col) {
                    s.value = v.clone();
                }
            }
            let dead = (!state.is_alive()).then(|| ferry_sqlite::encode_values(&ts.table, &ts.values_of(&state)));
            let extra = Extra { pending: stamp, ..Extra::default() };
            ferry_sqlite::write_meta(tx, ts, pk, &state, dead.as_deref(), &extra)?;
            write_base(tx, &ts.table.name, pk, &base)?;
        }
        tx.execute("DELETE FROM _ferry_outbox WHERE rowid <= ?1", [last_rowid])?;
        set_meta(tx, "clock", &clock.last().to_string())?;
        Ok(entries.len())
    }

    /// Up to `limit` rows with local changes the server has not acknowledged, oldest first.
    /// Captured writes are stamped first, in the same transaction, so what is read is
    /// exactly what the clocks describe.
    pub fn pending(&mut self, limit: usize) -> Result<Vec<PendingRow>> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::stamp_in(&tx, &self.tables, -1)?;
        let mut clock = Self::clock(&tx)?;
        let keys: Vec<(String, String)> = tx
            .prepare_cached("SELECT tbl, pk FROM _ferry_rows WHERE pending > 0 ORDER BY pending, tbl, pk LIMIT ?1")?
            .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(keys.len());
        for (table, key) in keys {
            let ts = self.tables.get(&table).ok_or_else(|| {
                Error::Schema(format!("pending change for table '{table}', which is not in the schema"))
            })?;
            if let Some((state, meta)) = Self::load_local(&tx, ts, &key, &mut clock)? {
                let base = read_base(&tx, &table, &key)?;
                out.push(PendingRow { table, key, state, stamp: meta.pending, base });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Marks pushed rows as acknowledged, unless they changed again since they were read.
    /// With `cursor = Some((sent, past))` (the server said the batch was all that changed the
    /// feed since `sent`), the pull cursor moves to `past` if it is still `sent`.
    pub fn acknowledge(&mut self, rows: &[PendingRow], cursor: Option<(&str, &str)>) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some((sent, past)) = cursor {
            if get_meta(&tx, "cursor")?.as_deref().unwrap_or("0") == sent {
                set_meta(&tx, "cursor", past)?;
            }
        }
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE _ferry_rows SET pending = 0, base = NULL WHERE tbl = ?1 AND pk = ?2 AND pending = ?3",
            )?;
            for r in rows {
                stmt.execute(params![r.table, r.key, r.stamp])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Merges a pulled page and moves the cursor, in one transaction. Local changes not yet
    /// stamped are stamped first, so the merge sees them.
    pub fn apply(&mut self, rows: &[PulledRow], cursor: &str) -> Result<Applied> {
        let now = wall_ms();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::stamp_in(&tx, &self.tables, -1)?;
        let mut clock = Self::clock(&tx)?;
        let mut fresh_stamp = None;
        tx.execute("INSERT INTO _ferry_apply (busy) VALUES (1)", [])?;
        let mut applied = Applied { received: rows.len(), ..Applied::default() };
        for row in rows {
            let ts = self.tables.get(&row.table).ok_or_else(|| {
                Error::Schema(format!("table '{}' is not in this replica's schema; sync to update it", row.table))
            })?;
            clock
                .observe(row.state.max_clock(), now)
                .map_err(|e| Error::Protocol(format!("{} '{}': {e}", row.table, row.key)))?;
            let Some((mut state, meta)) = Self::load_local(&tx, ts, &row.key, &mut clock)? else {
                ferry_sqlite::store_state(&tx, ts, &row.key, &row.state, &Extra::default())?;
                applied.changed += 1;
                continue;
            };
            let before = state.clone();
            let report = state.merge(&row.state);
            if meta.pending > 0 {
                // A local change not yet pushed lost a column to a newer remote write:
                // keep the local value where a person can see it.
                let mut conflicts = tx.prepare_cached(
                    "INSERT INTO _ferry_conflicts (tbl, pk, col, local_value, local_at, remote_value, remote_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for col in &report.overwritten {
                    let (Some(mine), Some(theirs)) = (before.cols.get(col), state.cols.get(col)) else {
                        continue;
                    };
                    conflicts.execute(params![
                        row.table,
                        row.key,
                        col,
                        json_of(&mine.value),
                        mine.at.to_string(),
                        json_of(&theirs.value),
                        theirs.at.to_string()
                    ])?;
                    applied.conflicts += 1;
                }
            }
            // The local state has something the server's lacks: it must be pushed (again).
            let pending = match (report.kept_newer, meta.pending) {
                (true, 0) => *fresh_stamp.get_or_insert(Self::next_stamp(&tx)?),
                (_, p) => p,
            };
            if report.changed || pending != meta.pending {
                ferry_sqlite::store_state(&tx, ts, &row.key, &state, &Extra { pending, ..Extra::default() })?;
                applied.changed += usize::from(report.changed);
            }
        }
        tx.execute("DELETE FROM _ferry_apply", [])?;
        set_meta(&tx, "clock", &clock.last().to_string())?;
        set_meta(&tx, "cursor", cursor)?;
        tx.commit()?;
        Ok(applied)
    }

    /// Records a finished sync.
    pub fn record_sync(&self) -> Result<()> {
        self.conn.execute(
            "INSERT INTO _ferry_meta (key, value) VALUES ('last_sync', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [],
        )?;
        Ok(())
    }

    pub fn status(&self) -> Result<Status> {
        let count = |sql: &str| -> Result<u64> { Ok(self.conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64) };
        Ok(Status {
            pending: count(
                "SELECT count(*) FROM (SELECT tbl, pk FROM _ferry_rows WHERE pending > 0 UNION SELECT tbl, pk FROM _ferry_outbox)",
            )?,
            unstamped: count("SELECT count(*) FROM _ferry_outbox")?,
            last_sync: self.meta("last_sync")?,
            cursor: self.meta("cursor")?.unwrap_or_else(|| "0".into()),
            conflicts: count("SELECT count(*) FROM _ferry_conflicts")?,
            rejected: count("SELECT count(*) FROM _ferry_rejected")?,
            user_id: self.meta("user_id")?,
            server: self.meta("server")?,
            store_id: self.meta("store_id")?,
            site_id: self.meta("site")?.unwrap_or_default(),
            schema_version: self.meta("schema_version")?,
            tables: self
                .schema
                .as_ref()
                .map(|s| s.table_names().iter().map(|t| t.to_string()).collect())
                .unwrap_or_default(),
        })
    }
}

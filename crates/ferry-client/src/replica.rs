//! The replica: an application's SQLite file plus Ferry's bookkeeping in it.
//!
//! Every method that changes bookkeeping is one transaction, and never spans a network
//! call: the outbox is stamped, a pushed batch acknowledged, a pulled page applied together
//! with its cursor, each atomically. A process killed at any instruction leaves a file
//! from which the next sync simply continues.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use ferry_core::schema::Schema;
use ferry_core::strategy::{EXISTS, Resolver, RowClocks};
use ferry_core::{Clock, Hlc, RowState, SiteId, Stamped, Value};
use ferry_protocol::SchemaResponse;
use ferry_sqlite::{Extra, Meta, TableSql};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::capture;
use crate::error::{Error, Result};

/// A replica file opened for syncing.
pub struct Replica {
    conn: Connection,
    path: std::path::PathBuf,
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
    /// The version the first of those changes started from.
    pub seen: Option<RowClocks>,
}

/// A place in the push queue's order (stamp, table, key); see [`Replica::pending_after`].
#[derive(Clone, Debug)]
pub struct QueuePosition {
    stamp: i64,
    table: String,
    key: String,
}

/// A large outbox being stamped chunk by chunk while a push is out (see
/// [`Replica::start_stamping`]): which rows still have captured writes waiting behind the
/// stamped part. Such a row's pending state is not sent yet (its values are newer than its
/// clocks); once its last write is stamped it comes again, later in the queue.
#[derive(Debug, Default)]
pub struct Stamping {
    /// Outbox entries up to this rowid have been stamped.
    stamped_through: i64,
    /// Outbox entries up to this rowid have been looked at.
    read_through: i64,
    /// The outbox when stamping started: for each row with entries in it (its table and key
    /// hashed), the rowid of its last entry, sorted by hash. 16 bytes an entry.
    first: Vec<(u64, i64)>,
    /// The same for entries captured since.
    later: HashMap<u64, i64>,
}

impl Stamping {
    /// 64 bits: two keys sharing a hash only hold a row back until the next sync.
    fn hash(table: &str, key: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (table, key).hash(&mut h);
        h.finish()
    }

    /// Takes in the outbox entries captured since the last look.
    fn catch_up(&mut self, tx: &Connection) -> Result<()> {
        let starting = self.read_through == 0 && self.first.is_empty();
        let mut read = tx.prepare_cached("SELECT rowid, tbl, CAST(pk AS TEXT) FROM _ferry_outbox WHERE rowid > ?1")?;
        let mut rows = read.query([self.read_through])?;
        while let Some(r) = rows.next()? {
            let (rowid, table, key): (i64, String, Option<String>) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let hash = Self::hash(&table, key.as_deref().unwrap_or(""));
            if starting {
                self.first.push((hash, rowid));
            } else {
                self.later.insert(hash, rowid);
            }
            self.read_through = rowid;
        }
        if starting {
            // Sorted by hash, then rowid: the last of each run is the row's last entry.
            self.first.sort_unstable();
            self.first.reverse();
            self.first.dedup_by_key(|e| e.0);
            self.first.reverse();
            self.first.shrink_to_fit();
        }
        Ok(())
    }

    /// Whether the row has captured writes not stamped yet.
    fn waiting(&self, table: &str, key: &str) -> bool {
        let hash = Self::hash(table, key);
        let first = self.first.binary_search_by_key(&hash, |e| e.0).ok().map(|i| self.first[i].1);
        first.into_iter().chain(self.later.get(&hash).copied()).any(|rowid| rowid > self.stamped_through)
    }
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
    /// Rows that break a rule, set aside (`_ferry_pull_refused`).
    pub set_aside: usize,
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
    /// Local changes the server refused as stale, kept and marked conflicted until settled.
    pub conflicted: u64,
    /// Local changes the server refused as invalid, set aside with its answer
    /// (`ferry queue --db …`); the rest of the queue moved on.
    pub failed: u64,
    /// Rows the server sent that break a rule, set aside (`ferry queue --db …`); the pull
    /// went on without them.
    pub refused_pulls: u64,
    /// The connection state last reported by a running engine (`ferry sync --watch`):
    /// CONNECTED, DEGRADED, DISCONNECTED, RECONNECTING, OFFLINE_ONLY, or STOPPED.
    pub connection: Option<String>,
    /// The file queue: files to upload or download, bytes pending.
    pub files: crate::files::FileQueue,
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

/// A row's change record as stored: its base clocks (`None` when empty) and, when given,
/// the version its first unacknowledged change started from.
///
/// A row inserted here (every data column replacing nothing) stores its base as
/// `{"*":"0"}`: spelled out, the zero clock of every column made each bookkeeping row about
/// 900 bytes until its push was acknowledged, and the rows, shrunk back to ~130 bytes,
/// left `_ferry_rows` seven-eighths empty (976 MB for a million rows).
fn change_json(
    table: &ferry_core::schema::Table,
    base: &BTreeMap<String, Hlc>,
    seen: Option<&RowClocks>,
) -> Result<(Option<String>, Option<String>)> {
    let every_column_new = base.values().all(|h| *h == Hlc::ZERO)
        && base.len() == table.data_columns().count()
        && table.data_columns().all(|c| base.contains_key(&c.name));
    let base = if base.is_empty() {
        None
    } else if every_column_new {
        Some(ALL_NEW.to_owned())
    } else {
        Some(
            serde_json::to_string(&base.iter().map(|(c, h)| (c, h.to_string())).collect::<BTreeMap<_, _>>())
                .map_err(|e| Error::Local(e.to_string()))?,
        )
    };
    Ok((base, seen.map(seen_json).transpose()?))
}

/// The stored base of a row whose every data column is new (see [`change_json`]).
const ALL_NEW: &str = r#"{"*":"0"}"#;

fn parse_base(table: &ferry_core::schema::Table, pk: &str, json: Option<String>) -> Result<BTreeMap<String, Hlc>> {
    let Some(json) = json else { return Ok(BTreeMap::new()) };
    if json == ALL_NEW {
        return Ok(table.data_columns().map(|c| (c.name.clone(), Hlc::ZERO)).collect());
    }
    let map: BTreeMap<String, String> = serde_json::from_str(&json)
        .map_err(|e| Error::Local(format!("stored base clocks of {} '{pk}': {e}", table.name)))?;
    map.into_iter()
        .map(|(c, h)| Ok((c, h.parse().map_err(|e| Error::Local(format!("stored base clock: {e}")))?)))
        .collect()
}

/// The version a row's unacknowledged local changes started from (`None`: no such changes).
fn read_seen(conn: &Connection, table: &str, pk: &str) -> Result<Option<RowClocks>> {
    let seen: Option<String> = conn
        .prepare_cached("SELECT seen FROM _ferry_rows WHERE tbl = ?1 AND pk = ?2")?
        .query_row([table, pk], |r| r.get(0))
        .optional()?
        .flatten();
    seen.map(|j| parse_seen(table, pk, &j)).transpose()
}

fn parse_seen(table: &str, pk: &str, json: &str) -> Result<RowClocks> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(json).map_err(|e| Error::Local(format!("stored seen clocks of {table} '{pk}': {e}")))?;
    let mut out = RowClocks::default();
    for (c, h) in map {
        let h: Hlc = h.parse().map_err(|e| Error::Local(format!("stored seen clock: {e}")))?;
        if c == EXISTS {
            out.exists = h;
        } else {
            out.cols.insert(c, h);
        }
    }
    Ok(out)
}

fn seen_json(seen: &RowClocks) -> Result<String> {
    let mut map: BTreeMap<&str, String> = seen.cols.iter().map(|(c, h)| (c.as_str(), h.to_string())).collect();
    map.insert(EXISTS, seen.exists.to_string());
    serde_json::to_string(&map).map_err(|e| Error::Local(e.to_string()))
}

fn write_seen(conn: &Connection, table: &str, pk: &str, seen: &RowClocks) -> Result<()> {
    conn.prepare_cached("UPDATE _ferry_rows SET seen = ?3 WHERE tbl = ?1 AND pk = ?2")?.execute(params![
        table,
        pk,
        seen_json(seen)?
    ])?;
    Ok(())
}

/// An outbox entry: rowid, table, key, op, changed columns, old values, wall time.
type OutboxEntry = (i64, String, String, String, Option<String>, Option<String>, i64);
/// One captured operation on a row: op, changed columns, old values, its clock.
type RowOp = (String, Option<String>, Option<String>, Hlc);

/// A field a client-side resolver settled (values as JSON text; `*` is the row's existence).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LocalConflict {
    pub id: i64,
    pub table: String,
    pub key: String,
    pub field: String,
    pub local_value: Option<String>,
    pub local_at: String,
    pub remote_value: Option<String>,
    pub remote_at: String,
    /// The resolver (`newest-wins`, `local-wins`, `remote-wins`, `callback`); empty for
    /// entries from before resolvers existed (newest-wins).
    pub resolved_by: Option<String>,
    pub detected_at: String,
    /// `update-update`, `delete-update` (the pulled version deleted a row changed here) or
    /// `update-delete` (the pulled version changed a row deleted here).
    pub kind: String,
    /// Both full versions (wire form, with clocks), when recorded.
    pub local: serde_json::Value,
    pub remote: serde_json::Value,
}

fn version_json(text: Option<String>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::Value::Null)
}

/// A local change the server refused as stale (`reject-stale`): both versions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Refused {
    pub id: i64,
    pub table: String,
    pub key: String,
    /// The server's current version (wire form).
    pub current: serde_json::Value,
    /// The local version, with the unpushed change (wire form).
    pub local: serde_json::Value,
    pub message: String,
    pub refused_at: String,
}

/// A client-side resolver: how a pulled change settles against a local change not yet
/// pushed, for the fields both changed.
#[derive(Clone, Default)]
pub enum ClientResolver {
    /// The later clock wins, field by field (what the server's `lww` does too).
    #[default]
    NewestWins,
    /// The local value wins: it is written again with a fresh clock and pushed.
    LocalWins,
    /// The pulled value wins: the local change to that field is dropped.
    RemoteWins,
    /// The application decides (see [`ferry_core::strategy::Resolver::Callback`]).
    Callback(Arc<ResolveFn>),
}

/// A resolver callback: given both versions and the contested fields, the values to keep,
/// or `None` to delete the row when existence is contested.
pub type ResolveFn = dyn Fn(&ResolveInput<'_>) -> Option<BTreeMap<String, Value>> + Send + Sync;
pub use ferry_core::strategy::ResolveInput;

impl ClientResolver {
    /// The core's form of this resolver, borrowing its callback.
    pub fn as_core(&self) -> Resolver<'_> {
        match self {
            ClientResolver::NewestWins => Resolver::NewestWins,
            ClientResolver::LocalWins => Resolver::LocalWins,
            ClientResolver::RemoteWins => Resolver::RemoteWins,
            ClientResolver::Callback(f) => Resolver::Callback(&**f),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ClientResolver::NewestWins => "newest-wins",
            ClientResolver::LocalWins => "local-wins",
            ClientResolver::RemoteWins => "remote-wins",
            ClientResolver::Callback(_) => "callback",
        }
    }
}

/// The resolver of each table (and the one for the rest).
#[derive(Clone, Default)]
pub struct Resolvers {
    pub default: ClientResolver,
    pub tables: HashMap<String, ClientResolver>,
}

impl std::fmt::Debug for Resolvers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables: BTreeMap<&str, &str> = self.tables.iter().map(|(t, r)| (t.as_str(), r.name())).collect();
        f.debug_struct("Resolvers").field("default", &self.default.name()).field("tables", &tables).finish()
    }
}

impl Resolvers {
    /// Sets `table`'s resolver.
    pub fn table(mut self, table: &str, resolver: ClientResolver) -> Resolvers {
        self.tables.insert(table.to_owned(), resolver);
        self
    }

    pub fn for_table(&self, table: &str) -> &ClientResolver {
        self.tables.get(table).unwrap_or(&self.default)
    }
}

/// A register's value (JSON) and clock, for the replica's conflict view.
fn register_json(state: &RowState, f: &str) -> (Option<String>, String) {
    if f == EXISTS {
        (Some(state.exists.value.to_string()), state.exists.at.to_string())
    } else {
        state.cols.get(f).map_or((None, Hlc::ZERO.to_string()), |s| (Some(json_of(&s.value)), s.at.to_string()))
    }
}

/// A row state as a wire row (JSON), for `_ferry_refused`.
fn state_json_row(table: &ferry_core::schema::Table, key: &str, state: &RowState) -> String {
    serde_json::to_string(&ferry_protocol::encode_row(table, key, state)).expect("wire rows serialize")
}

/// Removes and returns the pulled version held beside a row's unanswered local change.
fn take_held(tx: &Connection, schema: &Schema, table: &str, key: &str) -> Result<Option<RowState>> {
    let held: Option<String> = tx
        .prepare_cached("DELETE FROM _ferry_held WHERE tbl = ?1 AND pk = ?2 RETURNING state")?
        .query_row(params![table, key], |r| r.get(0))
        .optional()?;
    held.map(|j| state_from_json(schema, &j)).transpose()
}

fn state_from_json(schema: &Schema, json: &str) -> Result<RowState> {
    let wire: ferry_protocol::WireRow =
        serde_json::from_str(json).map_err(|e| Error::Local(format!("stored refused row: {e}")))?;
    let (_, state) =
        ferry_protocol::decode_row(schema, &wire).map_err(|e| Error::Local(format!("stored refused row: {e}")))?;
    Ok(state)
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
        let mut conn =
            ferry_sqlite::open(path).map_err(|e| Error::Local(format!("cannot open '{}': {e}", path.display())))?;
        ferry_sqlite::ensure_rows_table(&conn)?;
        conn.execute_batch(capture::BOOKKEEPING)?;
        conn.execute_batch(&capture::outbox_ddl("_ferry_outbox"))?;
        capture::upgrade_outbox(&mut conn)?;
        conn.execute_batch(crate::queue::QUEUE_TABLES)?;
        conn.execute_batch(crate::files::FILE_TABLES)?;
        // Columns added to the replica's bookkeeping since its first release.
        for (table, column) in [
            ("_ferry_conflicts", "resolved_by"),
            ("_ferry_conflicts", "kind"),
            ("_ferry_conflicts", "local"),
            ("_ferry_conflicts", "remote"),
            ("_ferry_pull_refused", "state"),
        ] {
            let has: bool = conn.query_row(
                "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                [table, column],
                |r| r.get(0),
            )?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} TEXT"))?;
            }
        }
        if get_meta(&conn, "site")?.is_none() {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| Error::Local(format!("no randomness: {e}")))?;
            let site = SiteId::from_bytes(b);
            set_meta(&conn, "site", &site.to_string())?;
        }
        let mut replica = Replica { conn, path: path.to_owned(), schema: None, tables: HashMap::new() };
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

    pub(crate) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The replica file's path.
    pub fn path(&self) -> &Path {
        &self.path
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
        let (mut stamping, mut n) = (Stamping::default(), 0);
        loop {
            let (done, more) = self.stamp_chunk(&mut stamping)?;
            n += done;
            if !more {
                return Ok(n);
            }
        }
    }

    /// Starts stamping the outbox as a push goes (instead of all of it before the first
    /// batch): stamps the first [`STAMP_CHUNK`] entries, and when more wait, returns what
    /// [`Replica::pending_while_stamping`] and [`Replica::stamp_next`] need to go on. `None`:
    /// the outbox is stamped (as [`Replica::stamp`] does).
    pub fn start_stamping(&mut self) -> Result<Option<Stamping>> {
        let mut stamping = Stamping::default();
        Ok(self.stamp_next(&mut stamping)?.then_some(stamping))
    }

    /// Stamps the next [`STAMP_CHUNK`] outbox entries; false once the outbox is empty (and
    /// the stamping done, as [`Replica::stamp`] does it).
    pub fn stamp_next(&mut self, stamping: &mut Stamping) -> Result<bool> {
        Ok(self.stamp_chunk(stamping)?.1)
    }

    /// One chunk of [`Replica::stamp`], in its own transaction: how many outbox entries it
    /// took, and whether more may wait (otherwise the stamping is finished).
    fn stamp_chunk(&mut self, stamping: &mut Stamping) -> Result<(usize, bool)> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (done, last) = Self::stamp_in(&tx, &self.tables, STAMP_CHUNK)?;
        tx.commit()?;
        stamping.stamped_through = stamping.stamped_through.max(last.unwrap_or(0));
        if done < STAMP_CHUNK as usize {
            self.find_uncaptured_deletes()?;
            return Ok((done, false));
        }
        Ok((done, true))
    }

    /// Rows deleted without capture, in tables with a unique index besides the key (see
    /// [`Replica::stamp`]), recorded as local deletes.
    fn find_uncaptured_deletes(&mut self) -> Result<()> {
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
        Ok(())
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
    /// Returns how many outbox entries it took (stamped, or set aside as rejected) and the
    /// rowid of the last.
    fn stamp_in(tx: &Transaction<'_>, tables: &HashMap<String, TableSql>, limit: i64) -> Result<(usize, Option<i64>)> {
        // A key that is not text (a blob or number written into the key column by another
        // program) cannot name a row on other replicas: such entries are set aside in
        // `_ferry_rejected` with the reason, and the rest of the outbox moves on. (Only the
        // entries of this chunk are looked at: a look at the whole outbox for each chunk made
        // stamping a large outbox quadratic.)
        let (mut entries, mut rejected, mut last_rowid): (Vec<OutboxEntry>, Vec<i64>, Option<i64>) =
            (Vec::new(), Vec::new(), None);
        let mut read = tx.prepare_cached(
            "SELECT rowid, tbl, CASE WHEN typeof(pk) = 'text' THEN pk END, op, cols, old, wall_ms
             FROM _ferry_outbox ORDER BY rowid LIMIT ?1",
        )?;
        let mut rows = read.query([limit])?;
        let mut count = 0;
        while let Some(r) = rows.next()? {
            count += 1;
            let rowid: i64 = r.get(0)?;
            last_rowid = Some(rowid);
            match r.get::<_, Option<String>>(2)? {
                Some(pk) => entries.push((rowid, r.get(1)?, pk, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
                None => rejected.push(rowid),
            }
        }
        drop(rows);
        drop(read);
        for rowid in rejected {
            tx.prepare_cached(
                "INSERT INTO _ferry_rejected (tbl, pk, op, reason)
                 SELECT tbl, quote(pk), op, 'the primary key is ' || typeof(pk) || ', not text (a uuid)'
                 FROM _ferry_outbox WHERE rowid = ?1",
            )?
            .execute([rowid])?;
        }
        let Some(last_rowid) = last_rowid else {
            return Ok((0, None));
        };
        let mut clock = Self::clock(tx)?;
        let stamp = Self::next_stamp(tx)?;
        // A wall time captured while the device's clock ran ahead must not push this
        // replica's clock into the future for good: never stamp later than now.
        let now = wall_ms();
        // Group by row, keeping the first-seen order, with each entry's clock.
        let mut order: Vec<(String, String)> = Vec::new();
        let mut ops: HashMap<(String, String), Vec<RowOp>> = HashMap::new();
        for (_, tbl, pk, op, cols, old, wall) in &entries {
            let at = clock.tick(((*wall).max(0) as u64).min(now));
            let k = (tbl.clone(), pk.clone());
            if !ops.contains_key(&k) {
                order.push(k.clone());
            }
            ops.entry(k).or_default().push((op.clone(), cols.clone(), old.clone(), at));
        }
        // What is stored of every touched row, read in one query per table.
        let mut stored: HashMap<(String, String), ferry_sqlite::Stored> = HashMap::with_capacity(order.len());
        let mut by_table: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (t, k) in &order {
            by_table.entry(t.as_str()).or_default().push(k.as_str());
        }
        for (t, ks) in by_table {
            if let Some(ts) = tables.get(t) {
                for s in ferry_sqlite::stored(tx, ts, &ks)? {
                    stored.insert((t.to_owned(), s.key.clone()), s);
                }
            }
        }
        // The change record of a row inserted here: the same for every such row of a table
        // (every column replacing nothing, from the empty version), so made once.
        let mut new_row_change: HashMap<&str, (Option<String>, Option<String>)> = HashMap::new();
        for key in order {
            let Some(ts) = tables.get(&key.0) else {
                continue;
            };
            let row_ops = &ops[&key];
            let pk = key.1.as_str();
            let found =
                stored.remove(&key).ok_or_else(|| Error::Local(format!("{} '{pk}' was not read back", key.0)))?;
            // A row inserted here and not written since, the bulk of a large outbox: its state
            // is its values, all at the insert's clock (what the general rule makes of it,
            // without copying the values).
            let fresh_insert =
                found.meta.is_none() && found.values.is_some() && matches!(row_ops.as_slice(), [(op, ..)] if op == "I");
            let general;
            let (state, change) = if fresh_insert {
                let names = ts.table.data_columns().map(|c| c.name.clone());
                let state = RowState::inserted(names.zip(found.values.expect("checked")), row_ops[0].3);
                let change = match new_row_change.entry(ts.table.name.as_str()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let base = ts.table.data_columns().map(|c| (c.name.clone(), Hlc::ZERO)).collect();
                        e.insert(change_json(&ts.table, &base, Some(&RowState::unknown().clocks()))?)
                    }
                };
                (state, &*change)
            } else {
                let (state, base, first_seen) = Self::stamped_state(ts, pk, row_ops, found)?;
                general = change_json(&ts.table, &base, first_seen.as_ref())?;
                (state, &general)
            };
            let dead = (!state.is_alive()).then(|| ferry_sqlite::encode_values(&ts.table, &ts.values_of(&state)));
            let extra =
                Extra { pending: stamp, change: Some((change.0.as_deref(), change.1.as_deref())), ..Extra::default() };
            ferry_sqlite::write_meta(tx, ts, pk, &state, dead.as_deref(), &extra)?;
        }
        tx.execute("DELETE FROM _ferry_outbox WHERE rowid <= ?1", [last_rowid])?;
        set_meta(tx, "clock", &clock.last().to_string())?;
        Ok((count, Some(last_rowid)))
    }

    /// A row's state after its captured writes `row_ops`, from what is stored of it
    /// (`found`), with its change record: the base clock of each column written and, for a
    /// first unacknowledged change, the version it started from.
    fn stamped_state(
        ts: &TableSql,
        pk: &str,
        row_ops: &[RowOp],
        found: ferry_sqlite::Stored,
    ) -> Result<(RowState, BTreeMap<String, Hlc>, Option<RowClocks>)> {
        let mut state = match &found.meta {
            Some(meta) => ferry_sqlite::state_of(&ts.table, meta, None),
            None => RowState::unknown(),
        };
        let known = state.exists.at != Hlc::ZERO;
        let current = found.values;
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
        let mut base = parse_base(&ts.table, pk, found.base)?;
        let recorded_seen = found.seen.map(|j| parse_seen(&ts.table.name, pk, &j)).transpose()?;
        // The version the first unacknowledged change started from.
        let first_seen = recorded_seen.is_none().then(|| state.clocks());
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
        Ok((state, base, first_seen))
    }

    /// Up to `limit` rows with local changes the server has not acknowledged, oldest first.
    /// Captured writes are stamped first, in the same transaction, so what is read is
    /// exactly what the clocks describe.
    pub fn pending(&mut self, limit: usize) -> Result<Vec<PendingRow>> {
        self.pending_in(limit, None)
    }

    /// As [`Replica::pending`], only rows of `tables` (every table when `None`).
    pub fn pending_in(&mut self, limit: usize, tables: Option<&[String]>) -> Result<Vec<PendingRow>> {
        Ok(self.pending_after(limit, tables, None)?.0)
    }

    /// As [`Replica::pending_in`], only rows that come after `after` in the queue's order
    /// (stamp, table, key): the next batch while the previous one is still out, unanswered.
    /// Also returns where this batch ends in that order, to pass as `after` for the next (a
    /// row's stamp can change while it is read, so the rows' own stamps are not it).
    pub fn pending_after(
        &mut self,
        limit: usize,
        tables: Option<&[String]>,
        after: Option<&QueuePosition>,
    ) -> Result<(Vec<PendingRow>, Option<QueuePosition>)> {
        self.pending_while_stamping(limit, tables, after, None)
    }

    /// As [`Replica::pending_after`] while the outbox is stamped chunk by chunk
    /// (`stamping`, from [`Replica::start_stamping`]): nothing is stamped here, and rows
    /// with writes still waiting in the outbox are left for later. With `None`, the whole
    /// outbox is stamped first.
    pub fn pending_while_stamping(
        &mut self,
        limit: usize,
        tables: Option<&[String]>,
        after: Option<&QueuePosition>,
        mut stamping: Option<&mut Stamping>,
    ) -> Result<(Vec<PendingRow>, Option<QueuePosition>)> {
        let selection = tables.map(|t| serde_json::to_string(t).expect("names serialize"));
        let (after_stamp, after_tbl, after_pk) =
            after.map_or((0, "", ""), |p| (p.stamp, p.table.as_str(), p.key.as_str()));
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match stamping.as_deref_mut() {
            Some(s) => s.catch_up(&tx)?,
            None => {
                Self::stamp_in(&tx, &self.tables, -1)?;
            }
        }
        let mut clock = Self::clock(&tx)?;
        let keys: Vec<(String, String, i64)> = tx
            .prepare_cached(
                "SELECT tbl, pk, pending FROM _ferry_rows r WHERE pending > 0 AND (pending, tbl, pk) > (?3, ?4, ?5)
                   AND (?2 IS NULL OR tbl IN (SELECT value FROM json_each(?2)))
                   AND NOT EXISTS (SELECT 1 FROM _ferry_refused f WHERE f.tbl = r.tbl AND f.pk = r.pk)
                   AND NOT EXISTS (SELECT 1 FROM _ferry_failed f WHERE f.tbl = r.tbl AND f.pk = r.pk AND f.stamp = r.pending)
                 ORDER BY pending, tbl, pk LIMIT ?1",
            )?
            .query_map(params![limit as i64, selection, after_stamp, after_tbl, after_pk], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let end = keys.last().map(|(table, key, stamp)| QueuePosition {
            stamp: *stamp,
            table: table.clone(),
            key: key.clone(),
        });
        let mut out = Vec::with_capacity(keys.len());
        // One joined read per run of keys of one table, in the queue's order.
        for run in keys.chunk_by(|a, b| a.0 == b.0) {
            let table = &run[0].0;
            let ts = self.tables.get(table).ok_or_else(|| {
                Error::Schema(format!("pending change for table '{table}', which is not in the schema"))
            })?;
            let ks: Vec<&str> = run.iter().map(|(_, k, _)| k.as_str()).collect();
            for stored in ferry_sqlite::stored(&tx, ts, &ks)? {
                let Some(meta) = stored.meta else { continue };
                if stamping.as_deref().is_some_and(|s| s.waiting(table, &stored.key)) {
                    continue;
                }
                if meta.alive && stored.values.is_none() {
                    // Deleted without capture: `load_local` records the delete now, under a
                    // new stamp, so the row comes again later in the queue (once).
                    Self::load_local(&tx, ts, &stored.key, &mut clock)?;
                    continue;
                }
                let values = if meta.alive { stored.values } else { None };
                let (state, stamp) = (ferry_sqlite::state_of(&ts.table, &meta, values), meta.pending);
                let base = parse_base(&ts.table, &stored.key, stored.base)?;
                let seen = stored.seen.map(|j| parse_seen(table, &stored.key, &j)).transpose()?;
                out.push(PendingRow { table: table.clone(), key: stored.key, state, stamp, base, seen });
            }
        }
        tx.commit()?;
        Ok((out, end))
    }

    /// Marks pushed rows as acknowledged, unless they changed again since they were read.
    /// With `cursor = Some((sent, past))` (the server said the batch was all that changed the
    /// feed since `sent`), the pull cursor moves to `past` if it is still `sent`.
    pub fn acknowledge(&mut self, rows: &[PendingRow], cursor: Option<(&str, &str)>) -> Result<()> {
        self.acknowledge_with(rows, cursor, &[])
    }

    /// As [`Replica::acknowledge`], except for `refused` rows (`reject-stale`): those keep
    /// their local change, marked conflicted with the server's current version and the
    /// server's message, and are not pushed again until someone settles them
    /// ([`Replica::settle_refused`]).
    pub fn acknowledge_with(
        &mut self,
        rows: &[PendingRow],
        cursor: Option<(&str, &str)>,
        refused: &[(PulledRow, String)],
    ) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let schema = self.schema.clone().ok_or_else(|| Error::Local("no schema installed; sync first".into()))?;
        for (row, message) in refused {
            let ts = self.tables.get(&row.table).ok_or_else(|| {
                Error::Schema(format!("table '{}' is not in this replica's schema; sync to update it", row.table))
            })?;
            // Versions pulled while the push was out join the server's current one.
            let mut current = row.state.clone();
            if let Some(held) = take_held(&tx, &schema, &row.table, &row.key)? {
                current.merge(&held);
            }
            let current = state_json_row(&ts.table, &row.key, &current);
            tx.prepare_cached(
                "INSERT INTO _ferry_refused (tbl, pk, current, message) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tbl, pk) DO UPDATE SET current = excluded.current, message = excluded.message",
            )?
            .execute(params![row.table, row.key, current, message])?;
        }
        let refused_keys: Vec<(&str, &str)> = refused.iter().map(|(r, _)| (r.table.as_str(), r.key.as_str())).collect();
        let rows: Vec<&PendingRow> =
            rows.iter().filter(|r| !refused_keys.contains(&(r.table.as_str(), r.key.as_str()))).collect();
        if let Some((sent, past)) = cursor
            && get_meta(&tx, "cursor")?.as_deref().unwrap_or("0") == sent
        {
            set_meta(&tx, "cursor", past)?;
        }
        let any_held: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM _ferry_held)", [], |r| r.get(0))?;
        let any_failed: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM _ferry_failed)", [], |r| r.get(0))?;
        let mut clock = Self::clock(&tx)?;
        tx.execute("INSERT INTO _ferry_apply (busy) VALUES (1)", [])?;
        for r in rows {
            let cleared = tx
                .prepare_cached(
                    "UPDATE _ferry_rows SET pending = 0, base = NULL, seen = NULL
                     WHERE tbl = ?1 AND pk = ?2 AND pending = ?3",
                )?
                .execute(params![r.table, r.key, r.stamp])?
                > 0;
            if cleared && any_failed {
                tx.prepare_cached("DELETE FROM _ferry_failed WHERE tbl = ?1 AND pk = ?2")?
                    .execute(params![r.table, r.key])?;
            }
            if !cleared {
                // Changed again since it was read: the later change starts from what the
                // server now holds of this one.
                write_seen(&tx, &r.table, &r.key, &r.state.clocks())?;
                continue;
            }
            // Versions pulled while the push was out (tables whose strategy the server
            // decides) are merged now that it is answered.
            if let Some(held) = if any_held { take_held(&tx, &schema, &r.table, &r.key)? } else { None } {
                let ts =
                    self.tables.get(&r.table).ok_or_else(|| Error::Schema(format!("unknown table '{}'", r.table)))?;
                if let Some((mut state, _)) = Self::load_local(&tx, ts, &r.key, &mut clock)? {
                    let report = state.merge(&held);
                    let pending = if report.kept_newer { Self::next_stamp(&tx)? } else { 0 };
                    if pending > 0 {
                        write_seen(&tx, &r.table, &r.key, &held.clocks())?;
                    }
                    ferry_sqlite::store_state(&tx, ts, &r.key, &state, &Extra { pending, ..Extra::default() })?;
                }
            }
        }
        tx.execute("DELETE FROM _ferry_apply", [])?;
        tx.commit()?;
        Ok(())
    }

    /// Merges a pulled page and moves the cursor, in one transaction. Local changes not yet
    /// stamped are stamped first, so the merge sees them.
    pub fn apply(&mut self, rows: &[PulledRow], cursor: &str) -> Result<Applied> {
        self.apply_with(rows, cursor, &Resolvers::default())
    }

    /// As [`Replica::apply`], settling conflicts with local unpushed changes by `resolvers`.
    pub fn apply_with(&mut self, rows: &[PulledRow], cursor: &str, resolvers: &Resolvers) -> Result<Applied> {
        self.apply_page(rows, &[], "cursor", cursor, resolvers)
    }

    /// As [`Replica::apply_with`], storing the cursor under `cursor_key` (a selective sync
    /// keeps one cursor per selection of tables).
    ///
    /// `refused` are the page's rows that break a rule (see [`ferry_protocol::DecodedPage`]):
    /// they are set aside in `_ferry_pull_refused`, in the same transaction, and so is a row
    /// whose clock is further ahead than the drift limit (with its state, for
    /// [`Replica::retry_pulled`]); the rest of the page applies. A row that applies clears its
    /// set-aside entry.
    pub fn apply_page(
        &mut self,
        rows: &[PulledRow],
        refused: &[ferry_protocol::RefusedPull],
        cursor_key: &str,
        cursor: &str,
        resolvers: &Resolvers,
    ) -> Result<Applied> {
        self.apply_rows(rows, refused, Some((cursor_key, cursor)), resolvers, wall_ms())
    }

    /// Applies again the pulled rows set aside only because their clock was too far ahead of
    /// this device's: the row is sound, and once this device's time has caught up (or been
    /// corrected) it applies and its entry clears. The cursor has moved past those rows, so
    /// without this they would wait for the row's next change. Rows still too far ahead stay
    /// set aside; the cursor does not move.
    pub fn retry_pulled(&mut self, resolvers: &Resolvers) -> Result<Applied> {
        self.retry_pulled_at(resolvers, wall_ms())
    }

    fn retry_pulled_at(&mut self, resolvers: &Resolvers, now: u64) -> Result<Applied> {
        let Some(schema) = self.schema.as_ref() else { return Ok(Applied::default()) };
        let mut stmt = self
            .conn
            .prepare("SELECT tbl, pk, state FROM _ferry_pull_refused WHERE state IS NOT NULL ORDER BY tbl, pk")?;
        let kept =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        let (mut rows, mut refused) = (Vec::new(), Vec::new());
        for (table, key, json) in kept {
            let json: String = json;
            let decoded = serde_json::from_str::<ferry_protocol::WireRow>(&json)
                .map_err(|e| ferry_protocol::DecodeError(e.to_string()))
                .and_then(|w| ferry_protocol::decode_row(schema, &w));
            match decoded {
                Ok((_, state)) => rows.push(PulledRow { table, key, state }),
                // The schema changed under it: it now waits, as a refused row, for a newer version.
                Err(e) => refused.push(ferry_protocol::RefusedPull { table, key, reason: e.0 }),
            }
        }
        drop(stmt);
        if rows.is_empty() && refused.is_empty() {
            return Ok(Applied::default());
        }
        self.apply_rows(&rows, &refused, None, resolvers, now)
    }

    /// [`Replica::apply_page`] at wall time `now`; `cursor` (its key and value) is stored with
    /// the rows when given.
    fn apply_rows(
        &mut self,
        rows: &[PulledRow],
        refused: &[ferry_protocol::RefusedPull],
        cursor: Option<(&str, &str)>,
        resolvers: &Resolvers,
        now: u64,
    ) -> Result<Applied> {
        let schema = self.schema.clone().ok_or_else(|| Error::Local("no schema installed; sync first".into()))?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::stamp_in(&tx, &self.tables, -1)?;
        let mut clock = Self::clock(&tx)?;
        let mut fresh_stamp = None;
        tx.execute("INSERT INTO _ferry_apply (busy) VALUES (1)", [])?;
        let mut applied = Applied { received: rows.len() + refused.len(), ..Applied::default() };
        let any_refused: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM _ferry_refused)", [], |r| r.get(0))?;
        let any_set_aside: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM _ferry_pull_refused)", [], |r| r.get(0))?;
        // `state`: the row as pulled, kept when the row is sound and only this device's clock
        // keeps it out; a refused row keeps none and waits for a newer version.
        let set_aside = |table: &str, key: &str, message: &str, state: Option<String>| -> Result<()> {
            tx.prepare_cached(
                "INSERT INTO _ferry_pull_refused (tbl, pk, message, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tbl, pk) DO UPDATE SET message = excluded.message, state = excluded.state,
                   refused_at = excluded.refused_at",
            )?
            .execute(params![table, key, message, state])?;
            Ok(())
        };
        for r in refused {
            set_aside(&r.table, &r.key, &r.reason, None)?;
        }
        applied.set_aside = refused.len();
        for row in rows {
            let ts = self.tables.get(&row.table).ok_or_else(|| {
                Error::Schema(format!("table '{}' is not in this replica's schema; sync to update it", row.table))
            })?;
            if let Err(e) = clock.observe(row.state.max_clock(), now) {
                let message = format!(
                    "{} '{}': {e} (or this device's); kept, and applied at a later sync once this device's time allows",
                    row.table,
                    ferry_core::shown(&row.key)
                );
                set_aside(&row.table, &row.key, &message, Some(state_json_row(&ts.table, &row.key, &row.state)))?;
                applied.set_aside += 1;
                continue;
            }
            if any_set_aside {
                tx.prepare_cached("DELETE FROM _ferry_pull_refused WHERE tbl = ?1 AND pk = ?2")?
                    .execute(params![row.table, row.key])?;
            }
            let Some((mut state, meta)) = Self::load_local(&tx, ts, &row.key, &mut clock)? else {
                ferry_sqlite::store_state(&tx, ts, &row.key, &row.state, &Extra::default())?;
                applied.changed += 1;
                continue;
            };
            // A change the server refused stays as it is; the pulled version joins the
            // server's current one beside it, for whoever settles it.
            let held: Option<String> = if any_refused {
                tx.prepare_cached("SELECT current FROM _ferry_refused WHERE tbl = ?1 AND pk = ?2")?
                    .query_row(params![row.table, row.key], |r| r.get(0))
                    .optional()?
            } else {
                None
            };
            if let Some(held) = held {
                let mut current = state_from_json(&schema, &held)?;
                current.merge(&row.state);
                tx.prepare_cached("UPDATE _ferry_refused SET current = ?3 WHERE tbl = ?1 AND pk = ?2")?
                    .execute(params![row.table, row.key, state_json_row(&ts.table, &row.key, &current)])?;
                continue;
            }
            let seen = if meta.pending > 0 { read_seen(&tx, &ts.table.name, &row.key)? } else { None };
            if seen.is_some() && ts.table.options.conflict != ferry_core::schema::ConflictStrategy::Lww {
                // The table's strategy is the server's to apply: the local change is pushed as
                // made, and the pulled version waits beside it until the push is answered.
                let mut held = take_held(&tx, &schema, &row.table, &row.key)?.unwrap_or_default();
                held.merge(&row.state);
                tx.prepare_cached("INSERT INTO _ferry_held (tbl, pk, state) VALUES (?1, ?2, ?3)")?.execute(params![
                    row.table,
                    row.key,
                    state_json_row(&ts.table, &row.key, &held)
                ])?;
                continue;
            }
            let before = state.clone();
            let mut report = before.clone().merge(&row.state);
            if let Some(seen) = seen {
                // A local change not yet pushed meets a pulled one: the table's client-side
                // resolver settles the fields both changed; each is kept for a person to see.
                let resolver = resolvers.for_table(&ts.table.name);
                let r = resolver.as_core();
                let out = ferry_core::strategy::merge_pulled(
                    (&ts.table.name, &row.key),
                    &before,
                    &seen,
                    &row.state,
                    &r,
                    &mut clock,
                    now,
                );
                if let Some(c) = &out.conflict {
                    let mut conflicts = tx.prepare_cached(
                        "INSERT INTO _ferry_conflicts
                           (tbl, pk, col, local_value, local_at, remote_value, remote_at, resolved_by, kind, local, remote)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )?;
                    let local = state_json_row(&ts.table, &row.key, &before);
                    let remote = state_json_row(&ts.table, &row.key, &row.state);
                    for f in &c.fields {
                        let (lv, la) = register_json(&before, f);
                        let (rv, ra) = register_json(&row.state, f);
                        conflicts.execute(params![
                            row.table,
                            row.key,
                            f,
                            lv,
                            la,
                            rv,
                            ra,
                            resolver.name(),
                            c.kind.name(),
                            local,
                            remote
                        ])?;
                        applied.conflicts += 1;
                    }
                }
                report.changed = out.state != before;
                report.kept_newer = !out.state.same_clocks(&row.state);
                state = out.state;
                write_seen(&tx, &ts.table.name, &row.key, &out.seen)?;
            } else {
                state.merge(&row.state);
            }
            // The local state has something the server's lacks: it must be pushed (again).
            let pending = match (report.kept_newer, meta.pending) {
                (true, 0) => {
                    // Pushed again on top of the server's version just pulled.
                    write_seen(&tx, &ts.table.name, &row.key, &row.state.clocks())?;
                    *fresh_stamp.get_or_insert(Self::next_stamp(&tx)?)
                }
                (_, p) => p,
            };
            if report.changed || pending != meta.pending {
                ferry_sqlite::store_state(&tx, ts, &row.key, &state, &Extra { pending, ..Extra::default() })?;
                applied.changed += usize::from(report.changed);
            }
        }
        tx.execute("DELETE FROM _ferry_apply", [])?;
        set_meta(&tx, "clock", &clock.last().to_string())?;
        if let Some((cursor_key, cursor)) = cursor {
            set_meta(&tx, cursor_key, cursor)?;
        }
        tx.commit()?;
        Ok(applied)
    }

    /// The state a running engine last reported; an engine process that is gone without
    /// saying so (killed) reads as STOPPED.
    fn connection_state(&self) -> Result<Option<String>> {
        let state = self.meta("engine_state")?;
        let pid = self.meta("engine_pid")?.and_then(|p| p.parse::<u32>().ok());
        Ok(match (state, pid) {
            (Some(s), Some(pid)) if s != "STOPPED" && !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                Some("STOPPED".to_owned())
            }
            (s, _) => s,
        })
    }

    /// The fields this replica's client-side resolvers settled when a pulled change met a
    /// local change not yet pushed, newest first; each with both values.
    pub fn local_conflicts(&self) -> Result<Vec<LocalConflict>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, tbl, pk, col, local_value, local_at, remote_value, remote_at, resolved_by, detected_at,
                    kind, local, remote
             FROM _ferry_conflicts ORDER BY id DESC",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(LocalConflict {
                    id: r.get(0)?,
                    table: r.get(1)?,
                    key: r.get(2)?,
                    field: r.get(3)?,
                    local_value: r.get(4)?,
                    local_at: r.get(5)?,
                    remote_value: r.get(6)?,
                    remote_at: r.get(7)?,
                    resolved_by: r.get(8)?,
                    detected_at: r.get(9)?,
                    kind: r.get::<_, Option<String>>(10)?.unwrap_or_else(|| "update-update".to_owned()),
                    local: version_json(r.get(11)?),
                    remote: version_json(r.get(12)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Local changes the server refused as stale, oldest first.
    pub fn refused(&self) -> Result<Vec<Refused>> {
        let mut stmt =
            self.conn.prepare("SELECT id, tbl, pk, current, message, refused_at FROM _ferry_refused ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Refused {
                    id: r.get(0)?,
                    table: r.get(1)?,
                    key: r.get(2)?,
                    current: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    local: serde_json::Value::Null,
                    message: r.get(4)?,
                    refused_at: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for mut r in rows {
            if let Some(ts) = self.tables.get(&r.table)
                && let Some((state, _)) = ferry_sqlite::load_state(&self.conn, ts, &r.key)?
            {
                r.local =
                    serde_json::to_value(ferry_protocol::encode_row(&ts.table, &r.key, &state)).unwrap_or_default();
            }
            out.push(r);
        }
        Ok(out)
    }

    /// Settles a refused change: `keep_local` writes the local values again on top of the
    /// server's current version (pushed at the next sync, which then no longer counts as
    /// stale); otherwise the server's current version replaces the local change.
    ///
    /// # Errors
    /// [`Error::Local`] naming the id when no refused change has it.
    pub fn settle_refused(&mut self, id: i64, keep_local: bool) -> Result<()> {
        let schema = self.schema.clone().ok_or_else(|| Error::Local("no schema installed; sync first".into()))?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: Option<(String, String, String)> = tx
            .query_row("SELECT tbl, pk, current FROM _ferry_refused WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((table, key, current)) = found else {
            return Err(Error::Local(format!(
                "no refused change with id {id}; `ferry conflicts refused --db …` shows the ids"
            )));
        };
        let ts =
            self.tables.get(&table).ok_or_else(|| Error::Schema(format!("table '{table}' is not in the schema")))?;
        let current = state_from_json(&schema, &current)?;
        let mut clock = Self::clock(&tx)?;
        let now = wall_ms();
        let _ = clock.observe(current.max_clock(), now);
        let Some((local, _)) = Self::load_local(&tx, ts, &key, &mut clock)? else {
            return Err(Error::Local(format!("{table} '{key}' is missing from the replica")));
        };
        tx.execute("INSERT INTO _ferry_apply (busy) VALUES (1)", [])?;
        if keep_local {
            let seen = read_seen(&tx, &table, &key)?.unwrap_or_default();
            let mut own = Vec::new();
            if local.exists.at > seen.exists {
                own.push((EXISTS.to_owned(), ferry_core::strategy::Register::Exists(local.exists.value)));
            }
            for (c, v) in &local.cols {
                if v.at > seen.cols.get(c).copied().unwrap_or(Hlc::ZERO) {
                    own.push((c.clone(), ferry_core::strategy::Register::Col(v.value.clone())));
                }
            }
            let mut state = current.clone();
            state.merge(&local);
            let at = clock.tick(now);
            ferry_core::strategy::write_registers(&mut state, own, at);
            let stamp = Self::next_stamp(&tx)?;
            ferry_sqlite::store_state(&tx, ts, &key, &state, &Extra { pending: stamp, ..Extra::default() })?;
            write_seen(&tx, &table, &key, &current.clocks())?;
        } else {
            // The local change is dropped: it stays in the replica's conflict view.
            let (local_json, current_json) =
                (state_json_row(&ts.table, &key, &local), state_json_row(&ts.table, &key, &current));
            tx.execute(
                "INSERT INTO _ferry_conflicts
                   (tbl, pk, col, local_value, local_at, remote_value, remote_at, resolved_by, kind, local, remote)
                 VALUES (?1, ?2, '*', ?3, ?4, ?5, ?6, 'settled: server', 'update-update', ?7, ?8)",
                params![
                    table,
                    key,
                    local.exists.value.to_string(),
                    local.max_clock().to_string(),
                    current.exists.value.to_string(),
                    current.max_clock().to_string(),
                    local_json,
                    current_json
                ],
            )?;
            ferry_sqlite::store_state(&tx, ts, &key, &current, &Extra::default())?;
            tx.execute(
                "UPDATE _ferry_rows SET base = NULL, seen = NULL WHERE tbl = ?1 AND pk = ?2",
                params![table, key],
            )?;
        }
        tx.execute("DELETE FROM _ferry_refused WHERE id = ?1", [id])?;
        tx.execute("DELETE FROM _ferry_apply", [])?;
        set_meta(&tx, "clock", &clock.last().to_string())?;
        tx.commit()?;
        Ok(())
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

    /// Rows with local changes the server has not acknowledged (stamped or not).
    ///
    /// # Errors
    /// When the replica cannot be read.
    pub fn pending_count(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM (SELECT tbl, pk FROM _ferry_rows WHERE pending > 0 UNION SELECT tbl, pk FROM _ferry_outbox)",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    pub fn status(&self) -> Result<Status> {
        let count = |sql: &str| -> Result<u64> { Ok(self.conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64) };
        Ok(Status {
            pending: self.pending_count()?,
            unstamped: count("SELECT count(*) FROM _ferry_outbox")?,
            conflicted: count("SELECT count(*) FROM _ferry_refused")?,
            failed: count("SELECT count(*) FROM _ferry_failed")?,
            refused_pulls: count("SELECT count(*) FROM _ferry_pull_refused")?,
            connection: self.connection_state()?,
            files: self.file_queue_totals()?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::hlc::MAX_DRIFT_MS;

    const KEY: &str = "0190f5a2-7c1e-7d3a-9b1f-2c3d4e5f6a7b";

    fn replica(dir: &tempfile::TempDir) -> Replica {
        let schema =
            Schema::parse("CREATE TABLE notes (id uuid PRIMARY KEY, title text);", &Default::default()).unwrap();
        let mut replica = Replica::open(&dir.path().join("r.db")).unwrap();
        replica.install_schema(&ferry_protocol::SchemaResponse::from_schema(&schema)).unwrap();
        replica
    }

    fn note(title: &str, wall_ms: u64) -> PulledRow {
        let state =
            RowState::inserted([("title".to_owned(), Value::Text(title.into()))], Hlc::new(wall_ms, 0, SiteId(7)));
        PulledRow { table: "notes".into(), key: KEY.into(), state }
    }

    fn titles(replica: &Replica) -> Vec<String> {
        let mut stmt = replica.connection().prepare("SELECT title FROM notes ORDER BY title").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(|t| t.unwrap()).collect()
    }

    /// A row whose clock is ahead of this device's by more than the drift limit is set aside
    /// with its state while the rest of the page and the cursor go on; once this device's
    /// time allows (it caught up, or was corrected), a later sync applies it and clears the
    /// entry, without the row changing on the server and without moving the cursor.
    #[test]
    fn a_row_ahead_of_this_devices_clock_is_kept_and_applied_once_time_allows() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(&dir);
        let now = wall_ms();
        let ahead = now + 2 * MAX_DRIFT_MS;
        let other = PulledRow { key: "0190f5a2-7c1e-7d3a-9b1f-000000000001".into(), ..note("other", now) };
        let applied = replica
            .apply_rows(&[note("ahead", ahead), other], &[], Some(("cursor", "7")), &Resolvers::default(), now)
            .unwrap();
        assert_eq!((applied.set_aside, applied.changed), (1, 1));
        assert_eq!(titles(&replica), ["other"]);
        assert_eq!(replica.meta("cursor").unwrap().as_deref(), Some("7"));
        let kept = replica.refused_pulls().unwrap();
        assert_eq!((kept.len(), kept[0].key.as_str()), (1, KEY));
        assert!(kept[0].message.contains("ahead of this replica's wall clock"), "{kept:?}");

        // Still too far ahead: it stays, nothing applies.
        let retried = replica.retry_pulled_at(&Resolvers::default(), now).unwrap();
        assert_eq!((retried.set_aside, retried.changed), (1, 0));
        assert_eq!(replica.status().unwrap().refused_pulls, 1);

        // This device's time has caught up: it applies, and the entry clears.
        let retried = replica.retry_pulled_at(&Resolvers::default(), ahead).unwrap();
        assert_eq!((retried.set_aside, retried.changed), (0, 1));
        assert_eq!(titles(&replica), ["ahead", "other"]);
        assert_eq!(replica.status().unwrap().refused_pulls, 0);
        assert_eq!(replica.meta("cursor").unwrap().as_deref(), Some("7"));
    }

    /// A replica whose set-aside table predates the kept state gains the column on opening.
    #[test]
    fn a_replica_from_before_kept_states_gains_the_column() {
        let dir = tempfile::tempdir().unwrap();
        drop(replica(&dir));
        let old = rusqlite::Connection::open(dir.path().join("r.db")).unwrap();
        old.execute_batch("ALTER TABLE _ferry_pull_refused DROP COLUMN state").unwrap();
        drop(old);
        let mut replica = replica(&dir);
        let now = wall_ms();
        let applied = replica
            .apply_page(&[note("ahead", now + 2 * MAX_DRIFT_MS)], &[], "cursor", "1", &Resolvers::default())
            .unwrap();
        assert_eq!(applied.set_aside, 1);
    }

    /// A row refused as breaking a rule keeps no state: it is not tried again by itself, and
    /// waits for the row's next version, which applies and clears it.
    #[test]
    fn a_refused_row_waits_for_a_newer_version_which_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(&dir);
        let refused = ferry_protocol::RefusedPull {
            table: "notes".into(),
            key: KEY.into(),
            reason: format!("notes '{KEY}': column 'title' has a value but the zero clock"),
        };
        let applied = replica.apply_page(&[], &[refused], "cursor", "3", &Resolvers::default()).unwrap();
        assert_eq!(applied.set_aside, 1);
        let retried = replica.retry_pulled(&Resolvers::default()).unwrap();
        assert_eq!(retried, Applied::default());
        assert_eq!(replica.refused_pulls().unwrap().len(), 1);

        replica.apply_page(&[note("mended", wall_ms())], &[], "cursor", "4", &Resolvers::default()).unwrap();
        assert_eq!(titles(&replica), ["mended"]);
        assert!(replica.refused_pulls().unwrap().is_empty());
    }
}

//! The replica: an application's SQLite file plus Ferry's bookkeeping in it.
//!
//! Every method that changes bookkeeping is one transaction, and never spans a network
//! call: the outbox is stamped, a pushed batch acknowledged, a pulled page applied together
//! with its cursor, each atomically. A process killed at any instruction leaves a file
//! from which the next sync simply continues.

mod catch_up;
mod conflicts;
mod meta;
mod migrations;
mod pull;
mod push;
mod records;
mod resync;
mod stamp;
mod status;
mod subscriptions;

use std::collections::HashMap;
use std::path::Path;

use ferry_core::schema::Schema;
use ferry_core::{Clock, Hlc, SiteId};
use ferry_protocol::SchemaResponse;
use ferry_sqlite::TableSql;
use rusqlite::{Connection, TransactionBehavior};

use crate::capture;
use crate::error::{Error, Result};

pub use conflicts::{ClientResolver, LocalConflict, Refused, ResolveFn, ResolveInput, Resolvers};
pub use meta::Key;
pub use pull::{Applied, PulledRow};
pub use push::{PendingRow, QueuePosition};
pub use stamp::{STAMP_CHUNK, Stamping};
pub use status::{FileQueue, Status};

/// A replica file opened for syncing.
pub struct Replica {
    conn: Connection,
    path: std::path::PathBuf,
    schema: Option<Schema>,
    tables: HashMap<String, TableSql>,
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

use meta::{get as get_meta, set as set_meta};

/// A bookkeeping value read on a connection of its own (the file worker's).
pub(crate) fn meta_of(conn: &Connection, key: Key<'_>) -> rusqlite::Result<Option<String>> {
    get_meta(conn, key)
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
        migrations::migrate(&mut conn)?;
        if get_meta(&conn, Key::Site)?.is_none() {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| Error::Local(format!("no randomness: {e}")))?;
            let site = SiteId::from_bytes(b);
            set_meta(&conn, Key::Site, &site.to_string())?;
        }
        let mut replica = Replica { conn, path: path.to_owned(), schema: None, tables: HashMap::new() };
        if let Some(json) = get_meta(&replica.conn, Key::Schema)? {
            let resp: SchemaResponse =
                serde_json::from_str(&json).map_err(|e| Error::Local(format!("stored schema is unreadable: {e}")))?;
            replica.set_schema(resp.to_schema().map_err(|e| Error::Local(format!("stored schema: {e}")))?);
        }
        Ok(replica)
    }

    /// Keeps what syncs of `schema` ([`Schema::synced`]): rows are read, written, sent and
    /// received as they sync, and local-only tables and columns are left alone (only
    /// [`Replica::install_schema`] creates them).
    fn set_schema(&mut self, schema: Schema) {
        let synced = schema.synced();
        self.tables = synced.tables.iter().map(|t| (t.name.clone(), TableSql::new(t))).collect();
        self.schema = Some(synced);
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

    /// What syncs of the installed schema: its synced tables without their local-only columns.
    pub fn schema(&self) -> Option<&Schema> {
        self.schema.as_ref()
    }

    /// A bookkeeping value.
    pub fn meta(&self, key: Key<'_>) -> Result<Option<String>> {
        Ok(get_meta(&self.conn, key)?)
    }

    pub fn set_meta(&self, key: Key<'_>, value: &str) -> Result<()> {
        Ok(set_meta(&self.conn, key, value)?)
    }

    pub(super) fn clock(tx: &Connection) -> Result<Clock> {
        let site: SiteId = get_meta(tx, Key::Site)?
            .ok_or_else(|| Error::Local("replica has no site id".into()))?
            .parse()
            .map_err(|e| Error::Local(format!("stored site id: {e}")))?;
        let last = match get_meta(tx, Key::Clock)? {
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
        let stored = get_meta(&self.conn, Key::SchemaVersion)?;
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
            if table.options.local_only {
                // Created like any table, never captured: its rows stay on this device.
                continue;
            }
            // Local-only columns are created above but never captured.
            let synced = table.synced();
            tx.execute_batch(&capture::triggers(&synced))?;
            let adopted = tx.execute(&capture::adopt_untracked(&synced), [])?;
            if adopted > 0 {
                done.push(format!("adopted {adopted} existing rows of '{}'", table.name));
            }
        }
        if same_version {
            done.push("reinstalled missing capture triggers".to_owned());
        }
        let json = serde_json::to_string(resp).expect("schema serializes");
        set_meta(&tx, Key::Schema, &json)?;
        set_meta(&tx, Key::SchemaVersion, &resp.version)?;
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
}

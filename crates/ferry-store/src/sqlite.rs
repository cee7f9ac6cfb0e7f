//! The embedded store: one SQLite file, `ferry.db`, in the data directory.
//!
//! One writer connection (SQLite allows one writer at a time anyway) and a small pool of
//! reader connections; WAL lets pulls read while a push writes. Work runs on tokio's
//! blocking threads. The feed sequence is assigned inside the single write transaction,
//! so commit order and sequence order agree and a cursor can never skip a change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_core::rules::Dialect;
use ferry_core::schema::{Schema, quote};
use ferry_sqlite::{Extra, TableSql};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{
    ConflictFilter, ConflictRecord, ConflictSide, DeviceRecord, FeedRow, IncomingRow, NewToken, Principal, PullPage,
    PushOutcome, Result, Store, StoreError, User, new_token, token_hash,
};

const BOOKKEEPING: &str = "
CREATE TABLE IF NOT EXISTS _ferry_users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS _ferry_devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES _ferry_users(id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_seen TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS _ferry_batches (
    device_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    received INTEGER NOT NULL,
    changed INTEGER NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (device_id, batch_id)
);
CREATE INDEX IF NOT EXISTS _ferry_rows_seq ON _ferry_rows(seq);
CREATE TABLE IF NOT EXISTS _ferry_store (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS _ferry_conflicts (
    id INTEGER PRIMARY KEY,
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL,
    strategy TEXT NOT NULL,
    stored TEXT NOT NULL,
    incoming TEXT NOT NULL,
    winner TEXT NOT NULL,
    resolved_by TEXT,
    resolved_at TEXT,
    detected_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    dedupe TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS _ferry_conflicts_row ON _ferry_conflicts(tbl, pk);
CREATE TABLE IF NOT EXISTS _ferry_sites (
    site TEXT PRIMARY KEY,
    device_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _ferry_exits (
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    reach TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS _ferry_exits_row ON _ferry_exits(tbl, pk);
CREATE INDEX IF NOT EXISTS _ferry_exits_feed ON _ferry_exits(tbl, seq);
CREATE TABLE IF NOT EXISTS _ferry_scopes (hash TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS _ferry_peer_bases (
    device_id TEXT NOT NULL,
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    clocks TEXT NOT NULL,
    PRIMARY KEY (device_id, tbl, pk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ferry_links (peer TEXT PRIMARY KEY, status TEXT NOT NULL, resync INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS _ferry_sync_log (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    peer TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS _ferry_sync_log_at ON _ferry_sync_log(at_ms);
CREATE TABLE IF NOT EXISTS _ferry_full_syncs (
    id TEXT PRIMARY KEY,
    started_ms INTEGER NOT NULL,
    run TEXT NOT NULL,
    cancel INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS _ferry_link_starts (
    peer TEXT NOT NULL,
    way TEXT NOT NULL,
    cursor TEXT NOT NULL,
    PRIMARY KEY (peer, way)
);
";

/// The feed's last position: the highest row's, or the compaction horizon when compaction
/// removed the highest rows (positions are never handed out twice).
const FEED_END: &str = "SELECT max(COALESCE((SELECT MAX(seq) FROM _ferry_rows), 0),
    COALESCE((SELECT CAST(value AS INTEGER) FROM _ferry_store WHERE key = 'horizon'), 0))";
/// The next position [`FEED_END`] allows.
const NEXT_SEQ: &str = "SELECT max(COALESCE((SELECT MAX(seq) FROM _ferry_rows), 0),
    COALESCE((SELECT CAST(value AS INTEGER) FROM _ferry_store WHERE key = 'horizon'), 0)) + 1";

/// Records what the peer `device` holds of `rows` (at least), in the open transaction.
fn save_bases(
    tx: &rusqlite::Transaction<'_>,
    device: &str,
    rows: &[(String, String, ferry_core::strategy::RowClocks)],
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO _ferry_peer_bases (device_id, tbl, pk, clocks) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (device_id, tbl, pk) DO UPDATE SET clocks = excluded.clocks",
    )?;
    for (table, key, clocks) in rows {
        stmt.execute(params![device, table, key, clocks.to_json()])?;
    }
    Ok(())
}

/// Refuses a cursor older than the compaction horizon: deletions it has not seen may be gone
/// (`position`: what the cursor has seen; 0, the start, is never too old).
fn check_horizon(tx: &rusqlite::Transaction<'_>, position: i64) -> Result<()> {
    let horizon: Option<i64> = tx
        .prepare_cached("SELECT CAST(value AS INTEGER) FROM _ferry_store WHERE key = 'horizon'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    match horizon {
        Some(h) if position > 0 && position < h => Err(crate::expired(&position.to_string(), &h.to_string())),
        _ => Ok(()),
    }
}

/// Moves the compaction horizon up to `position` (never down).
fn raise_horizon(tx: &rusqlite::Transaction<'_>, position: i64) -> Result<()> {
    if position > 0 {
        tx.prepare_cached(
            "INSERT INTO _ferry_store (key, value) VALUES ('horizon', ?1)
             ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), ?1)",
        )?
        .execute([position])?;
    }
    Ok(())
}

/// Whose feed a page is.
enum Whose {
    /// A device's user: the rows they may read.
    User(String),
    /// A peer (its device id here): every row but those it brought itself.
    Peer(String),
    /// Every row (operators' commands).
    All,
}

/// When a row's reach changes, its old reach is kept (docs/design.md, "Sharing rules").
const EXITS_TRIGGER: &str = "
CREATE TRIGGER IF NOT EXISTS _ferry_rows_exit AFTER UPDATE OF reach ON _ferry_rows
WHEN OLD.reach IS NOT NULL AND OLD.reach IS NOT NEW.reach
BEGIN
  INSERT INTO _ferry_exits (tbl, pk, reach, seq) VALUES (OLD.tbl, OLD.pk, OLD.reach, NEW.seq);
END;
";

/// Columns added after the first release: (table, column, definition).
const ADDED_COLUMNS: [(&str, &str, &str); 4] = [
    ("_ferry_devices", "admin", "INTEGER NOT NULL DEFAULT 0"),
    ("_ferry_devices", "role", "TEXT"),
    ("_ferry_batches", "refused", "TEXT"),
    ("_ferry_rows", "reach", "TEXT"),
];

const READERS: usize = 4;

/// The embedded SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    path: std::path::PathBuf,
    notices: tokio::sync::broadcast::Sender<crate::Notice>,
    /// The feed position this process has announced; a higher one was written by another
    /// process (found by the watcher, see [`SqliteStore::notices`]).
    announced: std::sync::atomic::AtomicI64,
    watching: std::sync::atomic::AtomicBool,
    /// The site id of changes the server itself makes (resolutions, strategies).
    site: ferry_core::SiteId,
    /// What syncs ([`Schema::synced`]); `device_schema` is the whole schema.
    schema: Schema,
    device_schema: Schema,
    tables: HashMap<String, TableSql>,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    /// Requests waiting for a connection (the writer, or a reader when none is free).
    waiting: std::sync::atomic::AtomicUsize,
    /// This server's role (`[server] role`), once set.
    role: std::sync::OnceLock<String>,
}

/// `mutex` locked, counted in `waiting` while it has to wait.
fn locked<'a>(mutex: &'a Mutex<Connection>, waiting: &std::sync::atomic::AtomicUsize) -> MutexGuard<'a, Connection> {
    use std::sync::atomic::Ordering;
    if let Ok(guard) = mutex.try_lock() {
        return guard;
    }
    waiting.fetch_add(1, Ordering::Relaxed);
    let guard = mutex.lock().unwrap_or_else(|p| p.into_inner());
    waiting.fetch_sub(1, Ordering::Relaxed);
    guard
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` for `schema`: creates missing
    /// tables, checks existing ones against the schema and adds missing nullable columns.
    ///
    /// # Errors
    /// When the directory cannot be created, the file cannot be opened, or an existing
    /// table differs from the schema (the message names each difference).
    pub fn open(data_dir: &Path, device_schema: Schema) -> Result<SqliteStore> {
        let schema = device_schema.synced();
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data directory '{}': {e}", data_dir.display()))
        })?;
        let path = data_dir.join("ferry.db");
        let mut writer = ferry_sqlite::open(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open '{}': {e}", path.display())))?;
        // An acknowledged push must survive a power cut: devices clear their outbox on the
        // acknowledgement and will not send the change again.
        writer.pragma_update(None, "synchronous", "FULL")?;
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        ferry_sqlite::ensure_rows_table(&tx)?;
        tx.execute_batch(BOOKKEEPING)?;
        for (table, column, definition) in ADDED_COLUMNS {
            let has: bool = tx.query_row(
                "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                params![table, column],
                |r| r.get(0),
            )?;
            if !has {
                tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"))?;
            }
        }
        tx.execute_batch(EXITS_TRIGGER)?;
        for table in &schema.tables {
            ferry_sqlite::ensure_table(&tx, table).map_err(StoreError::Invalid)?;
            backfill_owner(&tx, table)?;
            backfill_reach(&tx, table)?;
        }
        tx.execute_batch(&crate::file_indexes(&schema))?;
        tx.execute_batch(&crate::scope::reach_indexes(&schema, Dialect::Sqlite))?;
        tx.execute(
            "INSERT OR IGNORE INTO _ferry_store (key, value) VALUES ('id', ?1)",
            [uuid::Uuid::now_v7().to_string()],
        )?;
        let id: String = tx.query_row("SELECT value FROM _ferry_store WHERE key = 'id'", [], |r| r.get(0))?;
        // The site id of changes the server itself makes (resolutions).
        let mut site = [0u8; 8];
        getrandom::fill(&mut site).map_err(|e| StoreError::Internal(format!("no randomness: {e}")))?;
        tx.execute(
            "INSERT OR IGNORE INTO _ferry_store (key, value) VALUES ('site', ?1)",
            [ferry_core::SiteId::from_bytes(site).to_string()],
        )?;
        let site: ferry_core::SiteId = tx
            .query_row("SELECT value FROM _ferry_store WHERE key = 'site'", [], |r| r.get::<_, String>(0))?
            .parse()
            .map_err(|e| StoreError::Internal(format!("stored site id: {e}")))?;
        let feed_end: i64 = tx.query_row(FEED_END, [], |r| r.get(0))?;
        tx.commit()?;
        let readers = (0..READERS)
            .map(|_| ferry_sqlite::open(&path).map(Mutex::new))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let tables = schema.tables.iter().map(|t| (t.name.clone(), TableSql::new(t))).collect();
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                id,
                path,
                notices: tokio::sync::broadcast::channel(crate::NOTICE_BUFFER).0,
                announced: std::sync::atomic::AtomicI64::new(feed_end),
                watching: std::sync::atomic::AtomicBool::new(false),
                site,
                schema,
                device_schema,
                tables,
                writer: Mutex::new(writer),
                readers,
                waiting: std::sync::atomic::AtomicUsize::new(0),
                role: std::sync::OnceLock::new(),
            }),
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner, &mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = locked(&inner.writer, &inner.waiting);
            f(&inner, &mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner, &mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // Take a free reader if there is one, else wait for the first.
            let guard = inner
                .readers
                .iter()
                .find_map(|r| r.try_lock().ok())
                .unwrap_or_else(|| locked(&inner.readers[0], &inner.waiting));
            let mut conn = guard;
            f(&inner, &mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }
}

impl Inner {
    /// Tells stream subscribers about a commit that moved the feed to `seq`.
    fn announce(&self, seq: i64, notice: crate::Notice) {
        self.announced.fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
        let _ = self.notices.send(notice);
    }

    fn table(&self, name: &str) -> Result<&TableSql> {
        self.tables.get(name).ok_or_else(|| crate::unknown_table(&self.device_schema, name))
    }
}

/// Merges `rows` into the open transaction `tx` as `who`'s push, by the tables' rules and
/// strategies: each row changed is written at the next feed position after `seq` (which
/// moves), and noted in `tally`. Returns how many rows changed. A push and a full sync's
/// restore share it.
fn merge_in(
    inner: &Inner,
    tx: &rusqlite::Transaction<'_>,
    who: &Principal,
    rows: Vec<IncomingRow>,
    seq: &mut i64,
    tally: &mut crate::Tally,
) -> Result<usize> {
    let mut changed = 0;
    let env = crate::Deciding {
        server_site: inner.site,
        local_role: inner.role.get().cloned(),
        role_sites: role_sites(tx)?,
        site_devices: site_devices(tx, &crate::batch_sites(rows.iter().map(|r| &r.state)))?,
        now_ms: crate::wall_ms(),
        write_sets: HashMap::new(),
    };
    // With write rules, the batch's rows are checked against them in order once all
    // are written (see `check_batch`).
    let ruled = crate::rules::has_write_rules(&inner.schema) && !who.peer;
    let granted = if ruled {
        write_sets(tx, &inner.schema, rows.iter().map(|r| r.table.as_str()), &who.user_id)?
    } else {
        HashMap::new()
    };
    let env = crate::Deciding { write_sets: crate::rules::selected_values(&granted), ..env };
    let order: Vec<(String, String)> =
        if ruled { rows.iter().map(|r| (r.table.clone(), r.key.clone())).collect() } else { Vec::new() };
    let mut written = crate::rules::Written::new();
    // What is stored of the batch's rows, read in one query per table; a row the batch
    // holds twice is read again after its first write.
    let mut before: HashMap<(String, String), ferry_sqlite::Stored> = HashMap::with_capacity(rows.len());
    let mut keys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in &rows {
        keys.entry(r.table.as_str()).or_default().push(r.key.as_str());
    }
    for (table, mut ks) in keys {
        ks.sort_unstable();
        ks.dedup();
        for s in ferry_sqlite::stored(tx, inner.table(table)?, &ks)? {
            before.insert((table.to_owned(), s.key.clone()), s);
        }
    }
    for row in rows {
        let ts = inner.table(&row.table)?;
        let table = &ts.table;
        let stored = match before.remove(&(row.table.clone(), row.key.clone())) {
            Some(s) => s.meta.map(|meta| {
                let values = if meta.alive { s.values } else { None };
                (ferry_sqlite::state_of(table, &meta, values), meta.owner)
            }),
            None => ferry_sqlite::load_state(tx, ts, &row.key)?.map(|(s, meta)| (s, meta.owner)),
        };
        let merged = crate::merge_pushed(table, who, stored, &row, &env)?;
        if let Some((contest, before)) = &merged.conflict {
            let origin: Option<String> = tx
                .prepare_cached("SELECT origin FROM _ferry_rows WHERE tbl = ?1 AND pk = ?2")?
                .query_row(params![table.name, row.key], |r| r.get(0))
                .optional()?
                .flatten();
            let c = crate::conflicts::new_conflict(
                table,
                &row.key,
                (before, origin.as_deref()),
                (&row.state, &who.device_id),
                contest,
                merged.open,
            );
            insert_conflict(tx, &c)?;
        }
        let Some(w) = tally.take(table, &row.key, merged) else { continue };
        *seq += 1;
        changed += 1;
        let extra = Extra { seq: *seq, owner: w.owner.as_deref(), origin: w.origin(who), pending: 0, change: None };
        ferry_sqlite::store_state(tx, ts, &row.key, &w.state, &extra)?;
        write_reach(tx, &table.name, &row.key, w.reach.as_deref())?;
        if ruled {
            written.entry(row.table.clone()).or_default().insert(row.key.clone(), w.state);
        }
    }
    crate::rules::check_batch(&inner.schema, who, &order, &written, &granted)?;
    for site in &tally.sites {
        tx.prepare_cached("INSERT OR IGNORE INTO _ferry_sites (site, device_id) VALUES (?1, ?2)")?
            .execute(params![site.to_string(), who.device_id])?;
    }
    Ok(changed)
}

/// A cursor given out in the middle of a walk through the feed (a page with more after it)
/// carries where that walk started, `POSITION~START`: the compaction horizon is judged by the
/// walk's start (a walk from the beginning missed no deletion, however far below the horizon
/// its pages are), not by how far it has read. Returns the cursor without it, and the start.
fn split_walk(c: &str) -> Result<(&str, Option<i64>)> {
    match c.split_once('~') {
        None => Ok((c, None)),
        Some((base, start)) => match start.parse::<i64>() {
            Ok(s) if s >= 0 => Ok((base, Some(s))),
            _ => Err(StoreError::Invalid(format!(
                "cursor '{}' is not a cursor this server gave out; start over from the beginning (cursor=0; since=0 on /v1/changes)",
                ferry_core::shown(c)
            ))),
        },
    }
}

/// The embedded store's cursor: the feed sequence number, in decimal (a cursor given out
/// under `read` rules is read from the feed position its rows are all older than).
fn parse_cursor(c: &str) -> Result<u64> {
    let (c, _) = split_walk(c)?;
    match c {
        "" => Ok(0),
        c if c.contains('.') => {
            let r = RuledCursor::parse(c)?;
            Ok(r.moving.map_or(r.after, |(_, prev)| prev) as u64)
        }
        c => c.parse().map_err(|_| {
            StoreError::Invalid(format!("cursor '{c}' is not a cursor this server gave out; start over from the beginning (cursor=0; since=0 on /v1/changes)"))
        }),
    }
}

impl SqliteStore {
    /// A page of the feed: of `user`'s rows and rows without an owner, or of every row.
    async fn feed_page(&self, whose: Whose, cursor: &str, limit: usize, tables: Option<&[String]>) -> Result<PullPage> {
        if let Whose::User(user) = &whose
            && crate::scope::has_read_rules(&self.inner.schema)
        {
            return self.feed_page_ruled(user.clone(), cursor, limit, tables, BTreeMap::new()).await;
        }
        let (user, peer) = match whose {
            Whose::User(u) => (Some(u), None),
            Whose::Peer(d) => (None, Some(d)),
            Whose::All => (None, None),
        };
        let walk_start = split_walk(cursor)?.1;
        let cursor = parse_cursor(cursor)?;
        let walk_start = walk_start.unwrap_or(cursor as i64);
        let selection =
            serde_json::to_string(&crate::selected_tables(&self.inner.schema, tables)?).expect("names serialize");
        self.read(move |inner, conn| {
            // One read transaction: the page and the "caught up" cursor come from one snapshot.
            let tx = conn.transaction()?;
            check_horizon(&tx, walk_start)?;
            // The page's bounds come from the feed index; the rows then come from one joined
            // query per table that has rows in the page. `+tbl` keeps SQLite from choosing the
            // (tbl, pk) key instead, which walks every row of the table for each page, so that
            // a page's cost would grow with the store.
            // One row past the page tells whether more wait.
            let mut page: Vec<(String, i64, String)> = tx
                .prepare_cached(if user.is_some() {
                    "SELECT tbl, seq, pk FROM _ferry_rows WHERE seq > ?1 AND (owner IS NULL OR owner = ?2)
                       AND +tbl IN (SELECT value FROM json_each(?4)) AND ?5 IS NULL
                     ORDER BY seq LIMIT ?3"
                } else {
                    // Every row (`?2`, the user, is NULL: both queries take the same parameters),
                    // but those a peer (`?5`) brought itself.
                    "SELECT tbl, seq, pk FROM _ferry_rows WHERE seq > ?1 AND ?2 IS NULL
                       AND +tbl IN (SELECT value FROM json_each(?4)) AND origin IS NOT ?5
                     ORDER BY seq LIMIT ?3"
                })?
                .query_map(params![cursor as i64, user, limit as i64 + 1, selection, peer], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let more = page.len() > limit;
            page.truncate(limit);
            let upto = if more {
                page.last().map_or(cursor as i64, |k| k.1)
            } else {
                // Caught up: skip past other users' rows too, so they are not scanned again.
                let max: i64 = tx.query_row(FEED_END, [], |r| r.get(0))?;
                max.max(cursor as i64)
            };
            let mut tables: Vec<&str> = page.iter().map(|(t, _, _)| t.as_str()).collect();
            tables.sort_unstable();
            tables.dedup();
            let mut rows = Vec::with_capacity(page.len());
            for table in tables {
                let ts = inner.table(table)?;
                if peer.is_some() {
                    // A peer's page leaves out the rows it brought, which may be most of the
                    // range: its rows are read by key.
                    let keys: Vec<&str> = page.iter().filter(|p| p.0 == table).map(|p| p.2.as_str()).collect();
                    let at: HashMap<&str, i64> =
                        page.iter().filter(|p| p.0 == table).map(|p| (p.2.as_str(), p.1)).collect();
                    for found in ferry_sqlite::stored(&tx, ts, &keys)? {
                        let Some(meta) = found.meta else { continue };
                        let values = if meta.alive { found.values } else { None };
                        let state = ferry_sqlite::state_of(&ts.table, &meta, values);
                        let seq = at.get(found.key.as_str()).copied().unwrap_or(meta.seq);
                        rows.push((seq, FeedRow { table: table.to_owned(), key: found.key, state }));
                    }
                    continue;
                }
                let top = page.last().map_or(upto, |k| k.1);
                for (seq, key, state) in ferry_sqlite::feed_states(&tx, ts, cursor as i64, top, user.as_deref())? {
                    rows.push((seq, FeedRow { table: table.to_owned(), key, state }));
                }
            }
            rows.sort_unstable_by_key(|(seq, _)| *seq);
            let rows = rows.into_iter().map(|(_, r)| r).collect();
            let cursor = if more { format!("{upto}~{walk_start}") } else { upto.to_string() };
            Ok(PullPage { rows, removed: Vec::new(), cursor, more })
        })
        .await
    }

    /// Stores a scope a cursor names by its hash.
    async fn keep_scope(&self, scope: crate::Scope) -> Result<()> {
        self.write(move |_, conn| {
            conn.execute(
                "INSERT OR IGNORE INTO _ferry_scopes (hash, body) VALUES (?1, ?2)",
                params![scope.hash(), scope.json()],
            )?;
            Ok(())
        })
        .await
    }

    /// A page of a user's feed under `read` rules: the rows they may read that changed since
    /// the cursor, and when what their rules select changed since, the rows that moved in
    /// (whatever their age) and out (as removals); see [`crate::scope`].
    async fn feed_page_ruled(
        &self,
        user: String,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
        subs: BTreeMap<String, Vec<ferry_core::rules::Rule>>,
    ) -> Result<PullPage> {
        use crate::scope::{FeedPlaces, FeedSql};
        let (cursor, walk_start) = split_walk(cursor)?;
        let c = RuledCursor::parse(cursor)?;
        let walk_start =
            walk_start.unwrap_or_else(|| c.moving.as_ref().map_or(c.after, |(_, prev)| *prev).min(c.after));
        let selected = crate::selected_tables(&self.inner.schema, tables)?;
        let selection = serde_json::to_string(&selected).expect("names serialize");
        let (page, fresh) = self
            .read(move |inner, conn| {
                let tx = conn.transaction()?;
                check_horizon(&tx, walk_start)?;
                let schema = &inner.schema;
                // The scope rows move to: pinned while they move, else what the rules select now.
                let pinned = match &c.moving {
                    Some((h1, _)) => stored_scope(&tx, h1)?,
                    None => None,
                };
                let s1 = match pinned {
                    Some(s) => s,
                    None => {
                        let mut s = scope_in(&tx, schema, &user, None)?;
                        s.subscribe(&subs, &subscription_sets(&tx, &subs, &user)?);
                        s
                    }
                };
                let s0 = match &c.s0 {
                    Some(h) => stored_scope(&tx, h)?.map_or_else(|| s1.clone(), |s| s.under(&s1)),
                    None => s1.clone(),
                };
                let moving = s0 != s1;
                // Rows moving in and out may be of any age: such a pass starts at the beginning.
                let (after, prev) = match c.moving {
                    Some((_, prev)) if moving => (c.after, prev),
                    _ if moving => (0, c.after),
                    _ => (c.after, c.after),
                };
                let places = FeedPlaces {
                    dialect: Dialect::Sqlite,
                    window: "r.seq > ?5",
                    window_range: "r.seq > ?5",
                    exit_window: "e.seq > ?5",
                    user: "?2",
                    first: 6,
                };
                let f = FeedSql::new(schema, &places, &s0, &s1, &selected);
                let branches: Vec<String> = f
                    .branches
                    .iter()
                    .map(|b| {
                        format!(
                            "SELECT r.tbl, r.seq, r.pk, {} AS visible FROM _ferry_rows r {}
                             WHERE r.seq > ?1 AND +r.tbl IN (SELECT value FROM json_each(?4)) AND {}",
                            b.visible, b.join, b.cond
                        )
                    })
                    .collect();
                let sql = format!("SELECT * FROM ({}) ORDER BY seq LIMIT ?3", branches.join(" UNION "));
                let mut binds: Vec<rusqlite::types::Value> = vec![
                    after.into(),
                    user.clone().into(),
                    (limit as i64 + 1).into(),
                    selection.clone().into(),
                    prev.into(),
                ];
                binds.extend(f.sqlite_values(&user, &s0, &s1).into_iter().map(sqlite_value));
                let mut page: Vec<(String, i64, String, bool)> = tx
                    .prepare_cached(&sql)?
                    .query_map(rusqlite::params_from_iter(binds), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let more = page.len() > limit;
                page.truncate(limit);
                let mut keys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for (t, _, k, visible) in &page {
                    if *visible {
                        keys.entry(t.as_str()).or_default().push(k.as_str());
                    }
                }
                let mut states: HashMap<(String, String), ferry_core::RowState> = HashMap::new();
                for (table, ks) in keys {
                    let ts = inner.table(table)?;
                    for stored in ferry_sqlite::stored(&tx, ts, &ks)? {
                        if let Some(meta) = stored.meta {
                            let values = if meta.alive { stored.values } else { None };
                            states.insert(
                                (table.to_owned(), stored.key),
                                ferry_sqlite::state_of(&ts.table, &meta, values),
                            );
                        }
                    }
                }
                let (mut rows, mut removed) = (Vec::new(), Vec::new());
                for (table, _, key, visible) in &page {
                    if !visible {
                        removed.push((table.clone(), key.clone()));
                    } else if let Some(state) = states.remove(&(table.clone(), key.clone())) {
                        rows.push(FeedRow { table: table.clone(), key: key.clone(), state });
                    }
                }
                let h1 = s1.hash();
                let cursor = match page.last() {
                    Some((_, last, _, _)) if more && moving => {
                        format!("{last}.{h1}.{prev}.{}~{walk_start}", c.s0.clone().unwrap_or_else(|| h1.clone()))
                    }
                    Some((_, last, _, _)) if more => format!("{last}.{h1}~{walk_start}"),
                    _ => {
                        let max: i64 = tx.query_row(FEED_END, [], |r| r.get(0))?;
                        format!("{}.{h1}", max.max(after).max(prev))
                    }
                };
                let fresh = stored_scope(&tx, &h1)?.is_none().then_some(s1);
                Ok((PullPage { rows, removed, cursor, more }, fresh))
            })
            .await?;
        if let Some(scope) = fresh {
            self.keep_scope(scope).await?;
        }
        Ok(page)
    }
}

/// The stored states of `keys` of a table (keys never seen left out), as feed rows.
fn stored_rows(tx: &rusqlite::Connection, ts: &ferry_sqlite::TableSql, keys: &[&str]) -> Result<Vec<FeedRow>> {
    let mut rows = Vec::with_capacity(keys.len());
    for found in ferry_sqlite::stored(tx, ts, keys)? {
        let Some(meta) = found.meta else { continue };
        let values = if meta.alive { found.values } else { None };
        let state = ferry_sqlite::state_of(&ts.table, &meta, values);
        rows.push(FeedRow { table: ts.table.name.clone(), key: found.key, state });
    }
    Ok(rows)
}

impl Store for SqliteStore {
    fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    fn device_schema(&self) -> &Schema {
        &self.inner.device_schema
    }

    fn id(&self) -> &str {
        &self.inner.id
    }

    async fn add_user(&self, name: &str) -> Result<User> {
        let name = crate::check_name("user", name)?;
        self.write(move |_, conn| {
            let id = uuid::Uuid::now_v7().to_string();
            match conn.execute("INSERT INTO _ferry_users (id, name) VALUES (?1, ?2)", params![id, name]) {
                Ok(_) => Ok(User { id, name }),
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                    Err(StoreError::Exists(format!("user '{name}' already exists; pick another name")))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn create_device(&self, user: &str, device: &str, admin: bool, role: Option<&str>) -> Result<NewToken> {
        let (user, device) = (user.to_owned(), crate::check_name("device", device)?);
        let role = crate::check_role(role)?;
        self.write(move |_, conn| {
            let user_id: Option<String> = conn
                .query_row("SELECT id FROM _ferry_users WHERE name = ?1 OR id = ?1", [&user], |r| r.get(0))
                .optional()?;
            let Some(user_id) = user_id else {
                return Err(StoreError::NotFound(format!(
                    "no user '{user}'; create it first with `ferry user add {user}`"
                )));
            };
            let token = new_token()?;
            let device_id = uuid::Uuid::now_v7().to_string();
            conn.execute(
                "INSERT INTO _ferry_devices (id, user_id, name, token_hash, admin, role) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![device_id, user_id, device, token_hash(&token), admin, role],
            )?;
            Ok(NewToken { device_id, token })
        })
        .await
    }

    async fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRecord>> {
        let user = user.map(str::to_owned);
        self.read(move |_, conn| {
            if let Some(u) = &user {
                let known: bool = conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM _ferry_users WHERE id = ?1 OR name = ?1)",
                    [u],
                    |r| r.get(0),
                )?;
                if !known {
                    return Err(crate::no_user(u));
                }
            }
            let rows = conn
                .prepare(
                    "SELECT d.id, d.name, d.user_id, u.name, d.admin, d.role, d.created_at, d.last_seen, d.revoked_at
                     FROM _ferry_devices d JOIN _ferry_users u ON u.id = d.user_id
                     WHERE ?1 IS NULL OR u.id = ?1 OR u.name = ?1 ORDER BY u.name, d.created_at, d.id",
                )?
                .query_map([&user], |r| {
                    Ok(DeviceRecord {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        user_id: r.get(2)?,
                        user_name: r.get(3)?,
                        admin: r.get(4)?,
                        role: r.get(5)?,
                        created_at: r.get(6)?,
                        last_seen: r.get(7)?,
                        revoked_at: r.get(8)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn device_seen(&self, device_id: &str) -> Result<()> {
        let device_id = device_id.to_owned();
        self.write(move |_, conn| {
            conn.execute(
                "UPDATE _ferry_devices SET last_seen = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
                [&device_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_devices(&self, user: Option<&str>, device: &str) -> Result<Vec<String>> {
        let (user, device) = (user.map(str::to_owned), device.to_owned());
        self.write(move |_, conn| {
            let sql = format!(
                "UPDATE _ferry_devices SET revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE {} RETURNING id",
                crate::DEVICES_NAMED.replace('$', "?")
            );
            let ids = conn
                .prepare(&sql)?
                .query_map(params![user, device], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            if ids.is_empty() {
                return Err(crate::no_device(user.as_deref(), &device));
            }
            Ok(ids)
        })
        .await
    }

    async fn revoked_among(&self, device_ids: &[String]) -> Result<Vec<String>> {
        let ids = serde_json::to_string(device_ids).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.read(move |_, conn| {
            let revoked = conn
                .prepare_cached(
                    "SELECT value FROM json_each(?1) WHERE value NOT IN
                     (SELECT id FROM _ferry_devices WHERE revoked_at IS NULL)",
                )?
                .query_map([ids], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(revoked)
        })
        .await
    }

    async fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        let hash = token_hash(token);
        self.read(move |_, conn| {
            let p = conn
                .prepare_cached(
                    "SELECT u.id, u.name, d.id, d.name, d.admin, d.role FROM _ferry_devices d JOIN _ferry_users u ON u.id = d.user_id
                     WHERE d.token_hash = ?1 AND d.revoked_at IS NULL",
                )?
                .query_row([hash], |r| {
                    Ok(Principal {
                        user_id: r.get(0)?,
                        user_name: r.get(1)?,
                        device_id: r.get(2)?,
                        device_name: r.get(3)?,
                        admin: r.get(4)?,
                        role: r.get(5)?,
                        peer: false,
                    })
                })
                .optional()?;
            Ok(p)
        })
        .await
    }

    async fn push(
        &self,
        who: &Principal,
        batch_id: &str,
        cursor: Option<&str>,
        rows: Vec<IncomingRow>,
    ) -> Result<PushOutcome> {
        // A cursor given out under `read` rules keeps the scope it names (`seq.scope`).
        let cursor = cursor.map(split_walk).transpose()?.map(|(c, _)| c);
        let scope_hash = cursor.and_then(|c| c.split_once('.')).map(|(_, h)| format!(".{h}"));
        let scope_hash = scope_hash.filter(|h| !h[1..].contains('.')).unwrap_or_default();
        let cursor = cursor.map(parse_cursor).transpose()?;
        let (who, batch_id) = (who.clone(), batch_id.to_owned());
        self.write(move |inner, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let seen: Option<(i64, i64, Option<String>)> = tx
                .prepare_cached(
                    "SELECT received, changed, refused FROM _ferry_batches WHERE device_id = ?1 AND batch_id = ?2",
                )?
                .query_row(params![who.device_id, batch_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if let Some((received, changed, refused)) = seen {
                // The refused rows are answered again, with their current version.
                let mut again = Vec::new();
                for (table, key) in crate::refused_keys(refused.as_deref())? {
                    let ts = inner.table(&table)?;
                    let current = ferry_sqlite::load_state(&tx, ts, &key)?.map(|(s, _)| s).unwrap_or_default();
                    again.push(crate::RefusedRow { table, key, current, reason: crate::Refusal::Stale });
                }
                return Ok(PushOutcome {
                    received: received as usize,
                    changed: changed as usize,
                    replayed: true,
                    cursor: None,
                    refused: again,
                });
            }
            let mut seq: i64 = tx.query_row(FEED_END, [], |r| r.get(0))?;
            let feed_end = seq;
            let received = rows.len();
            let mut tally = crate::Tally::new();
            let changed = merge_in(inner, &tx, &who, rows, &mut seq, &mut tally)?;
            tx.execute(
                "INSERT INTO _ferry_batches (device_id, batch_id, received, changed, refused) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![who.device_id, batch_id, received as i64, changed as i64, tally.refused_keys()],
            )?;
            tx.commit()?;
            if changed > 0 {
                // A commit by another process since our last announcement is news for
                // everyone (the file watcher would no longer see it as past ours).
                if feed_end > inner.announced.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = inner.notices.send(crate::Notice::anyone());
                }
                let origin = tally.notice_origin(&who);
                inner.announce(seq, crate::Notice::of(&mut tally, origin));
            }
            Ok(PushOutcome {
                received,
                changed,
                replayed: false,
                cursor: (tally.caught_up() && cursor == Some(feed_end as u64)).then(|| format!("{seq}{scope_hash}")),
                refused: tally.refused,
            })
        })
        .await
    }

    async fn pull_subscribed(
        &self,
        who: &Principal,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
        subscriptions: &[String],
    ) -> Result<PullPage> {
        if who.peer {
            return self.feed_page(Whose::Peer(who.device_id.clone()), cursor, limit, tables).await;
        }
        let subs = crate::scope::subscriptions(&self.inner.schema, subscriptions)?;
        if crate::scope::has_read_rules(&self.inner.schema) {
            return self.feed_page_ruled(who.user_id.clone(), cursor, limit, tables, subs).await;
        }
        self.feed_page(Whose::User(who.user_id.clone()), cursor, limit, tables).await
    }

    async fn scan(&self, cursor: &str, limit: usize) -> Result<PullPage> {
        self.feed_page(Whose::All, cursor, limit, None).await
    }

    async fn scope(&self, user_id: &str) -> Result<crate::Scope> {
        let user = user_id.to_owned();
        self.read(move |inner, conn| scope_in(conn, &inner.schema, &user, None)).await
    }

    async fn compact(&self, before_ms: u64) -> Result<crate::Compacted> {
        let bound = crate::clock_bound(before_ms);
        // The candidates first (one read), then deleted a chunk per transaction, each checked
        // again: a writer waits at most for one chunk, and a key written since stays.
        let first = bound.clone();
        let candidates: Vec<(String, String)> = self
            .read(move |_, conn| {
                let rows = conn
                    .prepare("SELECT tbl, pk FROM _ferry_rows WHERE alive = 0 AND alive_at < ?1")?
                    .query_map([&first], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        let mut out = crate::Compacted::default();
        for chunk in candidates.chunks(crate::COMPACT_CHUNK) {
            let (chunk, bound) = (chunk.to_vec(), bound.clone());
            let (n, top) = self
                .write(move |_, conn| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let (mut n, mut top) = (0u64, 0i64);
                    for (t, k) in &chunk {
                        let gone: Option<(i64, String)> = tx
                            .prepare_cached(
                                "DELETE FROM _ferry_rows WHERE tbl = ?1 AND pk = ?2 AND alive = 0 AND alive_at < ?3
                                 RETURNING seq, alive_at",
                            )?
                            .query_row(params![t, k, bound], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()?;
                        if let Some((seq, deleted_at)) = gone {
                            n += 1;
                            top = top.max(seq);
                            // A base that predates the deletion stays: that peer never saw
                            // it, and its link's catch-up tells the deletion from a row
                            // never received by it.
                            tx.prepare_cached(
                                "DELETE FROM _ferry_peer_bases
                                 WHERE tbl = ?1 AND pk = ?2 AND json_extract(clocks, '$.\"*\"') = ?3",
                            )?
                            .execute(params![t, k, deleted_at])?;
                        }
                    }
                    raise_horizon(&tx, top)?;
                    tx.commit()?;
                    Ok((n, top))
                })
                .await?;
            out.tombstones += n;
            out.horizon = out.horizon.max(top);
        }
        let bound_ms = before_ms as i64;
        let (exits, batches, horizon) = self
            .write(move |_, conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let horizon: i64 = tx
                    .query_row("SELECT COALESCE(CAST(value AS INTEGER), 0) FROM _ferry_store WHERE key = 'horizon'", [], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0);
                // Old reaches serve only cursors the horizon has made too old.
                let exits = tx.execute("DELETE FROM _ferry_exits WHERE seq <= ?1", [horizon])?;
                let batches = tx.execute(
                    "DELETE FROM _ferry_batches WHERE applied_at < strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000.0, 'unixepoch')",
                    [bound_ms],
                )?;
                tx.execute(
                    "INSERT INTO _ferry_store (key, value) VALUES ('compacted_before', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                    [bound_ms],
                )?;
                tx.commit()?;
                Ok((exits as u64, batches as u64, horizon))
            })
            .await?;
        out.exits = exits;
        out.batches = batches;
        out.horizon = out.horizon.max(horizon);
        Ok(out)
    }

    async fn export(&self, tables: Vec<String>, out: tokio::sync::mpsc::Sender<Vec<FeedRow>>) -> Result<String> {
        for t in &tables {
            self.inner.table(t)?;
        }
        self.read(move |inner, conn| {
            // One read transaction: every table as of one snapshot, and its feed position.
            let tx = conn.transaction()?;
            let end: i64 = tx.query_row(FEED_END, [], |r| r.get(0))?;
            for table in &tables {
                let ts = inner.table(table)?;
                let mut after = String::new();
                loop {
                    let keys: Vec<String> = tx
                        .prepare_cached("SELECT pk FROM _ferry_rows WHERE tbl = ?1 AND pk > ?2 ORDER BY pk LIMIT ?3")?
                        .query_map(params![table, after, crate::EXPORT_ROWS as i64], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    let Some(last) = keys.last() else { break };
                    after = last.clone();
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    out.blocking_send(stored_rows(&tx, ts, &refs)?)
                        .map_err(|_| StoreError::Unavailable("the snapshot's reader stopped".into()))?;
                }
            }
            Ok(end.to_string())
        })
        .await
    }

    async fn feed_snapshot(
        &self,
        who: &Principal,
        tables: Option<Vec<String>>,
        page: usize,
        out: tokio::sync::mpsc::Sender<Vec<FeedRow>>,
    ) -> Result<String> {
        use crate::scope::FeedSql;
        let (selected, ruled) = crate::snapshot_of(&self.inner.schema, who, tables.as_deref())?;
        let user = who.user_id.clone();
        let (cursor, fresh) = self
            .read(move |inner, conn| {
                // One read transaction: the rows as of one moment, and where the feed ends then.
                // The rows are found by what the user may read now, not in feed order (no
                // sort, each row read once), and sent a table's batch at a time.
                let tx = conn.transaction()?;
                let scope = scope_in(&tx, &inner.schema, &user, None)?;
                let f = FeedSql::visible(&inner.schema, Dialect::Sqlite, &selected);
                let mut binds: Vec<rusqlite::types::Value> = vec![user.clone().into()];
                binds.extend(f.sqlite_values(&user, &scope, &scope).into_iter().map(sqlite_value));
                let send = |table: &str, keys: Vec<String>| -> Result<()> {
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    out.blocking_send(stored_rows(&tx, inner.table(table)?, &refs)?)
                        .map_err(|_| StoreError::Unavailable("the snapshot's reader stopped".into()))
                };
                let mut batches = crate::KeyBatches::new(page);
                if let Some(sql) = f.keys_query(Dialect::Sqlite) {
                    let mut stmt = tx.prepare(&sql)?;
                    let mut rows = stmt.query(rusqlite::params_from_iter(binds.iter()))?;
                    while let Some(row) = rows.next()? {
                        if let Some((table, keys)) = batches.add(row.get(0)?, row.get(1)?) {
                            send(&table, keys)?;
                        }
                    }
                }
                for (table, keys) in batches.rest() {
                    send(&table, keys)?;
                }
                let end: i64 = tx.query_row(FEED_END, [], |r| r.get(0))?;
                if !ruled {
                    return Ok((end.to_string(), None));
                }
                let hash = scope.hash();
                let fresh = stored_scope(&tx, &hash)?.is_none().then_some(scope);
                Ok((format!("{end}.{hash}"), fresh))
            })
            .await?;
        if let Some(scope) = fresh {
            self.keep_scope(scope).await?;
        }
        Ok(cursor)
    }

    async fn restore(
        &self,
        who: &Principal,
        mut steps: tokio::sync::mpsc::Receiver<crate::RestoreStep>,
    ) -> Result<crate::Restored> {
        let who = who.clone();
        // One write transaction: other writers wait until the restore commits or rolls back.
        self.write(move |inner, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut seq: i64 = tx.query_row(FEED_END, [], |r| r.get(0))?;
            let feed_end = seq;
            let mut tally = crate::Tally::new();
            let mut done = crate::Restored::default();
            while let Some(step) = steps.blocking_recv() {
                match step {
                    crate::RestoreStep::Rows(rows) => {
                        done.rows += rows.len() as u64;
                        done.changed += merge_in(inner, &tx, &who, rows, &mut seq, &mut tally)? as u64;
                    }
                    crate::RestoreStep::Commit => {
                        tx.commit()?;
                        done.committed = true;
                        if done.changed > 0 {
                            if feed_end > inner.announced.load(std::sync::atomic::Ordering::SeqCst) {
                                let _ = inner.notices.send(crate::Notice::anyone());
                            }
                            let origin = tally.notice_origin(&who);
                            inner.announce(seq, crate::Notice::of(&mut tally, origin));
                        }
                        return Ok(done);
                    }
                }
            }
            // Ended without a commit: the transaction rolls back as it is dropped.
            Ok(done)
        })
        .await
    }

    async fn count_rows(&self, tables: Vec<String>) -> Result<u64> {
        for t in &tables {
            self.inner.table(t)?;
        }
        self.read(move |_, conn| {
            let mut n = 0i64;
            for t in &tables {
                n += conn
                    .prepare_cached("SELECT count(*) FROM _ferry_rows WHERE tbl = ?1")?
                    .query_row([t], |r| r.get::<_, i64>(0))?;
            }
            Ok(n as u64)
        })
        .await
    }

    async fn save_full_sync(&self, run: crate::FullSyncRun) -> Result<()> {
        let text = crate::link_json(&run);
        self.write(move |_, conn| {
            conn.prepare_cached(
                "INSERT INTO _ferry_full_syncs (id, started_ms, run) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET run = excluded.run",
            )?
            .execute(params![run.id, run.started_ms as i64, text])?;
            Ok(())
        })
        .await
    }

    async fn full_syncs(&self, limit: usize) -> Result<Vec<crate::FullSyncRun>> {
        self.read(move |_, conn| {
            let rows = conn
                .prepare_cached("SELECT run, cancel FROM _ferry_full_syncs ORDER BY started_ms DESC, id DESC LIMIT ?1")?
                .query_map([limit as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.iter().map(|(t, c)| crate::full_sync_of(t, *c)).collect()
        })
        .await
    }

    async fn full_sync(&self, id: &str) -> Result<Option<crate::FullSyncRun>> {
        let id = id.to_owned();
        self.read(move |_, conn| {
            let row = conn
                .prepare_cached("SELECT run, cancel FROM _ferry_full_syncs WHERE id = ?1")?
                .query_row([&id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
                .optional()?;
            row.map(|(t, c)| crate::full_sync_of(&t, c)).transpose()
        })
        .await
    }

    async fn cancel_full_sync(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |_, conn| {
            match conn.prepare_cached("UPDATE _ferry_full_syncs SET cancel = 1 WHERE id = ?1")?.execute([&id])? {
                0 => Err(crate::no_full_sync(&id)),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn set_link_start(&self, peer: &str, way: &str, cursor: &str) -> Result<()> {
        let (peer, way, cursor) = (peer.to_owned(), way.to_owned(), cursor.to_owned());
        self.write(move |_, conn| {
            conn.prepare_cached(
                "INSERT INTO _ferry_link_starts (peer, way, cursor) VALUES (?1, ?2, ?3)
                 ON CONFLICT (peer, way) DO UPDATE SET cursor = excluded.cursor",
            )?
            .execute(params![peer, way, cursor])?;
            Ok(())
        })
        .await
    }

    async fn take_link_starts(&self, peer: &str) -> Result<Vec<(String, String)>> {
        let peer = peer.to_owned();
        self.write(move |_, conn| {
            let starts = conn
                .prepare_cached("DELETE FROM _ferry_link_starts WHERE peer = ?1 RETURNING way, cursor")?
                .query_map([&peer], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(starts)
        })
        .await
    }

    async fn compacted_before(&self) -> Result<u64> {
        self.read(|_, conn| {
            let at: Option<i64> = conn
                .query_row("SELECT CAST(value AS INTEGER) FROM _ferry_store WHERE key = 'compacted_before'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(at.unwrap_or(0).max(0) as u64)
        })
        .await
    }

    async fn admin_password(&self) -> Result<Option<String>> {
        self.read(|_, conn| {
            Ok(conn
                .query_row("SELECT value FROM _ferry_store WHERE key = 'admin_password'", [], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn set_admin_password(&self, hash: Option<&str>) -> Result<()> {
        let hash = hash.map(str::to_owned);
        self.write(move |_, conn| {
            match &hash {
                Some(h) => conn.execute(
                    "INSERT INTO _ferry_store (key, value) VALUES ('admin_password', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [h],
                )?,
                None => conn.execute("DELETE FROM _ferry_store WHERE key = 'admin_password'", [])?,
            };
            Ok(())
        })
        .await
    }

    async fn feed_position(&self) -> Result<String> {
        self.read(|_, conn| Ok(conn.query_row(FEED_END, [], |r| r.get::<_, i64>(0))?.to_string())).await
    }

    async fn row_digests(&self, table: &str, tombstones_from_ms: u64) -> Result<Vec<ferry_core::digest::Entry>> {
        let table = table.to_owned();
        self.read(move |inner, conn| {
            let ts = inner.table(&table)?;
            Ok(ferry_sqlite::digests(conn, ts, &crate::clock_bound(tombstones_from_ms))?)
        })
        .await
    }

    async fn states(&self, table: &str, keys: Vec<String>) -> Result<Vec<(String, ferry_core::RowState)>> {
        let table = table.to_owned();
        self.read(move |inner, conn| {
            let ts = inner.table(&table)?;
            let mut out = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(500) {
                let keys: Vec<&str> = chunk.iter().map(String::as_str).collect();
                for s in ferry_sqlite::stored(conn, ts, &keys)? {
                    if let Some(meta) = &s.meta {
                        let values = if meta.alive { s.values } else { None };
                        out.push((s.key, ferry_sqlite::state_of(&ts.table, meta, values)));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    fn set_role(&self, role: &str) {
        let _ = self.inner.role.set(role.to_owned());
    }

    fn role(&self) -> Option<&str> {
        self.inner.role.get().map(String::as_str)
    }

    fn pool_use(&self) -> crate::PoolUse {
        // The connections are all opened with the store; one is busy while it is locked.
        let all = 1 + self.inner.readers.len();
        crate::PoolUse {
            max: all,
            open: all,
            in_use: std::iter::once(&self.inner.writer)
                .chain(&self.inner.readers)
                .filter(|c| c.try_lock().is_err())
                .count(),
            waiting: self.inner.waiting.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    async fn users(&self) -> Result<Vec<User>> {
        self.read(|_, conn| {
            let users = conn
                .prepare_cached("SELECT id, name FROM _ferry_users ORDER BY name")?
                .query_map([], |r| Ok(User { id: r.get(0)?, name: r.get(1)? }))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(users)
        })
        .await
    }

    async fn adopt_users(&self, users: Vec<User>) -> Result<(usize, Vec<String>)> {
        self.write(move |_, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (mut added, mut refused) = (0, Vec::new());
            for user in &users {
                let name = crate::check_name("user", &user.name)?;
                let here: Option<String> = tx
                    .prepare_cached("SELECT id FROM _ferry_users WHERE name = ?1")?
                    .query_row([&name], |r| r.get(0))
                    .optional()?;
                match here {
                    Some(id) if id == user.id => {}
                    Some(id) => refused.push(crate::user_clash(user, &format!("id {id}"))),
                    None => {
                        let n = tx
                            .prepare_cached("INSERT OR IGNORE INTO _ferry_users (id, name) VALUES (?1, ?2)")?
                            .execute(params![user.id, name])?;
                        if n == 0 {
                            refused.push(crate::user_clash(user, "another name"));
                        }
                        added += n;
                    }
                }
            }
            tx.commit()?;
            Ok((added, refused))
        })
        .await
    }

    async fn peer_bases(
        &self,
        device: &str,
        keys: Vec<(String, String)>,
    ) -> Result<HashMap<(String, String), ferry_core::strategy::RowClocks>> {
        let device = device.to_owned();
        self.read(move |_, conn| {
            let mut stmt = conn
                .prepare_cached("SELECT clocks FROM _ferry_peer_bases WHERE device_id = ?1 AND tbl = ?2 AND pk = ?3")?;
            let mut out = HashMap::new();
            for (table, key) in keys {
                if let Some(text) = stmt.query_row(params![device, table, key], |r| r.get::<_, String>(0)).optional()? {
                    out.insert((table, key), crate::clocks_of_text(&text)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn save_peer_bases_from(
        &self,
        device: &str,
        mut rows: tokio::sync::mpsc::Receiver<Vec<(String, String, ferry_core::strategy::RowClocks)>>,
    ) -> Result<u64> {
        let device = device.to_owned();
        self.write(move |_, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut n = 0u64;
            while let Some(batch) = rows.blocking_recv() {
                save_bases(&tx, &device, &batch)?;
                n += batch.len() as u64;
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    async fn save_peer_bases(
        &self,
        device: &str,
        rows: Vec<(String, String, ferry_core::strategy::RowClocks)>,
    ) -> Result<()> {
        let device = device.to_owned();
        self.write(move |_, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            save_bases(&tx, &device, &rows)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn peer_backlog(&self, who: &Principal, cursor: &str, tables: &[String]) -> Result<u64> {
        let after = parse_cursor(cursor)? as i64;
        let (device, selection) = (who.device_id.clone(), serde_json::to_string(tables).expect("names serialize"));
        self.read(move |_, conn| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM _ferry_rows WHERE seq > ?1 AND origin IS NOT ?2
                       AND tbl IN (SELECT value FROM json_each(?3))",
                )?
                .query_row(params![after, device, selection], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn save_link(&self, status: crate::PeerStatus) -> Result<()> {
        self.write(move |_, conn| {
            conn.prepare_cached(
                "INSERT INTO _ferry_links (peer, status) VALUES (?1, ?2)
                 ON CONFLICT (peer) DO UPDATE SET status = excluded.status",
            )?
            .execute(params![status.name, crate::link_json(&status)])?;
            Ok(())
        })
        .await
    }

    async fn links(&self) -> Result<Vec<crate::PeerStatus>> {
        self.read(|_, conn| {
            let texts = conn
                .prepare_cached("SELECT status FROM _ferry_links ORDER BY peer")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            texts.iter().map(|t| crate::link_of_json(t)).collect()
        })
        .await
    }

    async fn request_resync(&self, peer: &str) -> Result<()> {
        let peer = peer.to_owned();
        self.write(move |_, conn| {
            match conn.prepare_cached("UPDATE _ferry_links SET resync = 1 WHERE peer = ?1")?.execute([&peer])? {
                0 => Err(crate::no_link(&peer)),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn take_resync(&self, peer: &str) -> Result<bool> {
        let peer = peer.to_owned();
        self.write(move |_, conn| {
            let n = conn
                .prepare_cached("UPDATE _ferry_links SET resync = 0 WHERE peer = ?1 AND resync = 1")?
                .execute([&peer])?;
            Ok(n > 0)
        })
        .await
    }

    async fn log_sync(&self, entry: crate::SyncLogEntry, keep_ms: u64) -> Result<i64> {
        self.write(move |_, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let horizon = entry.at_ms.saturating_sub(keep_ms) as i64;
            tx.prepare_cached("DELETE FROM _ferry_sync_log WHERE at_ms < ?1")?.execute([horizon])?;
            tx.prepare_cached("INSERT INTO _ferry_sync_log (at_ms, peer, entry) VALUES (?1, ?2, ?3)")?
                .execute(params![entry.at_ms as i64, entry.peer, crate::link_json(&entry)])?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn sync_log(&self, peer: Option<&str>, limit: usize) -> Result<Vec<crate::SyncLogEntry>> {
        let peer = peer.map(str::to_owned);
        self.read(move |_, conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT id, entry FROM _ferry_sync_log WHERE ?1 IS NULL OR peer = ?1 ORDER BY id DESC LIMIT ?2",
                )?
                .query_map(params![peer, limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.iter()
                .map(|(id, text)| {
                    let mut e: crate::SyncLogEntry = crate::link_of_json(text)?;
                    e.id = *id;
                    Ok(e)
                })
                .collect()
        })
        .await
    }

    async fn conflicts(&self, filter: ConflictFilter) -> Result<Vec<ConflictRecord>> {
        self.read(move |_, conn| {
            let cond = match filter {
                ConflictFilter::All => "1",
                ConflictFilter::Open => "resolved_at IS NULL",
                ConflictFilter::Resolved => "resolved_at IS NOT NULL",
            };
            let sql = format!("SELECT {CONFLICT_COLUMNS} FROM _ferry_conflicts WHERE {cond} ORDER BY id DESC");
            let rows = conn.prepare(&sql)?.query_map([], conflict_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn conflict_counts(&self) -> Result<Vec<crate::ConflictCount>> {
        self.read(move |_, conn| {
            let rows = conn
                .prepare_cached(crate::CONFLICT_COUNTS_SQL)?
                .query_map([], |r| {
                    Ok(crate::ConflictCount {
                        table: r.get(0)?,
                        strategy: r.get(1)?,
                        open: r.get(2)?,
                        count: r.get::<_, i64>(3)?.max(0) as u64,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn resolve_conflict(&self, id: i64, keep: ConflictSide) -> Result<ConflictRecord> {
        self.write(move |inner, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sql = format!("SELECT {CONFLICT_COLUMNS} FROM _ferry_conflicts WHERE id = ?1");
            let record = tx.prepare(&sql)?.query_row([id], conflict_row).optional()?;
            let record = crate::conflicts::check_open(id, record.as_ref())?;
            let ts = inner.table(&record.table)?;
            let registers = crate::conflicts::kept_registers(&ts.table, record, keep).map_err(StoreError::Internal)?;
            let Some((mut state, meta)) = ferry_sqlite::load_state(&tx, ts, &record.key)? else {
                return Err(StoreError::NotFound(format!("{} '{}' no longer exists", record.table, record.key)));
            };
                        if let Some(c) = crate::conflicts::overwritten_by_resolution(&ts.table, record, keep, &state) {
                insert_conflict(&tx, &c)?;
            }
            let at = ferry_core::Clock::new(inner.site, state.max_clock()).tick(crate::wall_ms());
            ferry_core::strategy::write_registers(&mut state, registers, at);
            let seq: i64 = tx.query_row(NEXT_SEQ, [], |r| r.get(0))?;
            let extra = Extra { seq, owner: meta.owner.as_deref(), origin: Some("manual"), pending: 0, change: None };
            ferry_sqlite::store_state(&tx, ts, &record.key, &state, &extra)?;
            write_reach(&tx, &ts.table.name, &record.key, crate::scope::reach_of(&ts.table, &record.key, &state).as_deref())?;
            let notice = crate::Notice::of_row(&ts.table, &record.key, &state, meta.owner.clone(), None);
            let winner: std::collections::BTreeMap<&str, &str> =
                record.fields.iter().map(|f| (f.as_str(), keep.name())).collect();
            tx.execute(
                "UPDATE _ferry_conflicts SET resolved_by = 'manual', resolved_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                   winner = ?2 WHERE id = ?1",
                params![id, serde_json::to_string(&winner).expect("strings serialize")],
            )?;
            let done = tx.prepare(&sql)?.query_row([id], conflict_row)?;
            tx.commit()?;
            inner.announce(seq, notice);
            Ok(done)
        })
        .await
    }

    async fn get_row(&self, who: &Principal, table: &str, key: &str) -> Result<Option<ferry_core::RowState>> {
        let (user, table, key) = (who.user_id.clone(), table.to_owned(), key.to_owned());
        self.read(move |inner, conn| {
            let ts = inner.table(&table)?;
            let Some((state, meta)) = ferry_sqlite::load_state(conn, ts, &key)? else { return Ok(None) };
            if let Some(reach) = crate::scope::reach_of(&ts.table, &key, &state) {
                let scope = scope_in(conn, &inner.schema, &user, Some(&ts.table.name))?;
                return Ok(scope.admits(&ts.table, &reach, &user).then_some(state));
            }
            Ok(meta.owner.is_none_or(|o| o == user).then_some(state))
        })
        .await
    }

    async fn file_refs(&self, who: &Principal, hashes: &[String]) -> Result<BTreeSet<String>> {
        let (user, list) = (who.user_id.clone(), serde_json::to_string(hashes).expect("strings serialize"));
        let peer = who.peer;
        self.read(move |inner, conn| {
            let mut found = BTreeSet::new();
            for (t, col, owner) in crate::file_columns(&inner.schema) {
                let (q, c) = (quote(&t.name), quote(col));
                // A peer reads every row, so every referenced file.
                let owner = owner.filter(|_| !peer);
                let mut sql = format!("SELECT DISTINCT {c} FROM {q} WHERE {c} IN (SELECT value FROM json_each(?1))");
                if let Some(rule) = crate::scope::read_rule(t).filter(|_| !peer) {
                    // The rule as SQL over the table, its subqueries run as they stand.
                    let r = rule.compile(Dialect::Sqlite, &q, 2);
                    sql.push_str(&format!(" AND {}", r.sql));
                    let mut binds: Vec<rusqlite::types::Value> = vec![list.clone().into()];
                    binds.extend(r.slots.iter().map(|s| sqlite_value(s.value(&user, &[]))));
                    let mut stmt = conn.prepare_cached(&sql)?;
                    found.extend(
                        stmt.query_map(rusqlite::params_from_iter(binds), |r| r.get::<_, String>(0))?
                            .collect::<rusqlite::Result<Vec<_>>>()?,
                    );
                    continue;
                }
                if let Some(o) = owner {
                    sql.push_str(&format!(" AND {} = ?2", quote(o)));
                }
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = if owner.is_some() {
                    stmt.query_map(params![list, user], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                } else {
                    stmt.query_map(params![list], |r| r.get::<_, String>(0))?.collect()
                }?;
                found.extend(rows);
            }
            Ok(found)
        })
        .await
    }

    async fn referenced_files(&self) -> Result<BTreeSet<String>> {
        self.read(move |inner, conn| {
            let mut found = BTreeSet::new();
            for (t, col, _) in crate::file_columns(&inner.schema) {
                let c = quote(col);
                let sql = format!("SELECT DISTINCT {c} FROM {} WHERE {c} IS NOT NULL", quote(&t.name));
                let mut stmt = conn.prepare_cached(&sql)?;
                found.extend(stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?);
            }
            Ok(found)
        })
        .await
    }

    fn notices(&self) -> tokio::sync::broadcast::Receiver<crate::Notice> {
        let rx = self.inner.notices.subscribe();
        // Commits by other processes (`ferry conflicts resolve`, a second server on the same
        // file) are found by watching the file: SQLite's data_version moves on every commit by
        // another connection, and a feed position past what this process announced is news.
        if !self.inner.watching.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let inner = Arc::downgrade(&self.inner);
            rt.spawn(watch(inner));
        }
        rx
    }

    async fn conflict(&self, id: i64) -> Result<Option<ConflictRecord>> {
        self.read(move |_, conn| {
            let sql = format!("SELECT {CONFLICT_COLUMNS} FROM _ferry_conflicts WHERE id = ?1");
            Ok(conn.prepare(&sql)?.query_row([id], conflict_row).optional()?)
        })
        .await
    }
}

const CONFLICT_COLUMNS: &str =
    "id, tbl, pk, kind, fields, strategy, stored, incoming, winner, resolved_by, resolved_at, detected_at";

/// Watches the store's file for commits by other processes (see [`SqliteStore::notices`]).
async fn watch(inner: std::sync::Weak<Inner>) {
    let Some(path) = inner.upgrade().map(|i| i.path.clone()) else { return };
    let Ok(conn) = ferry_sqlite::open(&path) else { return };
    let max_seq = |c: &Connection| c.query_row(FEED_END, [], |r| r.get::<_, i64>(0));
    let version = |c: &Connection| c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0));
    let Ok(mut last_version) = version(&conn) else { return };
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let Ok(v) = version(&conn) else { continue };
        if v == last_version {
            continue;
        }
        last_version = v;
        let Ok(seq) = max_seq(&conn) else { continue };
        if seq > inner.announced.load(std::sync::atomic::Ordering::SeqCst) {
            inner.announce(seq, crate::Notice::anyone());
        }
    }
}

/// Logs a conflict; a second one with the same dedupe key is ignored (a retried push).
fn insert_conflict(tx: &rusqlite::Transaction<'_>, c: &crate::conflicts::NewConflict) -> Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO _ferry_conflicts
           (tbl, pk, kind, fields, strategy, stored, incoming, winner, resolved_by, resolved_at, dedupe)
         VALUES (?1, ?2, ?10, ?3, ?8, ?4, ?5, ?6, CASE WHEN ?9 THEN ?8 END,
                 CASE WHEN ?9 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END, ?7)",
    )?
    .execute(params![
        c.table, c.key, c.fields, c.stored, c.incoming, c.winner, c.dedupe, c.strategy, c.resolved, c.kind
    ])?;
    Ok(())
}

/// The site ids of devices that hold a role now: the device and its role.
fn role_sites(tx: &rusqlite::Transaction<'_>) -> Result<HashMap<ferry_core::SiteId, (String, String)>> {
    let rows = tx
        .prepare_cached(crate::ROLE_SITES_SQL)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(crate::Deciding::role_sites(rows))
}

/// The devices `sites` are registered to.
fn site_devices(
    tx: &rusqlite::Transaction<'_>,
    sites: &[String],
) -> Result<HashMap<ferry_core::SiteId, crate::SiteDevice>> {
    let mut stmt = tx.prepare_cached(&format!("{} = ?1", crate::SITE_DEVICES_SQL))?;
    let mut rows = Vec::new();
    for site in sites {
        if let Some(r) =
            stmt.query_row([site], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))).optional()?
        {
            rows.push(r);
        }
    }
    Ok(crate::site_devices(rows))
}

/// What the subqueries of the `write` rules of `tables` select for `user` now.
fn write_sets<'a>(
    conn: &rusqlite::Connection,
    schema: &Schema,
    tables: impl IntoIterator<Item = &'a str>,
    user: &str,
) -> Result<HashMap<String, crate::rules::Selected>> {
    let mut out = HashMap::new();
    for (name, selects) in crate::rules::write_subqueries(schema, tables) {
        let mut sets = Vec::with_capacity(selects.len());
        for select in selects {
            let q = select.compile(ferry_core::rules::Dialect::Sqlite, 1);
            let binds: Vec<rusqlite::types::Value> = q.slots.iter().map(|s| sqlite_value(s.value(user, &[]))).collect();
            let mut stmt = conn.prepare_cached(&q.sql)?;
            let values = stmt
                .query_map(rusqlite::params_from_iter(binds), |r| {
                    let value = match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Integer(i) => ferry_core::Value::Integer(i),
                        rusqlite::types::ValueRef::Text(t) => {
                            ferry_core::Value::Text(String::from_utf8_lossy(t).into())
                        }
                        _ => ferry_core::Value::Null,
                    };
                    Ok((r.get::<_, String>(1)?, value))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            sets.push(values);
        }
        out.insert(name.to_owned(), sets);
    }
    Ok(out)
}

fn sqlite_value(v: ferry_core::Value) -> rusqlite::types::Value {
    match v {
        ferry_core::Value::Null => rusqlite::types::Value::Null,
        ferry_core::Value::Integer(i) => rusqlite::types::Value::Integer(i),
        ferry_core::Value::Real(r) => rusqlite::types::Value::Real(r),
        ferry_core::Value::Text(t) => rusqlite::types::Value::Text(t),
        ferry_core::Value::Blob(b) => rusqlite::types::Value::Blob(b),
    }
}

fn conflict_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConflictRecord> {
    crate::conflicts::record(
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get_ref(3)?.as_str()?,
        r.get_ref(4)?.as_str()?,
        r.get_ref(5)?.as_str()?,
        r.get_ref(6)?.as_str()?,
        r.get_ref(7)?.as_str()?,
        r.get_ref(8)?.as_str()?,
        r.get_ref(9)?.as_str_or_null()?,
        r.get(10)?,
        r.get(11)?,
    )
    .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))
}

/// Brings the bookkeeping owner of every row in line with the table's `owner` option (after
/// the option was added, removed or changed), moving those rows to the end of the feed so
/// that the users who may now read them receive them. Rows without an owner belong to nobody.
fn backfill_owner(tx: &rusqlite::Transaction<'_>, table: &ferry_core::schema::Table) -> Result<()> {
    use ferry_core::schema::quote;
    let sql = match &table.options.owner {
        Some(o) => format!(
            "SELECT r.pk, coalesce(t.{o}, '') FROM _ferry_rows r LEFT JOIN {t} t ON t.{pk} = r.pk
             WHERE r.tbl = ?1 AND r.owner IS NOT coalesce(t.{o}, r.owner, '')",
            o = quote(o),
            t = quote(&table.name),
            pk = quote(&table.pk_column().name),
        ),
        None => "SELECT pk, NULL FROM _ferry_rows WHERE tbl = ?1 AND owner IS NOT NULL".to_owned(),
    };
    let changes: Vec<(String, Option<String>)> =
        tx.prepare(&sql)?.query_map([&table.name], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    if changes.is_empty() {
        return Ok(());
    }
    let mut seq: i64 = tx.query_row(FEED_END, [], |r| r.get(0))?;
    let mut update = tx.prepare("UPDATE _ferry_rows SET owner = ?1, seq = ?2 WHERE tbl = ?3 AND pk = ?4")?;
    for (pk, owner) in changes {
        seq += 1;
        update.execute(params![owner, seq, table.name, pk])?;
    }
    Ok(())
}

/// Keeps a row's reach beside its clocks (tables with a `read` rule only); a changed reach
/// leaves the old one in `_ferry_exits` (the trigger).
fn write_reach(tx: &rusqlite::Transaction<'_>, table: &str, key: &str, reach: Option<&str>) -> Result<()> {
    if let Some(reach) = reach {
        tx.prepare_cached("UPDATE _ferry_rows SET reach = ?1 WHERE tbl = ?2 AND pk = ?3 AND reach IS NOT ?1")?
            .execute(params![reach, table, key])?;
    }
    Ok(())
}

/// Brings every row's reach in line with the table's `read` rule (after the rule was added
/// or changed, or for rows written by another program), moving those rows to the end of the
/// feed so that the users who may now read them receive them.
fn backfill_reach(tx: &rusqlite::Transaction<'_>, table: &ferry_core::schema::Table) -> Result<()> {
    use ferry_core::rules::Dialect;
    let pk = table.pk_column().name.clone();
    let sql = match crate::scope::read_rule(table) {
        Some(rule) => {
            let live = crate::scope::reach_sql(rule, table, Dialect::Sqlite, |c| format!("t.{}", quote(c)));
            let dead = crate::scope::reach_sql(rule, table, Dialect::Sqlite, |c| {
                if c == pk {
                    "r.pk".to_owned()
                } else {
                    format!("json_extract(r.dead, '$.\"{}\"')", c.replace('\'', "''"))
                }
            });
            format!(
                "SELECT pk, reach FROM (
                   SELECT r.pk, r.reach AS was, CASE WHEN t.{q} IS NOT NULL THEN {live} ELSE {dead} END AS reach
                   FROM _ferry_rows r LEFT JOIN {t} t ON t.{q} = r.pk WHERE r.tbl = ?1)
                 WHERE was IS NOT reach",
                q = quote(&pk),
                t = quote(&table.name),
            )
        }
        None => "SELECT pk, NULL FROM _ferry_rows WHERE tbl = ?1 AND reach IS NOT NULL".to_owned(),
    };
    let changes: Vec<(String, Option<String>)> =
        tx.prepare(&sql)?.query_map([&table.name], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    if changes.is_empty() {
        return Ok(());
    }
    let mut seq: i64 = tx.query_row(FEED_END, [], |r| r.get(0))?;
    let mut update = tx.prepare("UPDATE _ferry_rows SET reach = ?1, seq = ?2 WHERE tbl = ?3 AND pk = ?4")?;
    for (pk, reach) in changes {
        seq += 1;
        update.execute(params![reach, seq, table.name, pk])?;
    }
    Ok(())
}

/// A value a subquery selected, as the rules compare it.
fn selected_value(r: rusqlite::types::ValueRef<'_>) -> ferry_core::Value {
    match r {
        rusqlite::types::ValueRef::Integer(i) => ferry_core::Value::Integer(i),
        rusqlite::types::ValueRef::Text(t) => ferry_core::Value::Text(String::from_utf8_lossy(t).into()),
        _ => ferry_core::Value::Null,
    }
}

/// What the `read` rules' subqueries of `tables` (all ruled tables when `None`) select for `user` now.
fn scope_in(conn: &rusqlite::Connection, schema: &Schema, user: &str, only: Option<&str>) -> Result<crate::Scope> {
    let mut scope = crate::Scope::default();
    for (table, selects) in crate::scope::read_subqueries(schema) {
        if only.is_some_and(|o| o != table.name) {
            continue;
        }
        let sets = selects.into_iter().map(|s| selected(conn, s, user)).collect::<Result<Vec<_>>>()?;
        scope.insert(table, sets);
    }
    Ok(scope)
}

/// What `select` selects for `user` now.
fn selected(
    conn: &rusqlite::Connection,
    select: &ferry_core::rules::Select,
    user: &str,
) -> Result<Vec<ferry_core::Value>> {
    let q = select.compile(ferry_core::rules::Dialect::Sqlite, 1);
    let binds: Vec<rusqlite::types::Value> = q.slots.iter().map(|s| sqlite_value(s.value(user, &[]))).collect();
    let mut stmt = conn.prepare_cached(&q.sql)?;
    let values = stmt
        .query_map(rusqlite::params_from_iter(binds), |r| Ok(selected_value(r.get_ref(0)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(values)
}

/// What the subqueries of each subscription select for `user` now, by table and place.
fn subscription_sets(
    conn: &rusqlite::Connection,
    subs: &BTreeMap<String, Vec<ferry_core::rules::Rule>>,
    user: &str,
) -> Result<BTreeMap<String, Vec<Vec<Vec<ferry_core::Value>>>>> {
    let mut out = BTreeMap::new();
    for (table, rules) in subs {
        let sets = rules
            .iter()
            .map(|r| r.subqueries().into_iter().map(|s| selected(conn, s, user)).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        out.insert(table.clone(), sets);
    }
    Ok(out)
}

/// A scope stored under its hash, if it is.
fn stored_scope(conn: &rusqlite::Connection, hash: &str) -> Result<Option<crate::Scope>> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM _ferry_scopes WHERE hash = ?1")?
        .query_row([hash], |r| r.get(0))
        .optional()?;
    Ok(body.as_deref().and_then(crate::Scope::from_json))
}

/// The embedded store's cursor with `read` rules: how far the device has the feed (`after`),
/// the scope it was served (`s0`), and while rows move in and out: the cursor before they
/// started (`prev`) and the scope they move to (`s1`). Written `after.s0` or
/// `after.s1.prev.s0`; a bare number is a cursor from before the rules (its scope unknown).
struct RuledCursor {
    after: i64,
    s0: Option<String>,
    moving: Option<(String, i64)>,
}

impl RuledCursor {
    fn parse(c: &str) -> Result<RuledCursor> {
        let bad = || {
            StoreError::Invalid(format!(
                "cursor '{}' is not a cursor this server gave out; start over from the beginning (cursor=0; since=0 on /v1/changes)",
                ferry_core::shown(c)
            ))
        };
        let num = |p: &str| p.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad);
        let hash =
            |p: &str| (p.len() == 32 && p.bytes().all(|b| b.is_ascii_hexdigit())).then(|| p.to_owned()).ok_or_else(bad);
        let parts: Vec<&str> = if c.is_empty() { vec!["0"] } else { c.split('.').collect() };
        match parts.as_slice() {
            [a] => Ok(RuledCursor { after: num(a)?, s0: None, moving: None }),
            [a, h] => Ok(RuledCursor { after: num(a)?, s0: Some(hash(h)?), moving: None }),
            [a, h1, p, h0] => {
                Ok(RuledCursor { after: num(a)?, s0: Some(hash(h0)?), moving: Some((hash(h1)?, num(p)?)) })
            }
            _ => Err(bad()),
        }
    }
}

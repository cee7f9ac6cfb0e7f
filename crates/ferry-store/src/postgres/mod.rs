//! The PostgreSQL store: the synced tables are ordinary PostgreSQL tables with PostgreSQL
//! types, so other applications read and write them directly; PL/pgSQL triggers capture
//! those direct writes into the same bookkeeping (`_ferry_rows`) that pushes write.
//!
//! The change feed never skips. Concurrent transactions commit out of order, so a sequence
//! number is no cursor. Instead every bookkeeping row records the id of the transaction that
//! last wrote it (`xid`), and a cursor is a PostgreSQL snapshot: a pull returns the rows
//! whose transaction is visible in a new snapshot but was not in the cursor's, and the new
//! snapshot becomes the cursor. A transaction still running when the snapshot is taken is
//! not visible in it, so its rows come with a later pull, whatever their order of commit.
//! Pages within one snapshot window are ordered by `(xid, tbl, pk)`.
//!
//! Several server processes can share one database: all state is in PostgreSQL, start-up is
//! serialized by an advisory lock, and row updates lock their bookkeeping rows.

mod ddl;
mod sql;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use ferry_core::schema::{ColType, Schema, Table, quote};
use ferry_core::{Hlc, RowState, SiteId, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Transaction};

use self::sql::{PgTable, Wire};
use crate::{
    ConflictFilter, ConflictRecord, FeedRow, IncomingRow, Keep, NewToken, Principal, PullPage, PushOutcome, Result,
    Store, StoreError, User, new_token, token_hash,
};

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Where the LISTEN connection for the realtime stream goes.
    listen_cfg: tokio_postgres::Config,
    notices: tokio::sync::broadcast::Sender<crate::Notice>,
    watching: std::sync::atomic::AtomicBool,
    id: String,
    /// Which cluster the stored transaction ids belong to (see [`epoch_of`]).
    epoch: String,
    /// The site id of changes the server itself makes (direct writes, resolutions).
    site: SiteId,
    schema: Schema,
    tables: HashMap<String, PgTable>,
    stats: Statistics,
}

/// Keeps the planner's statistics in step with the rows pushes write. Autovacuum analyzes a
/// growing table late (a minute apart at best), and until then the planner takes a table it
/// has no statistics for as small: during a bulk load it would read a batch's stored rows by
/// scanning every row of the table, slower with every batch. So a process that has written as many rows as the table held at
/// its last analysis (and at least [`Statistics::FIRST`]) analyzes the tables it wrote, in
/// the background: a handful of times while a table grows a thousandfold.
struct Statistics {
    /// Rows written by this process since it last started an analysis.
    written: std::sync::atomic::AtomicU64,
    /// When `written` reaches this, analyze.
    due_at: std::sync::atomic::AtomicU64,
    running: std::sync::atomic::AtomicBool,
    /// The tables written since the last analysis.
    tables: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Statistics {
    const FIRST: u64 = 10_000;
    /// The planner's row count of `_ferry_rows` (-1 before its first analysis).
    const ROWS: &str = "SELECT reltuples::float8 FROM pg_class WHERE oid = '_ferry_rows'::regclass";

    fn new(rows: f64) -> Statistics {
        Statistics {
            written: 0.into(),
            due_at: Self::due_after(rows).into(),
            running: false.into(),
            tables: Default::default(),
        }
    }

    /// Rows to write before the next analysis, `_ferry_rows` holding `rows` now.
    fn due_after(rows: f64) -> u64 {
        (rows.max(0.0) as u64).max(Self::FIRST)
    }
}

/// Counts a committed push's writes; analyzes in the background when they are due.
fn wrote(inner: &Arc<Inner>, tables: impl IntoIterator<Item = String>, rows: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &inner.stats;
    stats.tables.lock().expect("statistics lock").extend(tables);
    let written = stats.written.fetch_add(rows as u64, Relaxed) + rows as u64;
    if written < stats.due_at.load(Relaxed) || stats.running.swap(true, Relaxed) {
        return;
    }
    stats.written.store(0, Relaxed);
    let tables = std::mem::take(&mut *stats.tables.lock().expect("statistics lock"));
    let inner = Arc::downgrade(inner);
    tokio::spawn(async move {
        let Some(strong) = inner.upgrade() else { return };
        // An optimization only: when it fails (the database busy or gone), the next push
        // that is due tries again, and autovacuum analyzes in its own time.
        if let Ok(client) = strong.pool.get().await {
            let names: Vec<String> = std::iter::once("_ferry_rows".to_owned())
                .chain(tables.iter().map(|t| ferry_core::schema::quote(t)))
                .collect();
            if client.batch_execute(&format!("ANALYZE {}", names.join(", "))).await.is_ok()
                && let Ok(row) = client.query_one(Statistics::ROWS, &[]).await
            {
                strong.stats.due_at.store(Statistics::due_after(row.get(0)), Relaxed);
            }
        }
        strong.stats.running.store(false, Relaxed);
    });
}

/// An arbitrary constant: the advisory lock that serializes start-up DDL between processes.
const STARTUP_LOCK: i64 = 0x6665_7272_7900;
const PUSH_ATTEMPTS: usize = 5;

fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            // Connection trouble, shutdown, a read-only standby after failover, cancelled
            // statements, lock timeouts, out of resources: all worth retrying later.
            if code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || matches!(code, "25006" | "57014" | "55P03")
            {
                StoreError::Unavailable(format!("PostgreSQL: {}", db.message()))
            } else if matches!(code, "42703" | "42P01" | "42804") {
                StoreError::Internal(format!(
                    "a synced table changed under Ferry ({}{detail}); restart `ferry serve` to compare the tables with the schema",
                    db.message()
                ))
            } else if let Some(words) = refusal(code, db.constraint(), db.column()) {
                // PostgreSQL's own message and detail may quote the data (a whole key, a row):
                // they go to the log, cut short, and the client gets Ferry's words.
                tracing::warn!(
                    code,
                    table = db.table(),
                    message = cut(db.message()),
                    detail = cut(db.detail().unwrap_or_default()),
                    "PostgreSQL refused a value: {words}"
                );
                StoreError::Invalid(words)
            } else {
                StoreError::Internal(format!("PostgreSQL error {code}: {}{detail}", db.message()))
            }
        }
        None => {
            let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
            if e.is_closed() || io {
                StoreError::Unavailable(format!("PostgreSQL connection: {e}"))
            } else {
                StoreError::Internal(format!("PostgreSQL client: {e}"))
            }
        }
    }
}

/// Ferry's own words for a PostgreSQL error caused by the data it was given: a data exception
/// (class 22), a broken integrity constraint (23) or a program limit (54). They name only
/// identifiers (the constraint, the column), never a value, and say what to do.
fn refusal(code: &str, constraint: Option<&str>, column: Option<&str>) -> Option<String> {
    let the = |kind: &str| match constraint {
        Some(c) => format!("the {kind} '{c}'"),
        None => format!("a {kind}"),
    };
    let of_column = column.map(|c| format!(" of column '{c}'")).unwrap_or_default();
    let limits = "see \"Limits\" in docs/schema.md";
    Some(match code {
        "23505" => format!(
            "a row breaks {}: another row already holds the same value; change the value or remove the other row",
            the("unique constraint")
        ),
        "23503" => format!(
            "a row breaks {}: it refers to a row that does not exist, or a row still referred to was deleted; write the referenced row first",
            the("foreign key constraint")
        ),
        "23502" => format!("a value{of_column} is missing but the column is NOT NULL in PostgreSQL; send a value"),
        "23514" => format!("a value breaks {}; send a value the constraint allows", the("check constraint")),
        "23P01" => format!("a row conflicts with another under {}", the("exclusion constraint")),
        c if c.starts_with("23") => format!("a row breaks {}", the("integrity constraint")),
        "22001" => format!("a text value{of_column} is longer than its column allows; shorten it"),
        "22003" => format!("a number{of_column} is out of range for its column's type"),
        "22021" | "22P05" => format!(
            "a text value{of_column} holds a character PostgreSQL cannot store (a NUL character, or \\u0000 in JSON); remove it"
        ),
        c if c.starts_with("22") => format!(
            "a value{of_column} is not valid for its column's PostgreSQL type; see the type mapping in docs/schema.md"
        ),
        "54001" => format!("a JSON value is nested too deeply for PostgreSQL; flatten it; {limits}"),
        c if c.starts_with("54") => format!(
            "a value is too large for PostgreSQL to store or index (a key longer than about 2 700 bytes, for example); shorten it; {limits}"
        ),
        _ => return None,
    })
}

/// At most 200 characters of `s`, for the log.
fn cut(s: &str) -> &str {
    s.char_indices().nth(200).map_or(s, |(i, _)| &s[..i])
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    // Serialization failures, deadlocks and a push's own lock timeout. (A unique violation is not retried: the pushes'
    // own key conflicts surface as serialization failures under REPEATABLE READ, so a unique
    // violation comes from an application constraint and would fail again.)
    e.as_db_error().is_some_and(|db| matches!(db.code().code(), "40001" | "40P01" | "55P03"))
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("cannot get a PostgreSQL connection: {e}"))
}

/// What start-up finds of an application table.
enum Shape {
    Missing,
    /// The table exists; these schema columns (by index) are missing and can be added.
    Lacks(Vec<usize>),
}

/// Compares `table` in PostgreSQL (made by the application's own migrations, or by Ferry)
/// with the schema, column by column and row by row, reading only. Differences that cannot
/// be fixed in place are refused, every one named.
async fn table_shape(tx: &Transaction<'_>, table: &Table) -> std::result::Result<Shape, PushError> {
    let existing = tx
        .query(
            "SELECT column_name::text, udt_name::text, is_nullable = 'YES',
                    column_default IS NOT NULL OR is_identity = 'YES' OR is_generated = 'ALWAYS',
                    character_maximum_length::int4
             FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1
             ORDER BY ordinal_position",
            &[&table.name],
        )
        .await
        .map_err(push_pg)?;
    if existing.is_empty() {
        return Ok(Shape::Missing);
    }
    let mut problems = Vec::new();
    let mut lacks = Vec::new();
    let find = |name: &str| existing.iter().find(|r| r.get::<_, String>(0) == name);
    for (i, col) in table.columns.iter().enumerate() {
        let want = ddl::udt(col.ty, col.max_len);
        match find(&col.name) {
            Some(r) => {
                let have: String = r.get(1);
                let len: Option<i32> = r.get(4);
                if have != want {
                    problems.push(format!(
                        "column '{}' is {have} in PostgreSQL but {} ({want}) in the schema",
                        col.name,
                        col.ty.name()
                    ));
                } else if want == "varchar" && len.map(|l| l as u32) != col.max_len {
                    problems.push(format!(
                        "column '{}' is varchar({}) in PostgreSQL but varchar({}) in the schema",
                        col.name,
                        len.map_or("unlimited".into(), |l| l.to_string()),
                        col.max_len.unwrap_or_default()
                    ));
                }
            }
            None if col.not_null && col.default.is_none() => problems.push(format!(
                "column '{}' is missing and NOT NULL without a default, so it cannot be added in place",
                col.name
            )),
            None => lacks.push(i),
        }
    }
    for r in &existing {
        let name: String = r.get(0);
        let nullable: bool = r.get(2);
        let has_default: bool = r.get(3);
        match table.column(&name) {
            None if !nullable && !has_default => problems.push(format!(
                "column '{name}' is not in the schema and is NOT NULL without a default, so rows from devices could not be inserted; give it a default or add it to the schema"
            )),
            None => {}
            // The table's own rules may be looser than the schema's: the rows already in it
            // must obey the schema, or devices could not store them.
            Some(col) => problems.extend(data_problems(tx, table, col, nullable).await?),
        }
    }
    let pk: Vec<String> = tx
        .query(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = to_regclass(quote_ident($1)) AND i.indisprimary",
            &[&table.name],
        )
        .await
        .map_err(push_pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if pk != [table.pk_column().name.clone()] {
        problems.push(format!(
            "the primary key is ({}) in PostgreSQL but ({}) in the schema",
            pk.join(", "),
            table.pk_column().name
        ));
    }
    if !problems.is_empty() {
        return Err(PushError::Store(StoreError::Invalid(format!(
            "table '{}' in PostgreSQL does not match the schema: {}; migrate the table or fix the schema",
            table.name,
            problems.join("; ")
        ))));
    }
    Ok(Shape::Lacks(lacks))
}

/// What the bookkeeping step of start-up found.
struct Startup {
    id: String,
    site: SiteId,
    epoch: String,
    pg_schema: String,
    /// The stored transaction ids belong to another cluster (see [`renumber`]).
    renumber: bool,
}

/// One step of start-up, run in a transaction of its own by [`startup_step`].
enum Step<'a> {
    Bookkeeping { new_id: &'a str, new_site: &'a str },
    Renumber { epoch: &'a str },
    Table { pt: &'a PgTable, pg_schema: &'a str, adopted_at: &'a str },
}

impl Step<'_> {
    /// What the step may wait for, for the log.
    fn what(&self) -> String {
        match self {
            Step::Bookkeeping { .. } => "Ferry's bookkeeping tables".to_owned(),
            Step::Renumber { .. } => "_ferry_rows".to_owned(),
            Step::Table { pt, .. } => format!("table '{}'", pt.table.name),
        }
    }

    async fn run(&self, tx: &Transaction<'_>) -> std::result::Result<Option<Startup>, PushError> {
        match *self {
            Step::Bookkeeping { new_id, new_site } => bookkeeping(tx, new_id, new_site).await.map(Some),
            Step::Renumber { epoch } => renumber(tx, epoch).await.map(|()| None),
            Step::Table { pt, pg_schema, adopted_at } => {
                prepare_table(tx, pt, pg_schema, adopted_at).await.map(|()| None)
            }
        }
    }
}

/// Runs one step of start-up in a transaction of its own that waits only briefly for a lock
/// (`lock_timeout`), and runs it again after a pause for as long as it has to wait for other
/// transactions, saying so in the log now and then. A step takes the locks that other
/// transactions could hold first (an application table before `_ferry_rows`, the order of
/// the capture triggers) and nothing that conflicts with them while it waits, so an
/// application's transaction never waits long behind start-up, is never a deadlock's victim,
/// and start-up never fails because of one.
async fn startup_step(client: &mut tokio_postgres::Client, step: Step<'_>) -> Result<Option<Startup>> {
    let started = std::time::Instant::now();
    let mut told: Option<std::time::Instant> = None;
    let mut attempt = 0u32;
    loop {
        let wait = Duration::from_millis(100 << attempt.min(3));
        attempt = attempt.saturating_add(1);
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{}ms'", wait.as_millis())).await.map_err(pg)?;
        let e = match step.run(&tx).await {
            Ok(v) => match tx.commit().await {
                Ok(()) => return Ok(v),
                Err(e) if retryable(&e) => e,
                Err(e) => return Err(pg(e)),
            },
            Err(failed) => {
                // Release whatever this attempt holds before pausing.
                let _ = tx.rollback().await;
                match failed {
                    PushError::Store(e) => return Err(e),
                    PushError::Retry(e) => e,
                }
            }
        };
        if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            let why = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned());
            tracing::warn!(
                "start-up is waiting for other transactions to release {} ({why}; waited {} s so far)",
                step.what(),
                started.elapsed().as_secs()
            );
            told = Some(std::time::Instant::now());
        }
        tokio::time::sleep(wait).await;
    }
}

/// A piece of start-up DDL and the objects it makes, so that start-up runs it only when it
/// changed or the objects did: DDL takes locks that an application's transaction may be
/// waiting for or holding (`CREATE INDEX IF NOT EXISTS` takes one even when the index exists).
struct Ddl<'a> {
    /// The key under which `_ferry_store` keeps the fingerprint of the DDL last run.
    key: String,
    sql: &'a str,
    /// Tables whose columns, `_ferry` indexes and triggers it makes.
    tables: Vec<String>,
    /// Tables on which it makes `_ferry` indexes and triggers only.
    on: Vec<String>,
    functions: Vec<String>,
}

impl Ddl<'_> {
    /// The DDL's text and the catalog's definitions of what it made, hashed.
    async fn fingerprint(&self, tx: &Transaction<'_>) -> std::result::Result<String, PushError> {
        use sha2::Digest;
        let catalog: String =
            tx.query_one(sql::CATALOG, &[&self.tables, &self.on, &self.functions]).await.map_err(push_pg)?.get(0);
        Ok(format!("{} {catalog}", ferry_core::to_hex(&sha2::Sha256::digest(self.sql.as_bytes()))))
    }

    /// Whether this DDL ran before and everything it made is still as it left it.
    async fn is_current(&self, tx: &Transaction<'_>) -> std::result::Result<bool, PushError> {
        let stored = tx
            .query_opt("SELECT value FROM _ferry_store WHERE key = $1", &[&self.key])
            .await
            .map_err(push_pg)?
            .map(|r| r.get::<_, String>(0));
        Ok(match stored {
            Some(s) => s == self.fingerprint(tx).await?,
            None => false,
        })
    }

    async fn run(&self, tx: &Transaction<'_>) -> std::result::Result<(), PushError> {
        tx.batch_execute(self.sql).await.map_err(push_pg)?;
        let done = self.fingerprint(tx).await?;
        tx.execute(
            "INSERT INTO _ferry_store (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&self.key, &done],
        )
        .await
        .map_err(push_pg)?;
        Ok(())
    }
}

/// Start-up's first step: Ferry's bookkeeping tables (created or brought up to date only when
/// they are not current), the store's id and site, and the cluster's epoch.
async fn bookkeeping(tx: &Transaction<'_>, new_id: &str, new_site: &str) -> std::result::Result<Startup, PushError> {
    let ddl = Ddl {
        key: "ddl bookkeeping".into(),
        sql: sql::BOOKKEEPING,
        tables: sql::BOOKKEEPING_TABLES.map(String::from).into(),
        on: Vec::new(),
        functions: sql::BOOKKEEPING_FUNCTIONS.map(String::from).into(),
    };
    let exists: bool =
        tx.query_one("SELECT to_regclass('_ferry_store') IS NOT NULL", &[]).await.map_err(push_pg)?.get(0);
    if !exists || !ddl.is_current(tx).await? {
        ddl.run(tx).await?;
    }
    let pg_schema: String = tx.query_one("SELECT current_schema()::text", &[]).await.map_err(push_pg)?.get(0);
    tx.execute(
        "INSERT INTO _ferry_store (key, value) VALUES ('id', $1), ('site', $2) ON CONFLICT DO NOTHING",
        &[&new_id, &new_site],
    )
    .await
    .map_err(push_pg)?;
    let id: String =
        tx.query_one("SELECT value FROM _ferry_store WHERE key = 'id'", &[]).await.map_err(push_pg)?.get(0);
    let site: String =
        tx.query_one("SELECT value FROM _ferry_store WHERE key = 'site'", &[]).await.map_err(push_pg)?.get(0);
    let site: SiteId = site.parse().map_err(|e| StoreError::Internal(format!("stored site id: {e}")))?;
    // Transaction ids and snapshots mean something only in the cluster that made them.
    // A database restored or replicated into another cluster (or restored to an earlier
    // point) gets a new epoch: every row re-enters the feed under this cluster's ids,
    // and clients' cursors from the old epoch start over.
    let epoch = epoch_of(tx).await?;
    let stored: Option<String> = tx
        .query_opt("SELECT value FROM _ferry_store WHERE key = 'epoch'", &[])
        .await
        .map_err(push_pg)?
        .map(|r| r.get(0));
    let from_the_future: bool = tx
        .query_one("SELECT coalesce(max(xid) > pg_current_xact_id(), false) FROM _ferry_rows", &[])
        .await
        .map_err(push_pg)?
        .get(0);
    let renumber = stored.as_deref().is_some_and(|s| s != epoch) || from_the_future;
    if stored.is_none() && !renumber {
        tx.execute("INSERT INTO _ferry_store (key, value) VALUES ('epoch', $1)", &[&epoch]).await.map_err(push_pg)?;
    }
    Ok(Startup { id, site, epoch, pg_schema, renumber })
}

/// Moves every bookkeeping row to this transaction, under this cluster's ids, and records the
/// cluster's epoch. The table is locked first: no other transaction then holds one of its
/// rows, so the update never waits while holding rows that another transaction waits for.
async fn renumber(tx: &Transaction<'_>, epoch: &str) -> std::result::Result<(), PushError> {
    tx.batch_execute("LOCK TABLE _ferry_rows IN EXCLUSIVE MODE; UPDATE _ferry_rows SET xid = pg_current_xact_id()")
        .await
        .map_err(push_pg)?;
    tx.execute(
        "INSERT INTO _ferry_store (key, value) VALUES ('epoch', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&epoch],
    )
    .await
    .map_err(push_pg)?;
    Ok(())
}

/// Start-up's step for one synced table: creates it or adds missing columns, installs the
/// capture (when it is not current), adopts the rows Ferry does not track yet and sets their
/// owners. What needs doing is found by reading first; when something does, the table is
/// locked before anything else, in the capture trigger's order (the table, then
/// `_ferry_rows`), so that start-up waits for the application's transactions on the table
/// and none of them waits for start-up while start-up waits.
async fn prepare_table(
    tx: &Transaction<'_>,
    pt: &PgTable,
    pg_schema: &str,
    adopted_at: &str,
) -> std::result::Result<(), PushError> {
    let table = &pt.table;
    let t = quote(&table.name);
    let sql = format!("{}{}", pt.capture(pg_schema), crate::file_indexes(&Schema { tables: vec![table.clone()] }));
    let capture = Ddl {
        key: format!("ddl table {}", table.name),
        sql: &sql,
        tables: Vec::new(),
        on: vec![table.name.clone()],
        functions: pt.functions().into(),
    };
    let mut locked = false;
    match table_shape(tx, table).await? {
        Shape::Missing => {
            tx.batch_execute(&ddl::create_table(table)).await.map_err(push_pg)?;
            locked = true;
        }
        Shape::Lacks(columns) if !columns.is_empty() => {
            tx.batch_execute(&format!("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE")).await.map_err(push_pg)?;
            locked = true;
            for i in columns {
                let def = ddl::column_def(table, i);
                tx.batch_execute(&format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {def}")).await.map_err(push_pg)?;
            }
        }
        Shape::Lacks(_) => {}
    }
    // EXCLUSIVE: the application's writes and row locks wait (reads go on) while Ferry
    // changes the table's triggers and bookkeeping.
    let lock = "IN EXCLUSIVE MODE";
    if !capture.is_current(tx).await? {
        if !locked {
            tx.batch_execute(&format!("LOCK TABLE {t} {lock}")).await.map_err(push_pg)?;
            locked = true;
        }
        capture.run(tx).await?;
    }
    let untracked: bool = tx.query_one(&pt.untracked(), &[]).await.map_err(push_pg)?.get(0);
    let owners_differ: bool = tx.query_one(&pt.owners_differ(), &[]).await.map_err(push_pg)?.get(0);
    if untracked || owners_differ {
        if !locked {
            tx.batch_execute(&format!("LOCK TABLE {t} {lock}")).await.map_err(push_pg)?;
        }
        tx.execute(&pt.adopt(), &[&adopted_at]).await.map_err(push_pg)?;
        tx.batch_execute(&pt.backfill_owner()).await.map_err(push_pg)?;
    }
    Ok(())
}

impl PgStore {
    /// Connects to `url`, creates Ferry's bookkeeping and the schema's tables, installs the
    /// capture of direct writes, and adopts rows already in existing tables.
    ///
    /// Changes nothing when the bookkeeping and every table's capture are current. Where it
    /// must change a table, it waits (saying so in the log) for the applications'
    /// transactions that hold it, however long, and never aborts one.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed URL or a table that differs from the schema
    /// (every difference named); [`StoreError::Unavailable`] when PostgreSQL cannot be reached.
    pub async fn open(url: &str, schema: Schema) -> Result<PgStore> {
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Invalid(format!(
                "database '{url}' is not a PostgreSQL URL ({e}); expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ))
        })?;
        cfg.connect_timeout(Duration::from_secs(5));
        if cfg.get_application_name().is_none() {
            cfg.application_name("ferry");
        }
        let mut listen_cfg = cfg.clone();
        // A half-open LISTEN connection (a failover, a NAT dropping it) is found in about a
        // minute instead of the system's two hours.
        listen_cfg.keepalives_idle(Duration::from_secs(30));
        let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let timeout = Some(Duration::from_secs(5));
        let pool = Pool::builder(mgr)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Internal(format!("PostgreSQL pool: {e}")))?;
        let tables: HashMap<String, PgTable> =
            schema.tables.iter().map(|t| (t.name.clone(), PgTable::new(t))).collect();
        // A connection of its own, out of the pool: the start-up lock is held across several
        // transactions, and closing the connection releases it whatever happens.
        let mut client = deadpool_postgres::Object::take(pool.get().await.map_err(pool_err)?);
        client.execute("SELECT pg_advisory_lock($1)", &[&STARTUP_LOCK]).await.map_err(pg)?;
        let mut site_bytes = [0u8; 8];
        getrandom::fill(&mut site_bytes).map_err(|e| StoreError::Internal(format!("no randomness: {e}")))?;
        let new_site = SiteId::from_bytes(site_bytes).to_string();
        let new_id = uuid::Uuid::now_v7().to_string();
        let bookkeeping = Step::Bookkeeping { new_id: &new_id, new_site: &new_site };
        let start = startup_step(&mut client, bookkeeping).await?.expect("the bookkeeping step reports");
        if start.renumber {
            startup_step(&mut client, Step::Renumber { epoch: &start.epoch }).await?;
        }
        let adopted_at = Hlc::new(crate::wall_ms(), 0, start.site).to_string();
        for table in &schema.tables {
            let (pt, pg_schema) = (&tables[&table.name], start.pg_schema.as_str());
            startup_step(&mut client, Step::Table { pt, pg_schema, adopted_at: &adopted_at }).await?;
        }
        let rows: f64 = client.query_one(Statistics::ROWS, &[]).await.map_err(pg)?.get(0);
        let Startup { id, site, epoch, .. } = start;
        drop(client);
        let notices = tokio::sync::broadcast::channel(crate::NOTICE_BUFFER).0;
        let watching = std::sync::atomic::AtomicBool::new(false);
        let stats = Statistics::new(rows);
        Ok(PgStore {
            inner: Arc::new(Inner { pool, id, epoch, site, schema, tables, listen_cfg, notices, watching, stats }),
        })
    }

    /// The `CREATE TABLE IF NOT EXISTS` this store runs for a synced table that does not
    /// exist yet; tests and benchmarks use it to create a table as an application's own
    /// migration would.
    pub fn create_table_sql(table: &Table) -> String {
        ddl::create_table(table)
    }

    fn table(&self, name: &str) -> Result<&PgTable> {
        self.inner.tables.get(name).ok_or_else(|| {
            StoreError::Invalid(format!(
                "unknown table '{name}'; the schema has: {}",
                self.inner.schema.table_names().join(", ")
            ))
        })
    }
}

/// A stored row: its state and its owner.
struct Stored {
    state: RowState,
    owner: Option<String>,
}

fn value_at(row: &Row, i: usize, ty: ColType) -> Value {
    match sql::wire(ty) {
        Wire::Text => row.get::<_, Option<String>>(i).map_or(Value::Null, Value::Text),
        Wire::Int => row.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Integer),
        Wire::Float => row.get::<_, Option<f64>>(i).map_or(Value::Null, Value::Real),
        Wire::Bool => row.get::<_, Option<bool>>(i).map_or(Value::Null, |b| Value::Integer(b.into())),
        Wire::Bytes => row.get::<_, Option<Vec<u8>>>(i).map_or(Value::Null, Value::Blob),
    }
}

/// Reads the stored states of `keys` in `pt`'s table (locking them with `for_update`).
async fn load(
    tx: &Transaction<'_>,
    pt: &PgTable,
    keys: &[String],
    for_update: bool,
) -> std::result::Result<HashMap<String, Stored>, PushError> {
    if for_update {
        // Lock order: the application rows first, then their bookkeeping, the same order in
        // which a direct write's capture trigger takes them.
        tx.query(pt.lock_rows.as_str(), &[&keys]).await.map_err(push_pg)?;
    }
    let sql = if for_update { &pt.select_for_update } else { &pt.select };
    let rows = tx.query(sql.as_str(), &[&pt.table.name, &keys]).await.map_err(push_pg)?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let pk: String = row.get(0);
        let owner: Option<String> = row.get(6);
        let raw = (row.get(1), row.get(2), row.get(3), row.get(4), row.get(5), 0, owner.clone(), 0);
        let meta = ferry_sqlite::parse_meta(&pt.table, &pk, raw).map_err(|e| StoreError::Internal(e.to_string()))?;
        let has_row: bool = row.get(7);
        let values =
            has_row.then(|| pt.table.data_columns().enumerate().map(|(i, c)| value_at(&row, 8 + i, c.ty)).collect());
        let state = ferry_sqlite::state_of(&pt.table, &meta, values);
        out.insert(pk, Stored { state, owner });
    }
    Ok(out)
}

/// One column of values as a typed array parameter.
enum Array {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Array {
    fn new(ty: ColType) -> Array {
        match sql::wire(ty) {
            Wire::Text => Array::Text(Vec::new()),
            Wire::Int => Array::Int(Vec::new()),
            Wire::Float => Array::Float(Vec::new()),
            Wire::Bool => Array::Bool(Vec::new()),
            Wire::Bytes => Array::Bytes(Vec::new()),
        }
    }

    fn push(&mut self, v: &Value) -> std::result::Result<(), String> {
        match (self, v) {
            (Array::Text(a), Value::Null) => a.push(None),
            (Array::Int(a), Value::Null) => a.push(None),
            (Array::Float(a), Value::Null) => a.push(None),
            (Array::Bool(a), Value::Null) => a.push(None),
            (Array::Bytes(a), Value::Null) => a.push(None),
            (Array::Text(a), Value::Text(s)) => a.push(Some(s.clone())),
            (Array::Int(a), Value::Integer(i)) => a.push(Some(*i)),
            (Array::Float(a), Value::Real(r)) => a.push(Some(*r)),
            (Array::Float(a), Value::Integer(i)) => a.push(Some(*i as f64)),
            (Array::Bool(a), Value::Integer(i)) => a.push(Some(*i != 0)),
            (Array::Bytes(a), Value::Blob(b)) => a.push(Some(b.clone())),
            (_, v) => return Err(format!("a {} value does not fit the column", v.kind())),
        }
        Ok(())
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Array::Text(a) => a,
            Array::Int(a) => a,
            Array::Float(a) => a,
            Array::Bool(a) => a,
            Array::Bytes(a) => a,
        }
    }
}

const UPSERT_META: &str = "
INSERT INTO _ferry_rows (tbl, pk, alive, alive_at, clock, clocks, dead, owner, origin, texts, xid)
SELECT $1, u.pk, u.alive, u.alive_at, u.clock, u.clocks, u.dead, u.owner, $2, u.texts::jsonb, pg_current_xact_id()
FROM unnest($3::text[], $4::bool[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
  AS u(pk, alive, alive_at, clock, clocks, dead, owner, texts)
ON CONFLICT (tbl, pk) DO UPDATE SET alive = excluded.alive, alive_at = excluded.alive_at, clock = excluded.clock,
  clocks = excluded.clocks, dead = excluded.dead, owner = excluded.owner, origin = excluded.origin,
  texts = excluded.texts, xid = excluded.xid";

/// Writes the merged states of one table: application rows (upsert or delete) and their
/// bookkeeping, a few statements for the whole batch.
async fn write(
    tx: &Transaction<'_>,
    pt: &PgTable,
    device: &str,
    rows: &[(String, RowState, Option<String>)],
) -> std::result::Result<(), PushError> {
    let table = &pt.table;
    // The upsert takes the key first, then the data columns in schema order.
    let mut key_array: Vec<Option<String>> = Vec::new();
    let mut live: Vec<Array> = table.data_columns().map(|c| Array::new(c.ty)).collect();
    let mut gone: Vec<String> = Vec::new();
    let (mut pks, mut alive, mut alive_at, mut clock, mut clocks, mut dead, mut owners, mut texts) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (key, state, owner) in rows {
        let values = ferry_sqlite::values_of(table, state);
        if state.is_alive() {
            key_array.push(Some(key.clone()));
            for (arr, v) in live.iter_mut().zip(&values) {
                arr.push(v).map_err(|e| StoreError::Internal(format!("{} '{key}': {e}", table.name)))?;
            }
        } else {
            gone.push(key.clone());
        }
        let (base, overrides) = ferry_sqlite::encode_clocks(table, state);
        let kept: serde_json::Map<String, serde_json::Value> = table
            .data_columns()
            .zip(&values)
            .filter(|(c, _)| sql::keeps_text(c.ty))
            .filter_map(|(c, v)| match v {
                Value::Text(s) => Some((c.name.clone(), serde_json::Value::String(s.clone()))),
                _ => None,
            })
            .collect();
        pks.push(key.clone());
        alive.push(state.is_alive());
        alive_at.push(state.exists.at.to_string());
        clock.push(base.to_string());
        clocks.push(overrides);
        dead.push((!state.is_alive()).then(|| ferry_sqlite::encode_values(table, &values)));
        owners.push(owner.clone());
        texts.push((!kept.is_empty()).then(|| serde_json::Value::Object(kept).to_string()));
    }
    if !key_array.is_empty() {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&key_array];
        params.extend(live.iter().map(Array::param));
        tx.execute(pt.upsert.as_str(), &params).await.map_err(|e| with_table(e, table))?;
    }
    if !gone.is_empty() {
        tx.execute(pt.delete.as_str(), &[&gone]).await.map_err(|e| with_table(e, table))?;
    }
    tx.execute(UPSERT_META, &[&table.name, &device, &pks, &alive, &alive_at, &clock, &clocks, &dead, &owners, &texts])
        .await
        .map_err(|e| with_table(e, table))?;
    Ok(())
}

/// Keeps retryable errors as they are; gives the others the table's name.
fn with_table(e: tokio_postgres::Error, table: &Table) -> PushError {
    if retryable(&e) {
        return PushError::Retry(e);
    }
    PushError::Store(match pg(e) {
        StoreError::Invalid(m) => StoreError::Invalid(format!("table '{}': {m}", table.name)),
        other => other,
    })
}

/// A transaction's failure (a push's, a step of start-up's): retry the whole transaction, or
/// give up.
enum PushError {
    Retry(tokio_postgres::Error),
    Store(StoreError),
}

impl From<PushError> for StoreError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Store(e) => e,
            PushError::Retry(e) => {
                let why = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned());
                StoreError::Unavailable(format!("concurrent writes, retry: {why}"))
            }
        }
    }
}

impl From<StoreError> for PushError {
    fn from(e: StoreError) -> Self {
        PushError::Store(e)
    }
}

fn push_pg(e: tokio_postgres::Error) -> PushError {
    if retryable(&e) { PushError::Retry(e) } else { PushError::Store(pg(e)) }
}

/// A cursor into the feed: the snapshot of the last complete pull (`prev`), and while a
/// window is being paged, the window's end snapshot and the last row given out.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// The store's epoch when the cursor was given out.
    #[serde(default)]
    epoch: String,
    /// [`FEED_VERSION`] when the cursor was given out.
    #[serde(default)]
    v: u32,
    prev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cur: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<(String, String, String)>,
}

const EMPTY_SNAPSHOT: &str = "1:1:";

/// Raised when a change to the feed means cursors given out before it may have skipped rows:
/// such a cursor starts over (merging makes the repeats harmless).
const FEED_VERSION: u32 = 1;

impl Cursor {
    fn start(epoch: &str) -> Cursor {
        Cursor { epoch: epoch.to_owned(), v: FEED_VERSION, prev: EMPTY_SNAPSHOT.into(), cur: None, after: None }
    }

    /// Parses a cursor; one from another epoch means "start over" (every row again, which
    /// merging makes harmless) and cannot produce itself again.
    fn parse(c: &str, epoch: &str) -> Result<Cursor> {
        if c.is_empty() || c == "0" {
            return Ok(Cursor::start(epoch));
        }
        let bad = || {
            StoreError::Invalid(format!(
                "cursor '{}' is not a cursor this server gave out; start over from the beginning (cursor=0; since=0 on /v1/changes)",
                ferry_core::shown(c)
            ))
        };
        let body = c.strip_prefix("pg.").ok_or_else(bad)?;
        let json = B64.decode(body).map_err(|_| bad())?;
        let cursor: Cursor = serde_json::from_slice(&json).map_err(|_| bad())?;
        let snapshot_ok = |s: &str| {
            let mut parts = s.splitn(3, ':');
            let num = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            num(parts.next())
                && num(parts.next())
                && parts
                    .next()
                    .is_some_and(|x| x.split(',').all(|p| p.is_empty() || p.bytes().all(|b| b.is_ascii_digit())))
        };
        if !snapshot_ok(&cursor.prev) || cursor.cur.as_deref().is_some_and(|s| !snapshot_ok(s)) {
            return Err(bad());
        }
        if cursor.epoch != epoch || cursor.v != FEED_VERSION {
            return Ok(Cursor::start(epoch));
        }
        Ok(cursor)
    }

    fn encode(&self) -> String {
        format!("pg.{}", B64.encode(serde_json::to_vec(self).expect("cursor serializes")))
    }
}

/// The output column is named `at`: were it `xid`, `ORDER BY xid` would sort by the text
/// (`'1000' < '999'`) while the cursor compares numbers, skipping rows.
/// The feed query, with the rule for which owners' rows it returns (`$3` is the user).
macro_rules! feed {
    ($owners:literal) => {
        concat!(
            "
SELECT xid::text AS at, tbl, pk FROM _ferry_rows
WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot)
  AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot)
  AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)
  AND ",
            $owners,
            "
  AND tbl = ANY($8::text[])
  AND (xid, tbl, pk) > ($4::text::xid8, $5, $6)
ORDER BY xid, tbl, pk
LIMIT $7"
        )
    };
}
/// A device's feed: its user's rows and rows without an owner.
const FEED: &str = feed!("(owner IS NULL OR owner = $3)");
/// Every row, for operators' commands (`$3` is unused).
const FEED_ALL: &str = feed!("($3::text IS NULL OR TRUE)");

impl PgStore {
    async fn push_once(
        &self,
        who: &Principal,
        batch_id: &str,
        rows: &BTreeMap<String, BTreeMap<String, IncomingRow>>,
        received: usize,
    ) -> std::result::Result<(PushOutcome, Option<String>), PushError> {
        let mut client = self.inner.pool.get().await.map_err(|e| PushError::Store(pool_err(e)))?;
        // REPEATABLE READ: a row changed by a concurrent transaction after this one's snapshot
        // (a direct write, another push creating the same key) makes the write fail with a
        // serialization error instead of merging new clocks with stale values; the batch is
        // then retried from the start.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(push_pg)?;
        let recorded = tx
            .query_opt(
                "SELECT received, changed, refused FROM _ferry_batches WHERE device_id = $1 AND batch_id = $2",
                &[&who.device_id, &batch_id],
            )
            .await
            .map_err(push_pg)?;
        if let Some(r) = recorded {
            let (received, changed, refused): (i32, i32, Option<String>) = (r.get(0), r.get(1), r.get(2));
            // The refused rows are answered again, with their current version.
            let mut again = Vec::new();
            for (table, key) in crate::refused_keys(refused.as_deref()).map_err(PushError::Store)? {
                let pt = self.table(&table)?;
                let state = load(&tx, pt, std::slice::from_ref(&key), false).await?.remove(&key).map(|p| p.state);
                let current = state.unwrap_or_default();
                again.push(crate::RefusedRow { table, key, current, reason: crate::Refusal::Stale });
            }
            return Ok((
                PushOutcome {
                    received: received as usize,
                    changed: changed as usize,
                    replayed: true,
                    cursor: None,
                    refused: again,
                },
                None,
            ));
        }
        // A push waits at most briefly for a row lock: when it collides with another
        // application's statement it gives way (and retries) before PostgreSQL's deadlock
        // detector, which runs after a second, could pick the application as the victim.
        //
        // The rows a push reads are looked up by key, and the planner is told that such
        // reads are cheap (the common setting for SSDs): costed for spinning disks, it
        // prefers scanning a mid-sized table to a batch's index lookups. (Not
        // `enable_seqscan = off`: the penalty it adds to a plan's cost makes PostgreSQL
        // JIT-compile small queries.)
        tx.batch_execute(
            "SET LOCAL ferry.applying = 'on'; SET LOCAL lock_timeout = '200ms'; SET LOCAL random_page_cost = 1.1",
        )
        .await
        .map_err(push_pg)?;
        let found = tx.query(crate::ROLE_SITES_SQL, &[]).await.map_err(push_pg)?;
        let role_sites = crate::Deciding::role_sites(found.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
        let sites = crate::batch_sites(rows.values().flat_map(|states| states.values().map(|r| &r.state)));
        let sql = format!("{} = ANY($1)", crate::SITE_DEVICES_SQL);
        let found = tx.query(&sql, &[&sites]).await.map_err(push_pg)?;
        let site_devices =
            crate::site_devices(found.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))));
        let env = crate::Deciding { server_site: self.inner.site, role_sites, site_devices, now_ms: crate::wall_ms() };
        let mut changed = 0;
        let mut tally = crate::Tally::new();
        for (table, states) in rows {
            let pt = self.table(table)?;
            let keys: Vec<String> = states.keys().cloned().collect();
            let mut stored = load(&tx, pt, &keys, true).await?;
            let mut writes = Vec::new();
            for (key, row) in states {
                let prior = stored.remove(key).map(|p| (p.state, p.owner));
                let merged = crate::merge_pushed(&pt.table, who, prior, row, &env)?;
                let incoming = &row.state;
                if let Some((contest, before)) = &merged.conflict {
                    let origin: Option<String> = tx
                        .query_opt("SELECT origin FROM _ferry_rows WHERE tbl = $1 AND pk = $2", &[table, key])
                        .await
                        .map_err(push_pg)?
                        .and_then(|r| r.get(0));
                    let c = crate::conflicts::new_conflict(
                        &pt.table,
                        key,
                        (before, origin.as_deref()),
                        (incoming, &who.device_id),
                        contest,
                        merged.open,
                    );
                    insert_conflict(&tx, &c).await.map_err(push_pg)?;
                }
                if let Some((state, owner)) = tally.take(table, key, merged) {
                    writes.push((key.clone(), state, owner));
                }
            }
            if !writes.is_empty() {
                changed += writes.len();
                write(&tx, pt, &who.device_id, &writes).await?;
            }
        }
        for site in &tally.sites {
            tx.execute(
                "INSERT INTO _ferry_sites (site, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&site.to_string(), &who.device_id],
            )
            .await
            .map_err(push_pg)?;
        }
        if changed > 0 {
            // Every server process on this database LISTENs; delivered at commit.
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&NOTIFY_CHANNEL, &notice_payload(&tally.owners, Some(&who.device_id))],
            )
            .await
            .map_err(push_pg)?;
        }
        let xid: String = tx.query_one("SELECT pg_current_xact_id()::text", &[]).await.map_err(push_pg)?.get(0);
        tx.execute(
            "INSERT INTO _ferry_batches (device_id, batch_id, received, changed, refused) VALUES ($1, $2, $3, $4, $5)",
            &[&who.device_id, &batch_id, &(received as i32), &(changed as i32), &tally.refused_keys()],
        )
        .await
        .map_err(push_pg)?;
        tx.commit().await.map_err(push_pg)?;
        if changed > 0 {
            wrote(&self.inner, rows.keys().cloned(), changed);
        }
        // Outside the push's transaction (concurrent pushes of one device would otherwise
        // conflict on this row) and at most once a minute; losing it costs nothing.
        let _ = client
            .execute(
                "UPDATE _ferry_devices SET last_seen = now()
                 WHERE id = $1 AND (last_seen IS NULL OR last_seen < now() - interval '1 minute')",
                &[&who.device_id],
            )
            .await;
        let caught_up = tally.caught_up();
        Ok((
            PushOutcome { received, changed, replayed: false, cursor: None, refused: tally.refused },
            caught_up.then_some(xid),
        ))
    }

    /// After a committed push: when the client's cursor was caught up and nothing but this
    /// push's transaction has become visible since, a cursor just past it.
    async fn cursor_after_push(&self, who: &Principal, cursor: &str, xid: &str) -> Result<Option<String>> {
        let c = Cursor::parse(cursor, &self.inner.epoch)?;
        if c.cur.is_some() {
            return Ok(None);
        }
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let now: String = tx.query_one("SELECT pg_current_snapshot()::text", &[]).await.map_err(pg)?.get(0);
        let others: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM _ferry_rows
                   WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot) AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)
                     AND xid <> $2::text::xid8 AND (owner IS NULL OR owner = $3))",
                &[&c.prev, &xid, &who.user_id],
            )
            .await
            .map_err(pg)?
            .get(0);
        tx.commit().await.map_err(pg)?;
        Ok((!others).then(|| Cursor { epoch: c.epoch, v: FEED_VERSION, prev: now, cur: None, after: None }.encode()))
    }
}

impl PgStore {
    /// A page of the feed: of `user`'s rows and rows without an owner, or of every row.
    async fn feed_page(
        &self,
        user: Option<&str>,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
    ) -> Result<PullPage> {
        let selection = crate::selected_tables(&self.inner.schema, tables)?;
        let c = Cursor::parse(cursor, &self.inner.epoch)?;
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let cur = match &c.cur {
            Some(cur) => cur.clone(),
            None => tx.query_one("SELECT pg_current_snapshot()::text", &[]).await.map_err(pg)?.get(0),
        };
        let (after_xid, after_tbl, after_pk) = c.after.clone().unwrap_or(("0".into(), String::new(), String::new()));
        let keys = tx
            .query(
                if user.is_some() { FEED } else { FEED_ALL },
                &[&c.prev, &cur, &user, &after_xid, &after_tbl, &after_pk, &(limit as i64 + 1), &selection],
            )
            .await
            .map_err(pg)?;
        let more = keys.len() > limit;
        let keys: Vec<(String, String, String)> =
            keys.iter().take(limit).map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let mut by_table: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (_, t, k) in &keys {
            by_table.entry(t.as_str()).or_default().push(k.clone());
        }
        let mut states: HashMap<(String, String), RowState> = HashMap::new();
        for (table, ks) in by_table {
            let pt = self.table(table)?;
            for (k, s) in load(&tx, pt, &ks, false).await? {
                states.insert((table.to_owned(), k), s.state);
            }
        }
        tx.commit().await.map_err(pg)?;
        let rows = keys
            .iter()
            .filter_map(|(_, t, k)| {
                states.remove(&(t.clone(), k.clone())).map(|state| FeedRow { table: t.clone(), key: k.clone(), state })
            })
            .collect();
        let next = if more {
            Cursor { epoch: c.epoch, v: FEED_VERSION, prev: c.prev, cur: Some(cur), after: keys.last().cloned() }
        } else {
            Cursor { epoch: c.epoch, v: FEED_VERSION, prev: cur, cur: None, after: None }
        };
        Ok(PullPage { rows, cursor: next.encode(), more })
    }
}

impl Store for PgStore {
    fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    fn id(&self) -> &str {
        &self.inner.id
    }

    async fn add_user(&self, name: &str) -> Result<User> {
        let name = crate::check_name("user", name)?;
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let id = uuid::Uuid::now_v7().to_string();
        match client.execute("INSERT INTO _ferry_users (id, name) VALUES ($1, $2)", &[&id, &name]).await {
            Ok(_) => Ok(User { id, name }),
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "23505") => {
                Err(StoreError::Exists(format!("user '{name}' already exists; pick another name")))
            }
            Err(e) => Err(pg(e)),
        }
    }

    async fn revoke_devices(&self, user: Option<&str>, device: &str) -> Result<Vec<String>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let sql = format!("UPDATE _ferry_devices SET revoked_at = now() WHERE {} RETURNING id", crate::DEVICES_NAMED);
        let rows = client.query(&sql, &[&user, &device]).await.map_err(pg)?;
        if rows.is_empty() {
            return Err(crate::no_device(user, device));
        }
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn create_device(&self, user: &str, device: &str, admin: bool, role: Option<&str>) -> Result<NewToken> {
        let device = crate::check_name("device", device)?;
        let role = crate::check_role(role)?;
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let row =
            client.query_opt("SELECT id FROM _ferry_users WHERE name = $1 OR id = $1", &[&user]).await.map_err(pg)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(format!(
                "no user '{user}'; create it first with `ferry user add {user}`"
            )));
        };
        let user_id: String = row.get(0);
        let token = new_token()?;
        let device_id = uuid::Uuid::now_v7().to_string();
        client
            .execute(
                "INSERT INTO _ferry_devices (id, user_id, name, token_hash, admin, role) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&device_id, &user_id, &device, &token_hash(&token), &admin, &role],
            )
            .await
            .map_err(pg)?;
        Ok(NewToken { device_id, token })
    }

    async fn revoked_among(&self, device_ids: &[String]) -> Result<Vec<String>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT x FROM unnest($1::text[]) x
                 WHERE NOT EXISTS (SELECT 1 FROM _ferry_devices WHERE id = x AND revoked_at IS NULL)",
                &[&device_ids],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                "SELECT u.id, u.name, d.id, d.name, d.admin, d.role FROM _ferry_devices d JOIN _ferry_users u ON u.id = d.user_id
                 WHERE d.token_hash = $1 AND d.revoked_at IS NULL",
                &[&token_hash(token)],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| Principal {
            user_id: r.get(0),
            user_name: r.get(1),
            device_id: r.get(2),
            device_name: r.get(3),
            admin: r.get(4),
            role: r.get(5),
        }))
    }

    async fn push(
        &self,
        who: &Principal,
        batch_id: &str,
        cursor: Option<&str>,
        rows: Vec<IncomingRow>,
    ) -> Result<PushOutcome> {
        if let Some(c) = cursor {
            Cursor::parse(c, &self.inner.epoch)?;
        }
        let received = rows.len();
        // Grouped by table and key (rows for one key merged), in a fixed order, so that
        // concurrent pushes lock bookkeeping rows in the same order.
        // A key sent twice in one batch is one change: the states merged, the first version seen.
        let mut grouped: BTreeMap<String, BTreeMap<String, IncomingRow>> = BTreeMap::new();
        for r in rows {
            self.table(&r.table)?;
            match grouped.entry(r.table.clone()).or_default().entry(r.key.clone()) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(r);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    o.get_mut().state.merge(&r.state);
                }
            }
        }
        let mut attempt = 0;
        let (mut outcome, xid) = loop {
            attempt += 1;
            match self.push_once(who, batch_id, &grouped, received).await {
                Ok(done) => break done,
                Err(PushError::Store(e)) => return Err(e),
                Err(PushError::Retry(e)) if attempt >= PUSH_ATTEMPTS => {
                    let why = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned());
                    return Err(StoreError::Unavailable(format!(
                        "the batch kept conflicting with concurrent writes ({why}); retry"
                    )));
                }
                Err(PushError::Retry(_)) => {
                    // Back off a little, more each time, so colliding writers spread out.
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
            }
        };
        if let (Some(c), Some(xid)) = (cursor, xid) {
            outcome.cursor = self.cursor_after_push(who, c, &xid).await?;
        }
        Ok(outcome)
    }

    async fn pull_tables(
        &self,
        who: &Principal,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
    ) -> Result<PullPage> {
        self.feed_page(Some(&who.user_id), cursor, limit, tables).await
    }

    async fn scan(&self, cursor: &str, limit: usize) -> Result<PullPage> {
        self.feed_page(None, cursor, limit, None).await
    }

    async fn conflicts(&self, filter: ConflictFilter) -> Result<Vec<ConflictRecord>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let cond = match filter {
            ConflictFilter::All => "true",
            ConflictFilter::Open => "resolved_at IS NULL",
            ConflictFilter::Resolved => "resolved_at IS NOT NULL",
        };
        let rows = client
            .query(&format!("SELECT {PG_CONFLICT_COLUMNS} FROM _ferry_conflicts WHERE {cond} ORDER BY id DESC"), &[])
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(conflict_row).collect())
    }

    async fn resolve_conflict(&self, id: i64, keep: Keep) -> Result<ConflictRecord> {
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(pg)?;
        let select = format!("SELECT {PG_CONFLICT_COLUMNS} FROM _ferry_conflicts WHERE id = $1");
        let row = tx.query_opt(&format!("{select} FOR UPDATE"), &[&id]).await.map_err(pg)?;
        let record = row.as_ref().map(conflict_row);
        let record = crate::conflicts::check_open(id, record.as_ref())?;
        let pt = self.table(&record.table)?;
        let registers = crate::conflicts::kept_registers(&pt.table, record, keep).map_err(StoreError::Internal)?;
        tx.batch_execute("SET LOCAL ferry.applying = 'on'").await.map_err(pg)?;
        let key = record.key.clone();
        let Some(prior) = load(&tx, pt, std::slice::from_ref(&key), true).await?.remove(&key) else {
            return Err(StoreError::NotFound(format!("{} '{key}' no longer exists", record.table)));
        };
        let mut state = prior.state;
        if let Some(c) = crate::conflicts::overwritten_by_resolution(&pt.table, record, keep, &state) {
            insert_conflict(&tx, &c).await.map_err(pg)?;
        }
        let at = ferry_core::Clock::new(self.inner.site, state.max_clock()).tick(crate::wall_ms());
        ferry_core::strategy::write_registers(&mut state, registers, at);
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&NOTIFY_CHANNEL, &notice_payload(&[prior.owner.clone()].into(), None)],
        )
        .await
        .map_err(pg)?;
        write(&tx, pt, "manual", &[(key, state, prior.owner)]).await?;
        let winner: BTreeMap<&str, &str> = record.fields.iter().map(|f| (f.as_str(), keep.name())).collect();
        tx.execute(
            "UPDATE _ferry_conflicts SET resolved_by = 'manual', resolved_at = now(), winner = $2 WHERE id = $1",
            &[&id, &serde_json::to_string(&winner).expect("strings serialize")],
        )
        .await
        .map_err(pg)?;
        let done = conflict_row(&tx.query_one(&select, &[&id]).await.map_err(pg)?);
        tx.commit().await.map_err(pg)?;
        Ok(done)
    }

    async fn get_row(&self, who: &Principal, table: &str, key: &str) -> Result<Option<RowState>> {
        let pt = self.table(table)?;
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let key = key.to_owned();
        let found = load(&tx, pt, std::slice::from_ref(&key), false).await.map_err(StoreError::from)?.remove(&key);
        Ok(found.filter(|p| p.owner.as_ref().is_none_or(|o| *o == who.user_id)).map(|p| p.state))
    }

    async fn file_refs(&self, who: &Principal, hashes: &[String]) -> Result<std::collections::BTreeSet<String>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let mut found = std::collections::BTreeSet::new();
        for (t, col, owner) in crate::file_columns(&self.inner.schema) {
            let (q, c) = (quote(&t.name), quote(col));
            let rows = match owner {
                Some(o) => {
                    let sql =
                        format!("SELECT DISTINCT {c} FROM {q} WHERE {c} = ANY($1::text[]) AND {}::text = $2", quote(o));
                    client.query(&sql, &[&hashes, &who.user_id]).await
                }
                None => {
                    let sql = format!("SELECT DISTINCT {c} FROM {q} WHERE {c} = ANY($1::text[])");
                    client.query(&sql, &[&hashes]).await
                }
            }
            .map_err(pg)?;
            found.extend(rows.iter().map(|r| r.get::<_, String>(0)));
        }
        Ok(found)
    }

    async fn referenced_files(&self) -> Result<std::collections::BTreeSet<String>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let mut found = std::collections::BTreeSet::new();
        for (t, col, _) in crate::file_columns(&self.inner.schema) {
            let c = quote(col);
            let sql = format!("SELECT DISTINCT {c} FROM {} WHERE {c} IS NOT NULL", quote(&t.name));
            found.extend(client.query(&sql, &[]).await.map_err(pg)?.iter().map(|r| r.get::<_, String>(0)));
        }
        Ok(found)
    }

    fn notices(&self) -> tokio::sync::broadcast::Receiver<crate::Notice> {
        let rx = self.inner.notices.subscribe();
        if !self.inner.watching.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(listen(Arc::downgrade(&self.inner)));
        }
        rx
    }

    async fn conflict(&self, id: i64) -> Result<Option<ConflictRecord>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(&format!("SELECT {PG_CONFLICT_COLUMNS} FROM _ferry_conflicts WHERE id = $1"), &[&id])
            .await
            .map_err(pg)?;
        Ok(row.as_ref().map(conflict_row))
    }
}

/// Rows of an existing table that break a schema rule the table itself does not enforce:
/// NULL in a NOT NULL column, a value outside the allowed list.
async fn data_problems(
    tx: &Transaction<'_>,
    table: &Table,
    col: &ferry_core::schema::Column,
    nullable: bool,
) -> std::result::Result<Vec<String>, PushError> {
    use ferry_core::schema::quote;
    let (t, c) = (quote(&table.name), quote(&col.name));
    let mut problems = Vec::new();
    let is_key = col.name == table.pk_column().name;
    if nullable && (col.not_null || is_key) {
        let n: i64 =
            tx.query_one(&format!("SELECT count(*) FROM {t} WHERE {c} IS NULL"), &[]).await.map_err(push_pg)?.get(0);
        if n > 0 {
            problems.push(format!(
                "column '{}' has {n} rows with NULL but is NOT NULL in the schema; fill them in or make the column nullable in the schema",
                col.name
            ));
        }
    }
    if let Some(allowed) = &col.allowed {
        let bad: Vec<String> = tx
            .query(
                &format!(
                    "SELECT DISTINCT {c}::text FROM {t} WHERE {c} IS NOT NULL AND NOT ({c}::text = ANY($1)) LIMIT 3"
                ),
                &[allowed],
            )
            .await
            .map_err(push_pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !bad.is_empty() {
            problems.push(format!(
                "column '{}' holds values the schema does not allow ({}); the schema allows only {}",
                col.name,
                bad.join(", "),
                allowed.join(", ")
            ));
        }
    }
    Ok(problems)
}

/// The cluster's identity (`pg_control_system().system_identifier`), which changes when a
/// database is restored or replicated into another cluster. Without the right to read it,
/// "unknown": restores are then still caught when stored ids lie ahead of the cluster's.
async fn epoch_of(tx: &Transaction<'_>) -> Result<String> {
    tx.batch_execute("SAVEPOINT ferry_epoch").await.map_err(pg)?;
    match tx.query_one("SELECT system_identifier::text FROM pg_control_system()", &[]).await {
        Ok(row) => {
            tx.batch_execute("RELEASE SAVEPOINT ferry_epoch").await.map_err(pg)?;
            Ok(row.get(0))
        }
        Err(_) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT ferry_epoch").await.map_err(pg)?;
            Ok("unknown".to_owned())
        }
    }
}

const PG_CONFLICT_COLUMNS: &str = "id, tbl, pk, kind, fields, strategy, stored, incoming, winner, resolved_by,
    to_char(resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
    to_char(detected_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

fn conflict_row(r: &Row) -> ConflictRecord {
    crate::conflicts::record(
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get::<_, &str>(4),
        r.get(5),
        r.get::<_, &str>(6),
        r.get::<_, &str>(7),
        r.get::<_, &str>(8),
        r.get(9),
        r.get(10),
        r.get(11),
    )
}

/// A read-only transaction that sees one snapshot throughout.
/// The channel every change is announced on: pushes and resolutions (with the owners of the
/// changed rows) and direct SQL writes (`*`, by a statement trigger).
const NOTIFY_CHANNEL: &str = "ferry_changes";

/// A NOTIFY payload: `[owners, origin]` as JSON (owners of the changed rows, `null` for
/// shared rows; the pushing device), or `*` when there are too many owners to list
/// (PostgreSQL limits payloads to 8000 bytes).
fn notice_payload(owners: &std::collections::BTreeSet<Option<String>>, origin: Option<&str>) -> String {
    if owners.len() > 100 {
        return "*".to_owned();
    }
    serde_json::to_string(&(owners, origin)).expect("strings serialize")
}

/// Forwards this database's change notifications to the store's subscribers, reconnecting
/// after a lost connection (and then announcing a change to everyone, since some may have
/// been missed).
async fn listen(inner: std::sync::Weak<Inner>) {
    use futures_util::StreamExt;
    let mut first = true;
    loop {
        let Some(cfg) = inner.upgrade().map(|i| i.listen_cfg.clone()) else { return };
        if let Ok((client, mut conn)) = cfg.connect(NoTls).await {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            let listening = async { client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).await.ok() };
            tokio::pin!(listening);
            let (reconnected, mut listened) = (!first, false);
            first = false;
            loop {
                tokio::select! {
                    r = &mut listening, if !listened => match r {
                        Some(()) => {
                            listened = true;
                            // Changes made while no LISTEN was in place may have been missed:
                            // once it is in place again, everyone pulls.
                            if reconnected && let Some(i) = inner.upgrade() {
                                let _ = i.notices.send(crate::Notice::anyone());
                            }
                        }
                        None => break,
                    },
                    m = messages.next() => match m {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                            let Some(i) = inner.upgrade() else { return };
                            let notice = match serde_json::from_str::<(Vec<Option<String>>, Option<String>)>(n.payload()) {
                                Ok((owners, origin)) => crate::Notice { owners: Some(owners), origin },
                                Err(_) => crate::Notice::anyone(),
                            };
                            let _ = i.notices.send(notice);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                }
            }
        }
        if inner.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Logs a conflict; a second one with the same dedupe key is ignored (a retried push).
async fn insert_conflict(
    tx: &tokio_postgres::Transaction<'_>,
    c: &crate::conflicts::NewConflict,
) -> std::result::Result<u64, tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO _ferry_conflicts
           (tbl, pk, kind, fields, strategy, stored, incoming, winner, resolved_by, resolved_at, dedupe)
         VALUES ($1, $2, $10, $3, $8, $4, $5, $6, CASE WHEN $9 THEN $8 END, CASE WHEN $9 THEN now() END, $7)
         ON CONFLICT (dedupe) DO NOTHING",
        &[&c.table, &c.key, &c.fields, &c.stored, &c.incoming, &c.winner, &c.dedupe, &c.strategy, &c.resolved, &c.kind],
    )
    .await
}

async fn snapshot(client: &mut tokio_postgres::Client) -> Result<Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn bad_data_of_every_kind_is_refused_in_ferrys_words_naming_only_identifiers() {
        let codes = [
            "22001", "22003", "22007", "22008", "22021", "22P02", "22P05", "23000", "23502", "23503", "23505", "23514",
            "23P01", "54000", "54001", "54011",
        ];
        for code in codes {
            let words = refusal(code, Some("words_body_key"), Some("body"))
                .unwrap_or_else(|| panic!("{code} is not refused as invalid"));
            assert!(words.starts_with("a "), "{code}: {words}");
            assert!(!words.ends_with('.'), "{code}: {words}");
        }
        let unique = refusal("23505", Some("words_body_key"), None).unwrap();
        assert!(unique.contains("the unique constraint 'words_body_key'"), "{unique}");
        assert!(refusal("23502", None, Some("body")).unwrap().contains("column 'body'"));
        assert!(refusal("54000", None, None).unwrap().contains("\"Limits\" in docs/schema.md"));
        assert!(refusal("54001", None, None).unwrap().contains("JSON value is nested too deeply"));
        for internal in ["40001", "42P01", "XX000", "P0001"] {
            assert_eq!(refusal(internal, None, None), None, "{internal}");
        }
    }
}

#[cfg(test)]
mod cursor_tests {
    use super::{B64, Cursor, FEED_VERSION};
    use base64::Engine as _;

    const EPOCH: &str = "7000000000000000001";

    fn refused(c: &str) -> String {
        match Cursor::parse(c, EPOCH) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("cursor {c:?} was taken"),
        }
    }

    fn encoded(json: &str) -> String {
        format!("pg.{}", B64.encode(json))
    }

    /// A cursor given out reads back as itself: its snapshots, its window and last row.
    #[test]
    fn a_cursor_reads_back_as_it_was_given_out() {
        let c = Cursor {
            epoch: EPOCH.into(),
            v: FEED_VERSION,
            prev: "100:105:101,103".into(),
            cur: Some("110:112:".into()),
            after: Some(("104".into(), "notes".into(), "0190f5a2-7c1e-7d3a-9b1f-2c3d4e5f6a7b".into())),
        };
        let text = c.encode();
        assert!(text.starts_with("pg."), "{text}");
        let back = Cursor::parse(&text, EPOCH).unwrap();
        assert_eq!(back.encode(), text);
        assert_eq!((back.prev.as_str(), back.cur.as_deref()), ("100:105:101,103", Some("110:112:")));
        assert_eq!(back.after.unwrap().1, "notes");
    }

    /// The start, a cursor of another store epoch (a restored or moved database) and one of
    /// an older feed version all start over from the beginning.
    #[test]
    fn the_start_another_epoch_and_an_older_version_start_over() {
        for c in ["", "0"] {
            let start = Cursor::parse(c, EPOCH).unwrap();
            assert_eq!((start.prev.as_str(), start.cur.is_none()), (super::EMPTY_SNAPSHOT, true));
        }
        let other = Cursor { epoch: "other".into(), ..Cursor::parse("0", EPOCH).unwrap() };
        let other = Cursor { prev: "100:105:".into(), ..other };
        assert_eq!(Cursor::parse(&other.encode(), EPOCH).unwrap().prev, super::EMPTY_SNAPSHOT);
        let old = encoded(&format!(r#"{{"epoch":"{EPOCH}","v":0,"prev":"100:105:"}}"#));
        assert_eq!(Cursor::parse(&old, EPOCH).unwrap().prev, super::EMPTY_SNAPSHOT);
    }

    /// Anything else is refused with the cursor named (cut when long) and the fix.
    #[test]
    fn a_cursor_the_server_never_gave_out_is_refused_naming_it() {
        let long = "x".repeat(5000);
        for bad in [
            "12345".to_owned(),
            "pg.***".to_owned(),
            encoded("not json"),
            encoded(&format!(r#"{{"epoch":"{EPOCH}","v":{FEED_VERSION},"prev":"1:x:"}}"#)),
            encoded(&format!(r#"{{"epoch":"{EPOCH}","v":{FEED_VERSION},"prev":"1:2:","cur":"a:b:"}}"#)),
            long.clone(),
        ] {
            let e = refused(&bad);
            assert!(e.contains("cursor=0"), "{e}");
            assert!(e.contains(&bad.chars().take(20).collect::<String>()), "{e}");
            assert!(e.len() < 400, "the cursor is cut in the message: {} bytes", e.len());
        }
    }
}

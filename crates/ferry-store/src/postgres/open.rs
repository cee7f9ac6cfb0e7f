//! Start-up: the bookkeeping, comparing and adopting the application's tables, and the
//! capture of direct writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use ferry_core::schema::{Schema, Table, quote};
use ferry_core::{Hlc, SiteId};
use tokio_postgres::{NoTls, Transaction};

use super::sql::PgTable;
use super::statistics::Statistics;
use super::{Inner, PgStore, PushError, ddl, pg, pool_err, push_pg, retryable, sql};
use crate::{Result, StoreError};

/// An arbitrary constant: the advisory lock that serializes start-up DDL between processes.
const STARTUP_LOCK: i64 = 0x6665_7272_7900;

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
    Bookkeeping {
        new_id: &'a str,
        new_site: &'a str,
    },
    Renumber {
        epoch: &'a str,
    },
    /// `ruled`: the schema has `read` rules (pulls then take the indexes they need).
    Table {
        pt: &'a PgTable,
        pg_schema: &'a str,
        adopted_at: &'a str,
        ruled: bool,
    },
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
            Step::Table { pt, pg_schema, adopted_at, ruled } => {
                prepare_table(tx, pt, pg_schema, adopted_at, ruled).await.map(|()| None)
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
    ruled: bool,
) -> std::result::Result<(), PushError> {
    let table = &pt.table;
    let t = quote(&table.name);
    let alone = Schema { tables: vec![table.clone()] };
    let sql = format!(
        "{}{}{}",
        pt.capture(pg_schema),
        crate::file_indexes(&alone),
        crate::scope::table_indexes(table, ruled, ferry_core::rules::Dialect::Postgres)
    );
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
    let reaches_differ: bool = tx.query_one(&pt.reaches_differ(), &[]).await.map_err(push_pg)?.get(0);
    if untracked || owners_differ || reaches_differ {
        if !locked {
            tx.batch_execute(&format!("LOCK TABLE {t} {lock}")).await.map_err(push_pg)?;
        }
        tx.execute(&pt.adopt(), &[&adopted_at]).await.map_err(push_pg)?;
        tx.batch_execute(&pt.backfill_owner()).await.map_err(push_pg)?;
        tx.batch_execute(&pt.backfill_reach()).await.map_err(push_pg)?;
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
    pub async fn open(url: &str, device_schema: Schema) -> Result<PgStore> {
        let schema = device_schema.synced();
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
        let ruled = crate::scope::has_read_rules(&schema);
        for table in &schema.tables {
            let (pt, pg_schema) = (&tables[&table.name], start.pg_schema.as_str());
            startup_step(&mut client, Step::Table { pt, pg_schema, adopted_at: &adopted_at, ruled }).await?;
        }
        let rows: f64 = client.query_one(Statistics::ROWS, &[]).await.map_err(pg)?.get(0);
        let Startup { id, site, epoch, .. } = start;
        drop(client);
        let notices = tokio::sync::broadcast::channel(crate::NOTICE_BUFFER).0;
        let watching = std::sync::atomic::AtomicBool::new(false);
        let stats = Statistics::new(rows);
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                id,
                epoch,
                site,
                schema,
                device_schema,
                tables,
                listen_cfg,
                notices,
                watching,
                stats,
                role: std::sync::OnceLock::new(),
            }),
        })
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

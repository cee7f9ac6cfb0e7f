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
//!
//! Its rooms: `open` (start-up: bookkeeping, comparing and adopting tables), `push` (merging
//! batches into stored rows), `feed` (the change feed and its cursor), `conflicts` (the
//! conflict log and resolutions), `notify` (change announcements), `statistics` (keeping the
//! planner's statistics current), `sql` and `ddl` (the statements). This file holds the
//! store itself, its error mapping and reading stored rows.

mod conflicts;
mod ddl;
mod feed;
mod notify;
mod open;
mod push;
mod sql;
mod statistics;

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use ferry_core::schema::{ColType, Schema, Table, quote};
use ferry_core::{RowState, SiteId, Value};
use tokio_postgres::{Row, Transaction};

use self::feed::snapshot;
use self::notify::listen;
use self::sql::{PgTable, Wire};
use self::statistics::Statistics;
use crate::{
    ConflictFilter, ConflictRecord, ConflictSide, DeviceRecord, IncomingRow, NewToken, Principal, PullPage,
    PushOutcome, Result, Store, StoreError, User, new_token, token_hash,
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
    /// What syncs ([`Schema::synced`]); `device_schema` is the whole schema.
    schema: Schema,
    device_schema: Schema,
    tables: HashMap<String, PgTable>,
    stats: Statistics,
    /// This server's role (`[server] role`), once set.
    role: std::sync::OnceLock<String>,
}

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

impl PgStore {
    /// The `CREATE TABLE IF NOT EXISTS` this store runs for a synced table that does not
    /// exist yet; tests and benchmarks use it to create a table as an application's own
    /// migration would.
    pub fn create_table_sql(table: &Table) -> String {
        ddl::create_table(table)
    }

    fn table(&self, name: &str) -> Result<&PgTable> {
        self.inner.tables.get(name).ok_or_else(|| crate::unknown_table(&self.inner.device_schema, name))
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
        let (pk, stored) = stored_of(pt, &row)?;
        out.insert(pk, stored);
    }
    Ok(out)
}

/// A row of [`PgTable::select`] (or `select_all`): its key and what is stored.
fn stored_of(pt: &PgTable, row: &Row) -> Result<(String, Stored)> {
    let pk: String = row.get(0);
    let owner: Option<String> = row.get(6);
    let raw = (row.get(1), row.get(2), row.get(3), row.get(4), row.get(5), 0, owner.clone(), 0);
    let meta = ferry_sqlite::parse_meta(&pt.table, &pk, raw).map_err(|e| StoreError::Internal(e.to_string()))?;
    let has_row: bool = row.get(7);
    let values =
        has_row.then(|| pt.table.data_columns().enumerate().map(|(i, c)| value_at(row, 8 + i, c.ty)).collect());
    let state = ferry_sqlite::state_of(&pt.table, &meta, values);
    Ok((pk, Stored { state, owner }))
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

impl Store for PgStore {
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

    async fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRecord>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        if let Some(u) = user {
            let known: bool = client
                .query_one("SELECT EXISTS (SELECT 1 FROM _ferry_users WHERE id = $1 OR name = $1)", &[&u])
                .await
                .map_err(pg)?
                .get(0);
            if !known {
                return Err(crate::no_user(u));
            }
        }
        let at = |c: &str| format!("to_char(d.{c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')");
        let sql = format!(
            "SELECT d.id, d.name, d.user_id, u.name, d.admin, d.role, {}, {}, {}
             FROM _ferry_devices d JOIN _ferry_users u ON u.id = d.user_id
             WHERE $1::text IS NULL OR u.id = $1 OR u.name = $1 ORDER BY u.name, d.created_at, d.id",
            at("created_at"),
            at("last_seen"),
            at("revoked_at")
        );
        let rows = client.query(&sql, &[&user]).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| DeviceRecord {
                id: r.get(0),
                name: r.get(1),
                user_id: r.get(2),
                user_name: r.get(3),
                admin: r.get(4),
                role: r.get(5),
                created_at: r.get(6),
                last_seen: r.get(7),
                revoked_at: r.get(8),
            })
            .collect())
    }

    async fn device_seen(&self, device_id: &str) -> Result<()> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        client.execute("UPDATE _ferry_devices SET last_seen = now() WHERE id = $1", &[&device_id]).await.map_err(pg)?;
        Ok(())
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
            peer: false,
        }))
    }

    async fn push(
        &self,
        who: &Principal,
        batch_id: &str,
        cursor: Option<&str>,
        rows: Vec<IncomingRow>,
    ) -> Result<PushOutcome> {
        self.push_batch(who, batch_id, cursor, rows).await
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
            return self.feed_page(feed::Whose::Peer(&who.device_id), cursor, limit, tables).await;
        }
        let subs = crate::scope::subscriptions(&self.inner.schema, subscriptions)?;
        if crate::scope::has_read_rules(&self.inner.schema) {
            return self.feed_page_ruled(&who.user_id, cursor, limit, tables, &subs).await;
        }
        self.feed_page(feed::Whose::User(&who.user_id), cursor, limit, tables).await
    }

    async fn scan(&self, cursor: &str, limit: usize) -> Result<PullPage> {
        self.feed_page(feed::Whose::All, cursor, limit, None).await
    }

    async fn scope(&self, user_id: &str) -> Result<crate::Scope> {
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let scope = self.scope_in(&tx, user_id, None).await?;
        tx.commit().await.map_err(pg)?;
        Ok(scope)
    }

    async fn conflicts(&self, filter: ConflictFilter) -> Result<Vec<ConflictRecord>> {
        self.list_conflicts(filter).await
    }

    async fn conflict_counts(&self) -> Result<Vec<crate::ConflictCount>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let rows = client.query(crate::CONFLICT_COUNTS_SQL, &[]).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| crate::ConflictCount {
                table: r.get(0),
                strategy: r.get(1),
                open: r.get(2),
                count: r.get::<_, i64>(3).max(0) as u64,
            })
            .collect())
    }

    async fn compact(&self, before_ms: u64) -> Result<crate::Compacted> {
        let bound = crate::clock_bound(before_ms);
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let candidates = client
            .query("SELECT tbl, pk FROM _ferry_rows WHERE NOT alive AND alive_at < $1", &[&bound])
            .await
            .map_err(pg)?;
        drop(client);
        let candidates: Vec<(String, String)> = candidates.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut out = crate::Compacted::default();
        // A chunk per transaction, each key checked again: a writer waits at most for one
        // chunk, and a key written since stays.
        for chunk in candidates.chunks(crate::COMPACT_CHUNK) {
            let (tables, keys): (Vec<String>, Vec<String>) = chunk.iter().cloned().unzip();
            let mut client = self.inner.pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg)?;
            let gone = tx
                .query(
                    "DELETE FROM _ferry_rows r USING unnest($1::text[], $2::text[]) AS k(tbl, pk)
                     WHERE r.tbl = k.tbl AND r.pk = k.pk AND NOT r.alive AND r.alive_at < $3
                     RETURNING r.tbl, r.pk, r.xid::text, r.alive_at",
                    &[&tables, &keys, &bound],
                )
                .await
                .map_err(pg)?;
            let xids = || gone.iter().map(|r| r.get::<_, String>(2));
            let low = xids().min_by_key(|x| x.parse::<u64>().unwrap_or(0));
            if let (Some(top), Some(low)) = (xids().max_by_key(|x| x.parse::<u64>().unwrap_or(0)), low) {
                let (tables, keys): (Vec<String>, Vec<String>) = gone.iter().map(|r| (r.get(0), r.get(1))).unzip();
                let deleted_at: Vec<String> = gone.iter().map(|r| r.get(3)).collect();
                // A base that predates the deletion stays: that peer never saw it, and its
                // link's catch-up tells the deletion from a row never received by it.
                tx.execute(
                    "DELETE FROM _ferry_peer_bases b USING unnest($1::text[], $2::text[], $3::text[]) AS k(tbl, pk, at)
                     WHERE b.tbl = k.tbl AND b.pk = k.pk AND b.clocks::jsonb ->> '*' = k.at",
                    &[&tables, &keys, &deleted_at],
                )
                .await
                .map_err(pg)?;
                tx.execute(
                    "INSERT INTO _ferry_store (key, value) VALUES ('horizon', $1)
                     ON CONFLICT (key) DO UPDATE SET value = greatest(_ferry_store.value::xid8, excluded.value::xid8)::text",
                    &[&top],
                )
                .await
                .map_err(pg)?;
                // The oldest removed transaction: a snapshot that still saw it running missed it.
                tx.execute(
                    "INSERT INTO _ferry_store (key, value) VALUES ('horizon_low', $1)
                     ON CONFLICT (key) DO UPDATE SET value = least(_ferry_store.value::xid8, excluded.value::xid8)::text",
                    &[&low],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            out.tombstones += gone.len() as u64;
        }
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        let horizon: Option<String> = tx
            .query_opt("SELECT value FROM _ferry_store WHERE key = 'horizon'", &[])
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        if let Some(h) = &horizon {
            // Old reaches serve only cursors the horizon has made too old.
            out.exits = tx.execute("DELETE FROM _ferry_exits WHERE xid <= $1::text::xid8", &[h]).await.map_err(pg)?;
            out.horizon = h.parse().unwrap_or(0);
        }
        out.batches = tx
            .execute(
                "DELETE FROM _ferry_batches WHERE applied_at < to_timestamp($1::float8 / 1000)",
                &[&(before_ms as f64)],
            )
            .await
            .map_err(pg)?;
        tx.execute(
            "INSERT INTO _ferry_store (key, value) VALUES ('compacted_before', $1::bigint::text)
             ON CONFLICT (key) DO UPDATE SET value = greatest(_ferry_store.value::bigint, excluded.value::bigint)::text",
            &[&(before_ms as i64)],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }

    async fn feed_snapshot(
        &self,
        who: &Principal,
        tables: Option<Vec<String>>,
        page: usize,
        out: tokio::sync::mpsc::Sender<Vec<crate::FeedRow>>,
    ) -> Result<String> {
        use crate::scope::FeedSql;
        let (selected, ruled) = crate::snapshot_of(&self.inner.schema, who, tables.as_deref())?;
        let user = who.user_id.clone();
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        // One snapshot: the rows as of one moment, and where the feed ends then. The rows are
        // found by what the user may read now, not in feed order (no sort, each row read
        // once), and sent a table's batch at a time.
        let tx = snapshot(&mut client).await?;
        let snap: String = tx.query_one("SELECT pg_current_snapshot()::text", &[]).await.map_err(pg)?.get(0);
        let scope = self.scope_in(&tx, &user, None).await?;
        let dialect = ferry_core::rules::Dialect::Postgres;
        let f = FeedSql::visible(&self.inner.schema, dialect, &selected);
        let texts = f.texts(&user, &scope, &scope);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&user];
        params.extend(texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)));
        let send = |table: String, keys: Vec<String>| {
            let (tx, out) = (&tx, &out);
            async move {
                let pt = self.table(&table)?;
                let mut found = load(tx, pt, &keys, false).await?;
                let batch: Vec<crate::FeedRow> = keys
                    .into_iter()
                    .filter_map(|k| {
                        let state = found.remove(&k)?.state;
                        Some(crate::FeedRow { table: table.clone(), key: k, state })
                    })
                    .collect();
                out.send(batch).await.map_err(|_| StoreError::Unavailable("the snapshot's reader stopped".into()))
            }
        };
        let mut batches = crate::KeyBatches::new(page);
        if let Some(sql) = f.keys_query(dialect) {
            // Read a page at a time through a portal, so that the states load in between.
            let stmt = tx.prepare(&sql).await.map_err(pg)?;
            let portal = tx.bind(&stmt, &params).await.map_err(pg)?;
            loop {
                let rows = tx.query_portal(&portal, page as i32).await.map_err(pg)?;
                for row in &rows {
                    if let Some((table, keys)) = batches.add(row.get(0), row.get(1)) {
                        send(table, keys).await?;
                    }
                }
                if rows.len() < page {
                    break;
                }
            }
        }
        for (table, keys) in batches.rest() {
            send(table, keys).await?;
        }
        tx.commit().await.map_err(pg)?;
        if ruled {
            feed::keep_scope(&client, &scope).await?;
        }
        Ok(feed::device_snapshot_cursor(&self.inner.epoch, snap, ruled.then(|| scope.hash())))
    }

    async fn export(&self, tables: Vec<String>, out: tokio::sync::mpsc::Sender<Vec<crate::FeedRow>>) -> Result<String> {
        use futures_util::TryStreamExt;
        let tables: Vec<&PgTable> = tables.iter().map(|t| self.table(t)).collect::<Result<_>>()?;
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        // One snapshot for every table, and the feed position it stands for.
        let tx = snapshot(&mut client).await?;
        let snap: String = tx.query_one("SELECT pg_current_snapshot()::text", &[]).await.map_err(pg)?.get(0);
        for pt in tables {
            let rows = tx.query_raw(pt.select_all.as_str(), [&pt.table.name]).await.map_err(pg)?;
            futures_util::pin_mut!(rows);
            let mut batch = Vec::with_capacity(crate::EXPORT_ROWS);
            while let Some(row) = rows.try_next().await.map_err(pg)? {
                let (key, stored) = stored_of(pt, &row)?;
                batch.push(crate::FeedRow { table: pt.table.name.clone(), key, state: stored.state });
                if batch.len() == crate::EXPORT_ROWS {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(crate::EXPORT_ROWS));
                    out.send(full)
                        .await
                        .map_err(|_| StoreError::Unavailable("the snapshot's reader stopped".into()))?;
                }
            }
            if !batch.is_empty() {
                out.send(batch).await.map_err(|_| StoreError::Unavailable("the snapshot's reader stopped".into()))?;
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok(feed::snapshot_cursor(&self.inner.epoch, snap))
    }

    async fn restore(
        &self,
        who: &Principal,
        mut steps: tokio::sync::mpsc::Receiver<crate::RestoreStep>,
    ) -> Result<crate::Restored> {
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        // READ COMMITTED: rows are locked as they are merged, and a row a device changes
        // meanwhile is merged as it is then (never overwritten with an older version).
        let tx = client.transaction().await.map_err(pg)?;
        // The table grows inside this one transaction, where the planner still sees it as it
        // was (empty, for a first restore): without this, each batch's lookup by key became a
        // scan of everything restored so far.
        tx.batch_execute("SET LOCAL ferry.applying = 'on'; SET LOCAL enable_seqscan = off; SET LOCAL jit = off")
            .await
            .map_err(pg)?;
        let mut tally = crate::Tally::new();
        let mut done = crate::Restored::default();
        let mut tables = std::collections::BTreeSet::new();
        let mut empty = std::collections::BTreeSet::new();
        while let Some(step) = steps.recv().await {
            match step {
                crate::RestoreStep::Rows(rows) => {
                    done.rows += rows.len() as u64;
                    let grouped = self.grouped(rows)?;
                    for table in grouped.keys() {
                        if tables.insert(table.clone()) {
                            // Reads go on; writers of the table wait for the restore to
                            // commit, so rows new here can be copied in.
                            let lock = format!("LOCK TABLE {} IN EXCLUSIVE MODE", quote(table));
                            tx.batch_execute(&lock).await.map_err(pg)?;
                            let none = format!(
                                "SELECT NOT EXISTS (SELECT 1 FROM _ferry_rows WHERE tbl = $1)
                                   AND NOT EXISTS (SELECT 1 FROM {})",
                                quote(table)
                            );
                            if tx.query_one(&none, &[table]).await.map_err(pg)?.get::<_, bool>(0) {
                                empty.insert(table.clone());
                            }
                        }
                    }
                    done.changed += self
                        .merge_in(&tx, who, &grouped, &[], &mut tally, push::Fill::Locked { empty: &empty })
                        .await
                        .map_err(StoreError::from)? as u64;
                }
                crate::RestoreStep::Commit => {
                    if done.changed > 0 {
                        let origin = tally.notice_origin(who);
                        let notice = notify::notice_payload(&crate::Notice::of(&mut tally, origin));
                        tx.execute("SELECT pg_notify($1, $2)", &[&notify::NOTIFY_CHANNEL, &notice])
                            .await
                            .map_err(pg)?;
                    }
                    tx.commit().await.map_err(pg)?;
                    done.committed = true;
                    if done.changed > 0 {
                        statistics::wrote(&self.inner, tables, done.changed as usize);
                    }
                    return Ok(done);
                }
            }
        }
        tx.rollback().await.map_err(pg)?;
        Ok(done)
    }

    async fn count_rows(&self, tables: Vec<String>) -> Result<u64> {
        for t in &tables {
            self.table(t)?;
        }
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM _ferry_rows WHERE tbl = ANY($1::text[])", &[&tables])
            .await
            .map_err(pg)?
            .get(0);
        Ok(n as u64)
    }

    async fn save_full_sync(&self, run: crate::FullSyncRun) -> Result<()> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO _ferry_full_syncs (id, started_ms, run) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET run = excluded.run",
                &[&run.id, &(run.started_ms as i64), &crate::link_json(&run)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn full_syncs(&self, limit: usize) -> Result<Vec<crate::FullSyncRun>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT run, cancel FROM _ferry_full_syncs ORDER BY started_ms DESC, id DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(|r| crate::full_sync_of(r.get(0), r.get(1))).collect()
    }

    async fn full_sync(&self, id: &str) -> Result<Option<crate::FullSyncRun>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let row =
            client.query_opt("SELECT run, cancel FROM _ferry_full_syncs WHERE id = $1", &[&id]).await.map_err(pg)?;
        row.map(|r| crate::full_sync_of(r.get(0), r.get(1))).transpose()
    }

    async fn cancel_full_sync(&self, id: &str) -> Result<()> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        match client.execute("UPDATE _ferry_full_syncs SET cancel = true WHERE id = $1", &[&id]).await.map_err(pg)? {
            0 => Err(crate::no_full_sync(id)),
            _ => Ok(()),
        }
    }

    async fn set_link_start(&self, peer: &str, way: &str, cursor: &str) -> Result<()> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO _ferry_link_starts (peer, way, cursor) VALUES ($1, $2, $3)
                 ON CONFLICT (peer, way) DO UPDATE SET cursor = excluded.cursor",
                &[&peer, &way, &cursor],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn take_link_starts(&self, peer: &str) -> Result<Vec<(String, String)>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query("DELETE FROM _ferry_link_starts WHERE peer = $1 RETURNING way, cursor", &[&peer])
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn compacted_before(&self) -> Result<u64> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let at = client
            .query_opt("SELECT value::bigint FROM _ferry_store WHERE key = 'compacted_before'", &[])
            .await
            .map_err(pg)?
            .map_or(0, |r| r.get::<_, i64>(0));
        Ok(at.max(0) as u64)
    }

    async fn admin_password(&self) -> Result<Option<String>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let row =
            client.query_opt("SELECT value FROM _ferry_store WHERE key = 'admin_password'", &[]).await.map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set_admin_password(&self, hash: Option<&str>) -> Result<()> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        match hash {
            Some(h) => {
                client
                    .execute(
                        "INSERT INTO _ferry_store (key, value) VALUES ('admin_password', $1)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        &[&h],
                    )
                    .await
            }
            None => client.execute("DELETE FROM _ferry_store WHERE key = 'admin_password'", &[]).await,
        }
        .map_err(pg)?;
        Ok(())
    }

    async fn feed_position(&self) -> Result<String> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let snap: String = client.query_one("SELECT pg_current_snapshot()::text", &[]).await.map_err(pg)?.get(0);
        Ok(feed::snapshot_cursor(&self.inner.epoch, snap))
    }

    async fn row_digests(&self, table: &str, tombstones_from_ms: u64) -> Result<Vec<ferry_core::digest::Entry>> {
        use futures_util::TryStreamExt;
        let pt = self.table(table)?;
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let from = crate::clock_bound(tombstones_from_ms);
        // Streamed: a large table's rows are digested as they arrive, never held as rows.
        let rows = client
            .query_raw(
                "SELECT pk, alive, alive_at, clock, clocks FROM _ferry_rows WHERE tbl = $1 AND (alive OR alive_at >= $2)",
                [&pt.table.name, &from],
            )
            .await
            .map_err(pg)?;
        futures_util::pin_mut!(rows);
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(pg)? {
            let pk: String = row.get(0);
            let raw = (row.get(1), row.get(2), row.get(3), row.get(4), None, 0, None, 0);
            let meta =
                ferry_sqlite::parse_meta(&pt.table, &pk, raw).map_err(|e| StoreError::Internal(e.to_string()))?;
            let digest = ferry_sqlite::meta_digest(&pt.table, &pk, &meta);
            out.push(ferry_core::digest::Entry::new(pk, digest, !meta.alive));
        }
        Ok(out)
    }

    async fn states(&self, table: &str, keys: Vec<String>) -> Result<Vec<(String, RowState)>> {
        let pt = self.table(table)?;
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let mut found = load(&tx, pt, chunk, false).await.map_err(StoreError::from)?;
            out.extend(chunk.iter().filter_map(|k| found.remove(k).map(|s| (k.clone(), s.state))));
        }
        Ok(out)
    }

    fn set_role(&self, role: &str) {
        let _ = self.inner.role.set(role.to_owned());
    }

    fn role(&self) -> Option<&str> {
        self.inner.role.get().map(String::as_str)
    }

    fn pool_use(&self) -> crate::PoolUse {
        let s = self.inner.pool.status();
        crate::PoolUse { max: s.max_size, open: s.size, in_use: s.size.saturating_sub(s.available), waiting: s.waiting }
    }

    async fn users(&self) -> Result<Vec<User>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let rows = client.query("SELECT id, name FROM _ferry_users ORDER BY name", &[]).await.map_err(pg)?;
        Ok(rows.iter().map(|r| User { id: r.get(0), name: r.get(1) }).collect())
    }

    async fn adopt_users(&self, users: Vec<User>) -> Result<(usize, Vec<String>)> {
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        let (mut added, mut refused) = (0, Vec::new());
        for user in &users {
            let name = crate::check_name("user", &user.name)?;
            let here = tx.query_opt("SELECT id FROM _ferry_users WHERE name = $1", &[&name]).await.map_err(pg)?;
            match here.map(|r| r.get::<_, String>(0)) {
                Some(id) if id == user.id => {}
                Some(id) => refused.push(crate::user_clash(user, &format!("id {id}"))),
                None => {
                    let n = tx
                        .execute(
                            "INSERT INTO _ferry_users (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                            &[&user.id, &name],
                        )
                        .await
                        .map_err(pg)?;
                    if n == 0 {
                        refused.push(crate::user_clash(user, "another name"));
                    }
                    added += n as usize;
                }
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok((added, refused))
    }

    async fn peer_bases(
        &self,
        device: &str,
        keys: Vec<(String, String)>,
    ) -> Result<HashMap<(String, String), ferry_core::strategy::RowClocks>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let mut by_table: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (t, k) in keys {
            by_table.entry(t).or_default().push(k);
        }
        // One lookup per table on the primary key (`pk = ANY`): a join with the keys as a
        // set was planned as a scan of the whole table, whose cost grew with every page.
        let mut out = HashMap::new();
        for (table, pks) in by_table {
            let rows = client
                .query(
                    "SELECT pk, clocks FROM _ferry_peer_bases WHERE device_id = $1 AND tbl = $2 AND pk = ANY($3::text[])",
                    &[&device, &table, &pks],
                )
                .await
                .map_err(pg)?;
            for r in &rows {
                out.insert((table.clone(), r.get(0)), crate::clocks_of_text(r.get(1))?);
            }
        }
        Ok(out)
    }

    async fn save_peer_bases_from(
        &self,
        device: &str,
        mut rows: tokio::sync::mpsc::Receiver<Vec<(String, String, ferry_core::strategy::RowClocks)>>,
    ) -> Result<u64> {
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        // Copied into a scratch table, then written in two statements: an update of the
        // bases there are that differ (a full sync again: none), an insert of the rest (a
        // first full sync: every one).
        tx.batch_execute("CREATE TEMP TABLE _ferry_bases_in (tbl text, pk text, clocks text) ON COMMIT DROP")
            .await
            .map_err(pg)?;
        let mut n = 0u64;
        while let Some(batch) = rows.recv().await {
            let mut text = String::with_capacity(batch.len() * 120);
            for (table, key, clocks) in &batch {
                push::copy_line(&mut text, [Some(table.as_str()), Some(key.as_str()), Some(clocks.to_json().as_str())]);
            }
            push::copy(&tx, "COPY _ferry_bases_in (tbl, pk, clocks) FROM STDIN", text).await.map_err(pg)?;
            n += batch.len() as u64;
        }
        tx.batch_execute("ANALYZE _ferry_bases_in").await.map_err(pg)?;
        tx.execute(
            "UPDATE _ferry_peer_bases b SET clocks = i.clocks FROM _ferry_bases_in i
             WHERE b.device_id = $1 AND b.tbl = i.tbl AND b.pk = i.pk AND b.clocks IS DISTINCT FROM i.clocks",
            &[&device],
        )
        .await
        .map_err(pg)?;
        // A key twice in the batches (not in a snapshot) is recorded once.
        tx.execute(
            "INSERT INTO _ferry_peer_bases (device_id, tbl, pk, clocks)
             SELECT $1, i.tbl, i.pk, max(i.clocks) FROM _ferry_bases_in i
             WHERE NOT EXISTS (SELECT 1 FROM _ferry_peer_bases b WHERE b.device_id = $1 AND b.tbl = i.tbl AND b.pk = i.pk)
             GROUP BY i.tbl, i.pk ORDER BY i.tbl, i.pk",
            &[&device],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(n)
    }

    async fn save_peer_bases(
        &self,
        device: &str,
        rows: Vec<(String, String, ferry_core::strategy::RowClocks)>,
    ) -> Result<()> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let mut latest: std::collections::BTreeMap<(String, String), String> = Default::default();
        for (t, k, c) in rows {
            latest.insert((t, k), c.to_json());
        }
        let (mut tables, mut pks, mut clocks) = (Vec::new(), Vec::new(), Vec::new());
        for ((t, k), c) in latest {
            tables.push(t);
            pks.push(k);
            clocks.push(c);
        }
        client
            .execute(
                "INSERT INTO _ferry_peer_bases (device_id, tbl, pk, clocks)
                 SELECT $1, u.tbl, u.pk, u.clocks FROM unnest($2::text[], $3::text[], $4::text[]) AS u(tbl, pk, clocks)
                 ON CONFLICT (device_id, tbl, pk) DO UPDATE SET clocks = excluded.clocks",
                &[&device, &tables, &pks, &clocks],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn peer_backlog(&self, who: &Principal, cursor: &str, tables: &[String]) -> Result<u64> {
        let c = feed::Cursor::parse(cursor, &self.inner.epoch)?;
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM _ferry_rows
                 WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot)
                   AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)
                   AND origin IS DISTINCT FROM $2 AND tbl = ANY($3::text[])",
                &[&c.prev, &who.device_id, &tables],
            )
            .await
            .map_err(pg)?
            .get(0);
        Ok(n as u64)
    }

    async fn save_link(&self, status: crate::PeerStatus) -> Result<()> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO _ferry_links (peer, status) VALUES ($1, $2)
                 ON CONFLICT (peer) DO UPDATE SET status = excluded.status",
                &[&status.name, &crate::link_json(&status)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn links(&self) -> Result<Vec<crate::PeerStatus>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let rows = client.query("SELECT status FROM _ferry_links ORDER BY peer", &[]).await.map_err(pg)?;
        rows.iter().map(|r| crate::link_of_json(r.get(0))).collect()
    }

    async fn request_resync(&self, peer: &str) -> Result<()> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        match client.execute("UPDATE _ferry_links SET resync = true WHERE peer = $1", &[&peer]).await.map_err(pg)? {
            0 => Err(crate::no_link(peer)),
            _ => Ok(()),
        }
    }

    async fn take_resync(&self, peer: &str) -> Result<bool> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute("UPDATE _ferry_links SET resync = false WHERE peer = $1 AND resync", &[&peer])
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn log_sync(&self, entry: crate::SyncLogEntry, keep_ms: u64) -> Result<i64> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let horizon = entry.at_ms.saturating_sub(keep_ms) as i64;
        client.execute("DELETE FROM _ferry_sync_log WHERE at_ms < $1", &[&horizon]).await.map_err(pg)?;
        let row = client
            .query_one(
                "INSERT INTO _ferry_sync_log (at_ms, peer, entry) VALUES ($1, $2, $3) RETURNING id",
                &[&(entry.at_ms as i64), &entry.peer, &crate::link_json(&entry)],
            )
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn sync_log(&self, peer: Option<&str>, limit: usize) -> Result<Vec<crate::SyncLogEntry>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT id, entry FROM _ferry_sync_log WHERE $1::text IS NULL OR peer = $1 ORDER BY id DESC LIMIT $2",
                &[&peer, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let mut e: crate::SyncLogEntry = crate::link_of_json(r.get(1))?;
                e.id = r.get(0);
                Ok(e)
            })
            .collect()
    }

    async fn resolve_conflict(&self, id: i64, keep: ConflictSide) -> Result<ConflictRecord> {
        self.resolve(id, keep).await
    }

    async fn get_row(&self, who: &Principal, table: &str, key: &str) -> Result<Option<RowState>> {
        let pt = self.table(table)?;
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let key = key.to_owned();
        let found = load(&tx, pt, std::slice::from_ref(&key), false).await.map_err(StoreError::from)?.remove(&key);
        if let Some(p) = &found
            && let Some(reach) = crate::scope::reach_of(&pt.table, &key, &p.state)
        {
            let scope = self.scope_in(&tx, &who.user_id, Some(&pt.table.name)).await?;
            return Ok(found.filter(|_| scope.admits(&pt.table, &reach, &who.user_id)).map(|p| p.state));
        }
        Ok(found.filter(|p| p.owner.as_ref().is_none_or(|o| *o == who.user_id)).map(|p| p.state))
    }

    async fn file_refs(&self, who: &Principal, hashes: &[String]) -> Result<std::collections::BTreeSet<String>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let mut found = std::collections::BTreeSet::new();
        for (t, col, owner) in crate::file_columns(&self.inner.schema) {
            let (q, c) = (quote(&t.name), quote(col));
            // A peer reads every row, so every referenced file.
            let owner = owner.filter(|_| !who.peer);
            if let Some(rule) = crate::scope::read_rule(t).filter(|_| !who.peer) {
                // The rule as SQL over the table, its subqueries run as they stand.
                let r = rule.compile(ferry_core::rules::Dialect::Postgres, &q, 2);
                let sql = format!("SELECT DISTINCT {c} FROM {q} WHERE {c} = ANY($1::text[]) AND {}", r.sql);
                let texts: Vec<String> = r.slots.iter().map(|s| s.text(&who.user_id, &[])).collect();
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&hashes];
                params.extend(texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)));
                found.extend(client.query(&sql, &params).await.map_err(pg)?.iter().map(|r| r.get::<_, String>(0)));
                continue;
            }
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
        self.conflict_by_id(id).await
    }
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

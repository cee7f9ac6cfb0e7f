//! Pushes: merging a batch into the stored rows, writing them and their bookkeeping.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ferry_core::Value;
use ferry_core::schema::ColType;
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::conflicts::insert_conflict;
use super::feed::{Cursor, FEED_VERSION, snapshot};
use super::notify::{NOTIFY_CHANNEL, notice_payload};
use super::sql::{self, PgTable, Wire};
use super::statistics::wrote;
use super::{PgStore, PushError, load, pg, pool_err, push_pg, with_table};
use crate::{IncomingRow, Principal, PushOutcome, Result, StoreError};

const PUSH_ATTEMPTS: usize = 5;

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
INSERT INTO _ferry_rows (tbl, pk, alive, alive_at, clock, clocks, dead, owner, origin, texts, reach, xid)
SELECT $1, u.pk, u.alive, u.alive_at, u.clock, u.clocks, u.dead, u.owner, u.origin, u.texts::jsonb, u.reach::jsonb,
  pg_current_xact_id()
FROM unnest($2::text[], $3::text[], $4::bool[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
  $10::text[], $11::text[])
  AS u(origin, pk, alive, alive_at, clock, clocks, dead, owner, texts, reach)
ON CONFLICT (tbl, pk) DO UPDATE SET alive = excluded.alive, alive_at = excluded.alive_at, clock = excluded.clock,
  clocks = excluded.clocks, dead = excluded.dead, owner = excluded.owner, origin = excluded.origin,
  texts = excluded.texts, reach = excluded.reach, xid = excluded.xid";

/// How [`PgStore::merge_in`] writes rows the store holds nothing of.
#[derive(Clone, Copy)]
pub(super) enum Fill<'a> {
    /// As a push: upserts, stored rows locked as they are read.
    Push,
    /// The transaction holds the tables locked against every other writer (a full sync's
    /// restore): such rows are copied in. The tables in `empty` held no row when locked,
    /// and take each key once (a snapshot's rows): nothing is looked up in them.
    Locked { empty: &'a std::collections::BTreeSet<String> },
}

/// The merged states of one table's rows, in the columns they are written in.
struct Prepared<'a> {
    /// Alive rows: the key, then one array per data column in schema order.
    keys: Vec<Option<String>>,
    live: Vec<Array>,
    /// Alive rows' values, for `COPY`.
    live_values: Vec<Vec<Value>>,
    /// Keys of deleted rows.
    gone: Vec<String>,
    pks: Vec<String>,
    alive: Vec<bool>,
    alive_at: Vec<String>,
    clock: Vec<String>,
    clocks: Vec<Option<String>>,
    dead: Vec<Option<String>>,
    owners: Vec<Option<String>>,
    texts: Vec<Option<String>>,
    reaches: Vec<Option<&'a str>>,
}

/// Each row's columns as written: the key and values of alive rows (arrays for the upsert, or
/// values for `COPY`), the deleted keys, and the bookkeeping.
fn prepare<'a>(
    pt: &PgTable,
    rows: &'a [(String, crate::Write)],
    copy: bool,
) -> std::result::Result<Prepared<'a>, PushError> {
    let table = &pt.table;
    let mut p = Prepared {
        keys: Vec::new(),
        live: if copy { Vec::new() } else { table.data_columns().map(|c| Array::new(c.ty)).collect() },
        live_values: Vec::new(),
        gone: Vec::new(),
        pks: Vec::with_capacity(rows.len()),
        alive: Vec::with_capacity(rows.len()),
        alive_at: Vec::with_capacity(rows.len()),
        clock: Vec::with_capacity(rows.len()),
        clocks: Vec::with_capacity(rows.len()),
        dead: Vec::with_capacity(rows.len()),
        owners: Vec::with_capacity(rows.len()),
        texts: Vec::with_capacity(rows.len()),
        reaches: Vec::with_capacity(rows.len()),
    };
    for (key, crate::Write { state, owner, reach, .. }) in rows {
        let values = ferry_sqlite::values_of(table, state);
        if state.is_alive() {
            p.keys.push(Some(key.clone()));
            for (arr, v) in p.live.iter_mut().zip(&values) {
                arr.push(v).map_err(|e| StoreError::Internal(format!("{} '{key}': {e}", table.name)))?;
            }
        } else {
            p.gone.push(key.clone());
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
        p.pks.push(key.clone());
        p.alive.push(state.is_alive());
        p.alive_at.push(state.exists.at.to_string());
        p.clock.push(base.to_string());
        p.clocks.push(overrides);
        p.dead.push((!state.is_alive()).then(|| ferry_sqlite::encode_values(table, &values)));
        p.owners.push(owner.clone());
        p.reaches.push(reach.as_deref());
        p.texts.push((!kept.is_empty()).then(|| serde_json::Value::Object(kept).to_string()));
        if copy && state.is_alive() {
            p.live_values.push(values);
        }
    }
    Ok(p)
}

/// Writes the merged states of one table: application rows (upsert or delete) and their
/// bookkeeping (`origins`: each row's writer), a few statements for the whole batch.
pub(super) async fn write(
    tx: &Transaction<'_>,
    pt: &PgTable,
    origins: &[Option<&str>],
    rows: &[(String, crate::Write)],
) -> std::result::Result<(), PushError> {
    let table = &pt.table;
    let p = prepare(pt, rows, false)?;
    if !p.keys.is_empty() {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&p.keys];
        params.extend(p.live.iter().map(Array::param));
        tx.execute(pt.upsert.as_str(), &params).await.map_err(|e| with_table(e, table))?;
    }
    if !p.gone.is_empty() {
        tx.execute(pt.delete.as_str(), &[&p.gone]).await.map_err(|e| with_table(e, table))?;
    }
    let params: [&(dyn ToSql + Sync); 11] = [
        &table.name,
        &origins,
        &p.pks,
        &p.alive,
        &p.alive_at,
        &p.clock,
        &p.clocks,
        &p.dead,
        &p.owners,
        &p.texts,
        &p.reaches,
    ];
    tx.execute(UPSERT_META, &params).await.map_err(|e| with_table(e, table))?;
    Ok(())
}

/// Writes rows the store holds nothing of (no bookkeeping, no application row) by `COPY`:
/// only while the application table is locked against every other writer (a full sync's
/// restore), so that no row can appear between the look and the copy.
pub(super) async fn write_new(
    tx: &Transaction<'_>,
    pt: &PgTable,
    origins: &[Option<&str>],
    rows: &[(String, crate::Write)],
) -> std::result::Result<(), PushError> {
    let table = &pt.table;
    let p = prepare(pt, rows, true)?;
    let types: Vec<ColType> = table.data_columns().map(|c| c.ty).collect();
    if !p.live_values.is_empty() {
        let mut text = String::with_capacity(p.live_values.len() * 160);
        for (key, values) in p.keys.iter().zip(&p.live_values) {
            copy_field(&mut text, key.as_deref());
            for (ty, v) in types.iter().zip(values) {
                text.push('\t');
                copy_value(&mut text, *ty, v).map_err(|e| {
                    StoreError::Internal(format!("{} '{}': {e}", table.name, key.as_deref().unwrap_or("")))
                })?;
            }
            text.push('\n');
        }
        copy(tx, &pt.copy_in, text).await.map_err(|e| with_table(e, table))?;
    }
    let mut text = String::with_capacity(p.pks.len() * 160);
    for (i, origin) in origins.iter().enumerate() {
        let fields = [
            Some(table.name.as_str()),
            Some(p.pks[i].as_str()),
            Some(if p.alive[i] { "t" } else { "f" }),
            Some(p.alive_at[i].as_str()),
            Some(p.clock[i].as_str()),
            p.clocks[i].as_deref(),
            p.dead[i].as_deref(),
            p.owners[i].as_deref(),
            *origin,
            p.texts[i].as_deref(),
            p.reaches[i],
        ];
        copy_line(&mut text, fields);
    }
    copy(tx, COPY_META, text).await.map_err(|e| with_table(e, table))?;
    Ok(())
}

const COPY_META: &str =
    "COPY _ferry_rows (tbl, pk, alive, alive_at, clock, clocks, dead, owner, origin, texts, reach) FROM STDIN";

/// Runs `COPY … FROM STDIN` (text format) with `text` as its data.
pub(super) async fn copy(
    tx: &Transaction<'_>,
    statement: &str,
    text: String,
) -> std::result::Result<u64, tokio_postgres::Error> {
    use futures_util::SinkExt;
    let sink = tx.copy_in::<_, bytes::Bytes>(statement).await?;
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(text)).await?;
    sink.as_mut().finish().await
}

/// A line of `COPY`'s text format: the fields, tab-separated ([`copy_field`]).
pub(super) fn copy_line<'f>(out: &mut String, fields: impl IntoIterator<Item = Option<&'f str>>) {
    for (n, f) in fields.into_iter().enumerate() {
        if n > 0 {
            out.push('\t');
        }
        copy_field(out, f);
    }
    out.push('\n');
}

/// A field of `COPY`'s text format: `\N` for NULL, else the text with its specials escaped.
pub(super) fn copy_field(out: &mut String, field: Option<&str>) {
    let Some(text) = field else {
        out.push_str("\\N");
        return;
    };
    // The specials are ASCII: the runs between them are copied whole.
    let mut run = 0;
    for (i, b) in text.bytes().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            _ => continue,
        };
        out.push_str(&text[run..i]);
        out.push_str(escaped);
        run = i + 1;
    }
    out.push_str(&text[run..]);
}

/// A value of a column of type `ty` as a field of `COPY`'s text format, read by the
/// column's input function as the upsert's casts read its plain form.
fn copy_value(out: &mut String, ty: ColType, v: &Value) -> std::result::Result<(), String> {
    use std::fmt::Write as _;
    match (sql::wire(ty), v) {
        (_, Value::Null) => out.push_str("\\N"),
        (Wire::Text, Value::Text(s)) => copy_field(out, Some(s)),
        (Wire::Int, Value::Integer(i)) => {
            let _ = write!(out, "{i}");
        }
        (Wire::Float, Value::Real(r)) => {
            let _ = write!(out, "{r:?}");
        }
        (Wire::Float, Value::Integer(i)) => {
            let _ = write!(out, "{}", *i as f64);
        }
        (Wire::Bool, Value::Integer(i)) => out.push(if *i != 0 { 't' } else { 'f' }),
        (Wire::Bytes, Value::Blob(b)) => {
            out.push_str("\\\\x");
            out.push_str(&ferry_core::to_hex(b));
        }
        (_, v) => return Err(format!("a {} value does not fit the column", v.kind())),
    }
    Ok(())
}

impl PgStore {
    pub(super) async fn push_batch(
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
        // The batch's rows, for write rules (only kept when a table has one).
        let order: Vec<(String, String)> = if crate::rules::has_write_rules(&self.inner.schema) {
            rows.iter().map(|r| (r.table.clone(), r.key.clone())).collect()
        } else {
            Vec::new()
        };
        let grouped = self.grouped(rows)?;
        let mut attempt = 0;
        let (mut outcome, xid) = loop {
            attempt += 1;
            match self.push_once(who, batch_id, &grouped, &order, received).await {
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

    /// `rows` grouped by table and key, in a fixed order, so that concurrent writers lock
    /// bookkeeping rows in the same order. A key sent twice is one change: the states merged,
    /// the first version seen.
    pub(super) fn grouped(&self, rows: Vec<IncomingRow>) -> Result<BTreeMap<String, BTreeMap<String, IncomingRow>>> {
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
        Ok(grouped)
    }

    async fn push_once(
        &self,
        who: &Principal,
        batch_id: &str,
        rows: &BTreeMap<String, BTreeMap<String, IncomingRow>>,
        order: &[(String, String)],
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
        let mut tally = crate::Tally::new();
        let changed = self.merge_in(&tx, who, rows, order, &mut tally, Fill::Push).await?;
        let origin = tally.notice_origin(who);
        if changed > 0 {
            // Every server process on this database LISTENs; delivered at commit.
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&NOTIFY_CHANNEL, &notice_payload(&crate::Notice::of(&mut tally, origin))],
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
        let caught_up = tally.caught_up();
        Ok((
            PushOutcome { received, changed, replayed: false, cursor: None, refused: tally.refused },
            caught_up.then_some(xid),
        ))
    }

    /// Merges `rows` (grouped by table and key) into the open transaction `tx` as `who`'s
    /// push, by the tables' rules and strategies, noting what changed in `tally`; `order`:
    /// the rows in the pusher's order, for write rules. Returns how many rows changed. A push
    /// and a full sync's restore share it (`fill`: how rows new to the store are written).
    pub(super) async fn merge_in(
        &self,
        tx: &Transaction<'_>,
        who: &Principal,
        rows: &BTreeMap<String, BTreeMap<String, IncomingRow>>,
        order: &[(String, String)],
        tally: &mut crate::Tally,
        fill: Fill<'_>,
    ) -> std::result::Result<usize, PushError> {
        let found = tx.query(crate::ROLE_SITES_SQL, &[]).await.map_err(push_pg)?;
        let role_sites = crate::Deciding::role_sites(found.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
        let sites = crate::batch_sites(rows.values().flat_map(|states| states.values().map(|r| &r.state)));
        let sql = format!("{} = ANY($1)", crate::SITE_DEVICES_SQL);
        let found = tx.query(&sql, &[&sites]).await.map_err(push_pg)?;
        let site_devices =
            crate::site_devices(found.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))));
        // With write rules, the batch's rows are checked against them in the device's order
        // once all are written (see `check_batch`).
        let ruled = crate::rules::has_write_rules(&self.inner.schema) && !who.peer;
        let granted = if ruled {
            let names: Vec<&str> = rows.keys().map(String::as_str).collect();
            write_sets(tx, &self.inner.schema, &names, &who.user_id).await?
        } else {
            HashMap::new()
        };
        let env = crate::Deciding {
            server_site: self.inner.site,
            local_role: self.inner.role.get().cloned(),
            role_sites,
            site_devices,
            now_ms: crate::wall_ms(),
            write_sets: crate::rules::selected_values(&granted),
        };
        let mut written = crate::rules::Written::new();
        let mut changed = 0;

        for (table, states) in rows {
            let pt = self.table(table)?;
            let keys: Vec<String> = states.keys().cloned().collect();
            let (locked, empty) = match fill {
                Fill::Push => (false, false),
                Fill::Locked { empty } => (true, empty.contains(table)),
            };
            let mut stored = if empty { HashMap::new() } else { load(tx, pt, &keys, !locked).await? };
            // Application rows without bookkeeping (written while capture was off) are
            // merged over as a push does, not copied beside.
            let untracked: std::collections::HashSet<String> = if locked && !empty {
                let unknown: Vec<&String> = keys.iter().filter(|k| !stored.contains_key(*k)).collect();
                let found = tx.query(pt.present.as_str(), &[&unknown]).await.map_err(push_pg)?;
                found.iter().map(|r| r.get(0)).collect()
            } else {
                std::collections::HashSet::new()
            };

            let mut writes = Vec::new();
            let mut new_rows = Vec::new();
            for (key, row) in states {
                let prior = stored.remove(key).map(|p| (p.state, p.owner));
                let new = locked && prior.is_none() && !untracked.contains(key);
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
                    insert_conflict(tx, &c).await.map_err(push_pg)?;
                }
                if let Some(w) = tally.take(&pt.table, key, merged) {
                    if new { new_rows.push((key.clone(), w)) } else { writes.push((key.clone(), w)) }
                }
            }
            for (copied, rows) in [(true, new_rows), (false, writes)] {
                if rows.is_empty() {
                    continue;
                }
                changed += rows.len();
                let origins: Vec<Option<&str>> = rows.iter().map(|(_, w)| w.origin(who)).collect();
                if copied {
                    write_new(tx, pt, &origins, &rows).await?;
                } else {
                    write(tx, pt, &origins, &rows).await?;
                }
                if ruled {
                    written.entry(table.clone()).or_default().extend(rows.into_iter().map(|(key, w)| (key, w.state)));
                }
            }
        }
        crate::rules::check_batch(&self.inner.schema, who, order, &written, &granted)?;
        for site in &tally.sites {
            tx.execute(
                "INSERT INTO _ferry_sites (site, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&site.to_string(), &who.device_id],
            )
            .await
            .map_err(push_pg)?;
        }
        Ok(changed)
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
        // A cursor the compaction horizon passed may not skip ahead: it missed deletions.
        if super::feed::check_horizon(&tx, &c, cursor).await.is_err() {
            return Ok(None);
        }
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
        Ok((!others).then(|| Cursor { v: FEED_VERSION, prev: now, cur: None, after: None, ..c }.encode()))
    }
}

/// What the subqueries of the `write` rules of `tables` select for `user` now, as the
/// replicas store such values (booleans as 0 and 1).
async fn write_sets(
    tx: &Transaction<'_>,
    schema: &ferry_core::schema::Schema,
    tables: &[&str],
    user: &str,
) -> std::result::Result<HashMap<String, crate::rules::Selected>, PushError> {
    let mut out = HashMap::new();
    for (name, selects) in crate::rules::write_subqueries(schema, tables.iter().copied()) {
        let mut sets = Vec::with_capacity(selects.len());
        for select in selects {
            let q = select.compile(ferry_core::rules::Dialect::Postgres, 1);
            let texts: Vec<String> = q.slots.iter().map(|s| s.text(user, &[])).collect();
            let params: Vec<&(dyn ToSql + Sync)> = texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
            let sql = format!("SELECT v::text, k::text FROM ({}) AS q (v, k)", q.sql);
            let found = tx.query(&sql, &params).await.map_err(push_pg)?;
            sets.push(found.iter().map(|r| (r.get(1), value_of_text(select.ty, r.get(0)))).collect());
        }
        out.insert(name.to_owned(), sets);
    }
    Ok(out)
}

/// A value PostgreSQL gave as text, as the replicas store it.
pub(super) fn value_of_text(ty: ColType, text: Option<String>) -> Value {
    match (ty, text) {
        (_, None) => Value::Null,
        (ColType::Boolean, Some(t)) => Value::Integer(i64::from(t == "true")),
        (ColType::Integer | ColType::BigInt, Some(t)) => t.parse().map_or(Value::Null, Value::Integer),
        (_, Some(t)) => Value::Text(t),
    }
}

#[cfg(test)]
mod tests {
    use super::copy_line;

    #[test]
    fn copy_fields_escape_their_specials_and_keep_the_rest() {
        let mut out = String::new();
        copy_line(&mut out, [Some("plain"), None, Some("a\tb\nc\rd\\e"), Some("\\"), Some("Ærø ✈ 7\t")]);
        assert_eq!(out, "plain\t\\N\ta\\tb\\nc\\rd\\\\e\t\\\\\tÆrø ✈ 7\\t\n");
    }
}

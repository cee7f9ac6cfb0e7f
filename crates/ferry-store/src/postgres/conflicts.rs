//! The conflict log.

use std::collections::BTreeMap;

use tokio_postgres::Row;

use super::notify::{NOTIFY_CHANNEL, notice_payload};
use super::push::write;
use super::{PgStore, load, pg, pool_err};
use crate::{ConflictFilter, ConflictRecord, ConflictSide, Result, StoreError};

pub(super) const PG_CONFLICT_COLUMNS: &str =
    "id, tbl, pk, kind, fields, strategy, stored, incoming, winner, resolved_by,
    to_char(resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
    to_char(detected_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

pub(super) fn conflict_row(r: &Row) -> Result<ConflictRecord> {
    crate::conflicts::record(
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
        r.get(8),
        r.get(9),
        r.get(10),
        r.get(11),
    )
    .map_err(StoreError::Internal)
}

/// Logs a conflict; a second one with the same dedupe key is ignored (a retried push).
pub(super) async fn insert_conflict(
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

impl PgStore {
    pub(super) async fn list_conflicts(&self, filter: ConflictFilter) -> Result<Vec<ConflictRecord>> {
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
        rows.iter().map(conflict_row).collect()
    }

    pub(super) async fn resolve(&self, id: i64, keep: ConflictSide) -> Result<ConflictRecord> {
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(pg)?;
        let select = format!("SELECT {PG_CONFLICT_COLUMNS} FROM _ferry_conflicts WHERE id = $1");
        let row = tx.query_opt(&format!("{select} FOR UPDATE"), &[&id]).await.map_err(pg)?;
        let record = row.as_ref().map(conflict_row).transpose()?;
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
        let notice = crate::Notice::of_row(&pt.table, &key, &state, prior.owner.clone(), None);
        tx.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &notice_payload(&notice)]).await.map_err(pg)?;
        let reach = crate::scope::reach_of(&pt.table, &key, &state);
        write(&tx, pt, &[Some("manual")], &[(key, crate::Write { state, owner: prior.owner, reach, exact: true })])
            .await?;
        let winner: BTreeMap<&str, &str> = record.fields.iter().map(|f| (f.as_str(), keep.name())).collect();
        tx.execute(
            "UPDATE _ferry_conflicts SET resolved_by = 'manual', resolved_at = now(), winner = $2 WHERE id = $1",
            &[&id, &serde_json::to_string(&winner).expect("strings serialize")],
        )
        .await
        .map_err(pg)?;
        let done = conflict_row(&tx.query_one(&select, &[&id]).await.map_err(pg)?)?;
        tx.commit().await.map_err(pg)?;
        Ok(done)
    }

    pub(super) async fn conflict_by_id(&self, id: i64) -> Result<Option<ConflictRecord>> {
        let client = self.inner.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(&format!("SELECT {PG_CONFLICT_COLUMNS} FROM _ferry_conflicts WHERE id = $1"), &[&id])
            .await
            .map_err(pg)?;
        row.as_ref().map(conflict_row).transpose()
    }
}

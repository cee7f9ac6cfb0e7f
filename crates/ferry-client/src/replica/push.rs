//! The push queue: pending rows read in order, and the server's answer recorded.

use std::collections::BTreeMap;

use ferry_core::Hlc;
use ferry_core::RowState;
use ferry_core::strategy::RowClocks;
use ferry_sqlite::Extra;
use rusqlite::{TransactionBehavior, params};

use ferry_policy::push;

use super::pull::PulledRow;
use super::records::{parse_base, parse_seen, state_json_row, take_held, write_seen};
use super::stamp::Stamping;
use super::{Key, Replica, get_meta, set_meta};
use crate::error::{Error, Result};

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

impl Replica {
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
            let held = take_held(&tx, &schema, &row.table, &row.key)?;
            let current = push::refused_current(&row.state, held.as_ref());
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
            && let Some(past) =
                push::cursor_after(get_meta(&tx, Key::Cursor)?.as_deref().unwrap_or("0"), sent, Some(past))
        {
            set_meta(&tx, Key::Cursor, past)?;
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
                write_seen(&tx, &r.table, &r.key, &push::rebased_seen(&r.state))?;
                continue;
            }
            // Versions pulled while the push was out (tables whose strategy the server
            // decides) are merged now that it is answered.
            if let Some(held) = if any_held { take_held(&tx, &schema, &r.table, &r.key)? } else { None } {
                let ts =
                    self.tables.get(&r.table).ok_or_else(|| Error::Schema(format!("unknown table '{}'", r.table)))?;
                if let Some((local, _)) = Self::load_local(&tx, ts, &r.key, &mut clock)? {
                    let merged = push::merge_held(&local, &held);
                    let pending = match &merged.push {
                        Some(seen) => {
                            let stamp = Self::next_stamp(&tx)?;
                            write_seen(&tx, &r.table, &r.key, seen)?;
                            stamp
                        }
                        None => 0,
                    };
                    ferry_sqlite::store_state(&tx, ts, &r.key, &merged.state, &Extra { pending, ..Extra::default() })?;
                }
            }
        }
        tx.execute("DELETE FROM _ferry_apply", [])?;
        tx.commit()?;
        Ok(())
    }
}

//! A full re-sync: the server's compaction horizon passed this replica's cursor (`410
//! cursor_expired`), so deletions it has not seen may be gone there. The replica pulls
//! everything again from the start, noting each key the server sends; when the pull is done,
//! rows the server never sent are gone there and go here too (without capture), except rows
//! with a change not pushed yet. The sync pushes before it pulls: pending changes go first.

use rusqlite::TransactionBehavior;

use super::{Key, Replica, get_meta, set_meta};
use crate::error::Result;

impl Replica {
    /// Starts (or starts over) a full re-sync of the pull that `cursor_key` names: its cursor
    /// goes back to the start and the keys the server sends from now on are noted.
    pub fn start_resync(&mut self, cursor_key: Key<'_>) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM _ferry_resync", [])?;
        set_meta(&tx, cursor_key, "0")?;
        set_meta(&tx, Key::Resync, &cursor_key.name())?;
        tx.commit()?;
        Ok(())
    }

    /// Whether a full re-sync is under way.
    pub fn resyncing(&self) -> Result<bool> {
        Ok(get_meta(&self.conn, Key::Resync)?.is_some())
    }

    /// Ends a full re-sync whose pull reached the end: rows of `tables` (every table when
    /// `None`) the server did not send are removed here, but for rows with a change not
    /// pushed yet. Returns how many were removed.
    pub fn finish_resync(&mut self, tables: Option<&[String]>) -> Result<usize> {
        if !self.resyncing()? {
            return Ok(0);
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let gone: Vec<(String, String)> = tx
            .prepare(
                "SELECT r.tbl, r.pk FROM _ferry_rows r
                 WHERE r.pending = 0 AND NOT EXISTS (SELECT 1 FROM _ferry_resync s WHERE s.tbl = r.tbl AND s.pk = r.pk)",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        // Deleting under `_ferry_apply` keeps the capture triggers from recording it.
        tx.execute("INSERT INTO _ferry_apply (busy) VALUES (1)", [])?;
        let mut removed = 0;
        for (table, key) in gone {
            if tables.is_some_and(|only| !only.contains(&table)) {
                continue;
            }
            let Some(ts) = self.tables.get(&table) else { continue };
            Self::forget(&tx, ts, &key)?;
            removed += 1;
        }
        tx.execute("DELETE FROM _ferry_apply", [])?;
        tx.execute("DELETE FROM _ferry_resync", [])?;
        tx.execute("DELETE FROM _ferry_meta WHERE key = ?1", [Key::Resync.name()])?;
        tx.commit()?;
        Ok(removed)
    }
}

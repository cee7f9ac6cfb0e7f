//! The sync queue's own bookkeeping on a replica: local changes the server refused as
//! invalid, set aside with the server's answer so that the rest of the queue moves on, and
//! the history of syncs.
//!
//! A set-aside change is tried again when the row changes again (the new change has a new
//! stamp), or when someone asks for it ([`Replica::retry_failed`]); [`Replica::clear_failed`]
//! gives it up (the local values stay on this device, unsynced, until the row changes again).

use rusqlite::{OptionalExtension, params};

use crate::error::Result;
use crate::replica::{PendingRow, Replica};

/// A local change the server refused as invalid (400, 403, 413 for one row), set aside.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Failed {
    pub id: i64,
    pub table: String,
    pub key: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    pub failed_at: String,
}

/// A row the server sent that breaks a rule (from an older server, or stored before a check
/// existed), set aside so that the rest of the pull goes on. The replica keeps its own
/// version of the row; a later good version from the server applies and clears the entry.
/// A row whose clock was too far ahead of this device's is kept and applied by a later sync
/// once this device's time allows ([`Replica::retry_pulled`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RefusedPull {
    pub table: String,
    pub key: String,
    pub message: String,
    pub refused_at: String,
}

/// One sync, as the history keeps it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HistoryEntry {
    pub id: i64,
    pub started_at: String,
    pub finished_at: String,
    /// `completed` or `failed`.
    pub outcome: String,
    pub pushed: u64,
    pub pulled: u64,
    pub set_aside: u64,
    pub error: Option<String>,
}

impl Replica {
    /// Sets a pushed row aside with the server's refusal; it is not pushed again until it
    /// changes or [`Replica::retry_failed`].
    pub fn set_aside(&mut self, row: &PendingRow, status: u16, code: &str, message: &str) -> Result<()> {
        self.connection().execute(
            "INSERT INTO _ferry_failed (tbl, pk, stamp, status, code, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (tbl, pk) DO UPDATE SET stamp = excluded.stamp, status = excluded.status,
               code = excluded.code, message = excluded.message, failed_at = excluded.failed_at",
            params![row.table, row.key, row.stamp, status, code, message],
        )?;
        Ok(())
    }

    /// The set-aside changes, oldest first.
    pub fn failed(&self) -> Result<Vec<Failed>> {
        let mut stmt = self
            .connection()
            .prepare("SELECT id, tbl, pk, status, code, message, failed_at FROM _ferry_failed ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Failed {
                    id: r.get(0)?,
                    table: r.get(1)?,
                    key: r.get(2)?,
                    status: r.get(3)?,
                    code: r.get(4)?,
                    message: r.get(5)?,
                    failed_at: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The pulled rows set aside as breaking a rule, oldest first.
    pub fn refused_pulls(&self) -> Result<Vec<RefusedPull>> {
        let mut stmt = self
            .connection()
            .prepare("SELECT tbl, pk, message, refused_at FROM _ferry_pull_refused ORDER BY refused_at, tbl, pk")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RefusedPull { table: r.get(0)?, key: r.get(1)?, message: r.get(2)?, refused_at: r.get(3)? })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Puts every set-aside change back in the queue; returns how many.
    pub fn retry_failed(&mut self) -> Result<usize> {
        Ok(self.connection().execute("DELETE FROM _ferry_failed", [])?)
    }

    /// Gives up every set-aside change that has not changed since: it leaves the queue, and
    /// its local values stay on this device only. Returns how many.
    pub fn clear_failed(&mut self) -> Result<usize> {
        let tx = self.connection_mut().transaction()?;
        tx.execute(
            "UPDATE _ferry_rows SET pending = 0, base = NULL, seen = NULL
             WHERE EXISTS (SELECT 1 FROM _ferry_failed f
                           WHERE f.tbl = _ferry_rows.tbl AND f.pk = _ferry_rows.pk AND f.stamp = _ferry_rows.pending)",
            [],
        )?;
        let n = tx.execute("DELETE FROM _ferry_failed", [])?;
        tx.commit()?;
        Ok(n)
    }

    /// Records one finished sync in the history.
    pub fn record_history(&self, entry: &HistoryEntry) -> Result<()> {
        self.connection().execute(
            "INSERT INTO _ferry_history (started_at, outcome, pushed, pulled, set_aside, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                entry.started_at,
                entry.outcome,
                entry.pushed as i64,
                entry.pulled as i64,
                entry.set_aside as i64,
                entry.error
            ],
        )?;
        Ok(())
    }

    /// The last `limit` syncs, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let mut stmt = self.connection().prepare(
            "SELECT id, started_at, finished_at, outcome, pushed, pulled, set_aside, error
             FROM _ferry_history ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(HistoryEntry {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    finished_at: r.get(2)?,
                    outcome: r.get(3)?,
                    pushed: r.get::<_, i64>(4)? as u64,
                    pulled: r.get::<_, i64>(5)? as u64,
                    set_aside: r.get::<_, i64>(6)? as u64,
                    error: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Forgets completed syncs that finished more than `hours` ago; returns how many.
    pub fn clear_completed_older_than(&mut self, hours: f64) -> Result<usize> {
        Ok(self.connection().execute(
            "DELETE FROM _ferry_history WHERE outcome = 'completed'
               AND julianday(finished_at) < julianday('now') - ?1 / 24.0",
            [hours],
        )?)
    }

    /// The last sync that completed, if any.
    pub fn last_completed(&self) -> Result<Option<String>> {
        Ok(self
            .connection()
            .query_row(
                "SELECT finished_at FROM _ferry_history WHERE outcome = 'completed' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }
}

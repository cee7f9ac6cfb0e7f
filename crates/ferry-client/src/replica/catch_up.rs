//! Catching up by difference: the server's compaction horizon passed this replica's cursor,
//! and instead of pulling everything again the replica compares its rows with the ones its
//! user may read on the server by the digest tree (`crate::descent`), and takes only those
//! that differ (`crate::sync`).

use std::collections::HashSet;

use ferry_core::digest::Entry;

use super::Replica;
use crate::error::Result;

impl Replica {
    /// This replica's rows of `table` (tombstones too) as digest entries, and the keys with a
    /// local change the server has not accepted yet.
    pub fn digest_entries(&self, table: &str) -> Result<(Vec<Entry>, HashSet<String>)> {
        let Some(ts) = self.tables.get(table) else { return Ok((Vec::new(), HashSet::new())) };
        let entries = ferry_sqlite::digests(&self.conn, ts, "")?;
        let pending = self
            .conn
            .prepare_cached("SELECT pk FROM _ferry_rows WHERE tbl = ?1 AND pending > 0")?
            .query_map([table], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok((entries, pending))
    }

    /// The synced tables this replica holds, by name.
    pub fn synced_tables(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.keys().cloned().collect();
        names.sort();
        names
    }
}

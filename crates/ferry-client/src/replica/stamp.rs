//! Stamping: captured writes get clocks and become row states with change records.

use std::collections::{BTreeMap, HashMap};

use ferry_core::{Clock, Hlc, RowState, Stamped};
use ferry_sqlite::{Extra, Meta, TableSql};
use rusqlite::{Connection, Transaction, TransactionBehavior};

use ferry_policy::stamp::{self, Captured};

use super::records::{change_json, parse_base, parse_seen};
use super::{Key, Replica, get_meta, set_meta, wall_ms};
use crate::capture;
use crate::error::{Error, Result};

/// A large outbox being stamped chunk by chunk while a push is out (see
/// [`Replica::start_stamping`]): which rows still have captured writes waiting behind the
/// stamped part. Such a row's pending state is not sent yet (its values are newer than its
/// clocks); once its last write is stamped it comes again, later in the queue.
#[derive(Debug, Default)]
pub struct Stamping {
    /// Outbox entries up to this rowid have been stamped.
    stamped_through: i64,
    /// Outbox entries up to this rowid have been looked at.
    read_through: i64,
    /// The outbox when stamping started: for each row with entries in it (its table and key
    /// hashed), the rowid of its last entry, sorted by hash. 16 bytes an entry.
    first: Vec<(u64, i64)>,
    /// The same for entries captured since.
    later: HashMap<u64, i64>,
}

impl Stamping {
    /// 64 bits: two keys sharing a hash only hold a row back until the next sync.
    fn hash(table: &str, key: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (table, key).hash(&mut h);
        h.finish()
    }

    /// Takes in the outbox entries captured since the last look.
    pub(super) fn catch_up(&mut self, tx: &Connection) -> Result<()> {
        let starting = self.read_through == 0 && self.first.is_empty();
        let mut read = tx.prepare_cached("SELECT rowid, tbl, CAST(pk AS TEXT) FROM _ferry_outbox WHERE rowid > ?1")?;
        let mut rows = read.query([self.read_through])?;
        while let Some(r) = rows.next()? {
            let (rowid, table, key): (i64, String, Option<String>) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let hash = Self::hash(&table, key.as_deref().unwrap_or(""));
            if starting {
                self.first.push((hash, rowid));
            } else {
                self.later.insert(hash, rowid);
            }
            self.read_through = rowid;
        }
        if starting {
            // Sorted by hash, then rowid: the last of each run is the row's last entry.
            self.first.sort_unstable();
            self.first.reverse();
            self.first.dedup_by_key(|e| e.0);
            self.first.reverse();
            self.first.shrink_to_fit();
        }
        Ok(())
    }

    /// Whether the row has captured writes not stamped yet.
    pub(super) fn waiting(&self, table: &str, key: &str) -> bool {
        let hash = Self::hash(table, key);
        let first = self.first.binary_search_by_key(&hash, |e| e.0).ok().map(|i| self.first[i].1);
        first.into_iter().chain(self.later.get(&hash).copied()).any(|rowid| rowid > self.stamped_through)
    }
}

/// Outbox entries stamped per transaction by [`Replica::stamp`].
pub const STAMP_CHUNK: i64 = 2000;

/// An outbox entry: rowid, table, key, op, changed columns, old values, wall time.
type OutboxEntry = (i64, String, String, String, Option<String>, Option<String>, i64);
/// A row's captured writes, each with its clock, and the old values the last write that
/// recorded any recorded (a delete's).
type RowOps = (Vec<(Captured, Hlc)>, Option<String>);

impl Replica {
    /// Assigns clocks to the captured changes in the outbox, in transactions of at most
    /// [`STAMP_CHUNK`] entries each: a process killed while stamping a large outbox keeps
    /// what it finished and the next run continues from there. Returns how many outbox
    /// entries were stamped.
    ///
    /// Also looks for rows deleted without capture: `INSERT OR REPLACE` through a unique
    /// index of the application's removes the other row without firing a delete trigger.
    /// Only tables with such an index are scanned.
    pub fn stamp(&mut self) -> Result<usize> {
        let (mut stamping, mut n) = (Stamping::default(), 0);
        loop {
            let (done, more) = self.stamp_chunk(&mut stamping)?;
            n += done;
            if !more {
                return Ok(n);
            }
        }
    }

    /// Starts stamping the outbox as a push goes (instead of all of it before the first
    /// batch): stamps the first [`STAMP_CHUNK`] entries, and when more wait, returns what
    /// [`Replica::pending_while_stamping`] and [`Replica::stamp_next`] need to go on. `None`:
    /// the outbox is stamped (as [`Replica::stamp`] does).
    pub fn start_stamping(&mut self) -> Result<Option<Stamping>> {
        let mut stamping = Stamping::default();
        Ok(self.stamp_next(&mut stamping)?.then_some(stamping))
    }

    /// Stamps the next [`STAMP_CHUNK`] outbox entries; false once the outbox is empty (and
    /// the stamping done, as [`Replica::stamp`] does it).
    pub fn stamp_next(&mut self, stamping: &mut Stamping) -> Result<bool> {
        Ok(self.stamp_chunk(stamping)?.1)
    }

    /// One chunk of [`Replica::stamp`], in its own transaction: how many outbox entries it
    /// took, and whether more may wait (otherwise the stamping is finished).
    fn stamp_chunk(&mut self, stamping: &mut Stamping) -> Result<(usize, bool)> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (done, last) = Self::stamp_in(&tx, &self.tables, STAMP_CHUNK)?;
        tx.commit()?;
        stamping.stamped_through = stamping.stamped_through.max(last.unwrap_or(0));
        if done < STAMP_CHUNK as usize {
            self.find_uncaptured_deletes()?;
            return Ok((done, false));
        }
        Ok((done, true))
    }

    /// Rows deleted without capture, in tables with a unique index besides the key (see
    /// [`Replica::stamp`]), recorded as local deletes.
    fn find_uncaptured_deletes(&mut self) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut clock = Self::clock(&tx)?;
        for ts in self.tables.values() {
            let extra_unique: i64 = tx.query_row(
                "SELECT count(*) FROM pragma_index_list(?1) WHERE \"unique\" AND origin <> 'pk'",
                [&ts.table.name],
                |r| r.get(0),
            )?;
            if extra_unique == 0 {
                continue;
            }
            let missing: Vec<String> = tx
                .prepare(&capture::alive_but_missing(&ts.table))?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for pk in missing {
                Self::load_local(&tx, ts, &pk, &mut clock)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A fresh pending mark: greater than every mark handed out before, so acknowledging a
    /// push (which clears only the mark it read) never clears a later change.
    pub(super) fn next_stamp(tx: &Connection) -> Result<i64> {
        let stamp = get_meta(tx, Key::Stamp)?.and_then(|s| s.parse::<i64>().ok()).unwrap_or(0) + 1;
        set_meta(tx, Key::Stamp, &stamp.to_string())?;
        Ok(stamp)
    }

    /// Loads a row's local state. A row the bookkeeping holds as alive but that is missing
    /// from the application table was deleted without capture (for example by `INSERT OR
    /// REPLACE` through a unique index of the application's, which fires no delete trigger):
    /// that delete is recorded now, as a local change. Its column values are gone, so the
    /// tombstone carries none; other replicas keep theirs.
    pub(super) fn load_local(
        tx: &Connection,
        ts: &TableSql,
        pk: &str,
        clock: &mut Clock,
    ) -> Result<Option<(RowState, Meta)>> {
        let Some(mut meta) = ferry_sqlite::load_meta(tx, ts, pk)? else { return Ok(None) };
        if !meta.alive {
            return Ok(Some((ferry_sqlite::state_of(&ts.table, &meta, None), meta)));
        }
        if let Some(values) = ts.read(tx, pk)? {
            return Ok(Some((ferry_sqlite::state_of(&ts.table, &meta, Some(values)), meta)));
        }
        let mut state = RowState { exists: Stamped::new(true, meta.alive_at), cols: BTreeMap::new() };
        state.delete(clock.tick(wall_ms()));
        meta.pending = Self::next_stamp(tx)?;
        meta.alive = false;
        let extra = Extra { pending: meta.pending, ..Extra::default() };
        ferry_sqlite::write_meta(tx, ts, pk, &state, Some("{}"), &extra)?;
        set_meta(tx, Key::Clock, &clock.last().to_string())?;
        Ok(Some((state, meta)))
    }

    /// Stamps inside the caller's transaction. Each entry gets a fresh clock in outbox
    /// order; each touched row's bookkeeping is updated once, with the row's current values
    /// (or, if the row is gone, the last values its delete recorded), and marked pending.
    /// Returns how many outbox entries it took (stamped, or set aside as rejected) and the
    /// rowid of the last.
    pub(super) fn stamp_in(
        tx: &Transaction<'_>,
        tables: &HashMap<String, TableSql>,
        limit: i64,
    ) -> Result<(usize, Option<i64>)> {
        // A key that is not text (a blob or number written into the key column by another
        // program) cannot name a row on other replicas: such entries are set aside in
        // `_ferry_rejected` with the reason, and the rest of the outbox moves on. (Only the
        // entries of this chunk are looked at: a look at the whole outbox for each chunk made
        // stamping a large outbox quadratic.)
        let (mut entries, mut rejected, mut last_rowid): (Vec<OutboxEntry>, Vec<i64>, Option<i64>) =
            (Vec::new(), Vec::new(), None);
        let mut read = tx.prepare_cached(
            "SELECT rowid, tbl, CASE WHEN typeof(pk) = 'text' THEN pk END, op, cols, old, wall_ms
             FROM _ferry_outbox ORDER BY rowid LIMIT ?1",
        )?;
        let mut rows = read.query([limit])?;
        let mut count = 0;
        while let Some(r) = rows.next()? {
            count += 1;
            let rowid: i64 = r.get(0)?;
            last_rowid = Some(rowid);
            match r.get::<_, Option<String>>(2)? {
                Some(pk) => entries.push((rowid, r.get(1)?, pk, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
                None => rejected.push(rowid),
            }
        }
        drop(rows);
        drop(read);
        for rowid in rejected {
            tx.prepare_cached(
                "INSERT INTO _ferry_rejected (tbl, pk, op, reason)
                 SELECT tbl, quote(pk), op, 'the primary key is ' || typeof(pk) || ', not text (a uuid)'
                 FROM _ferry_outbox WHERE rowid = ?1",
            )?
            .execute([rowid])?;
        }
        let Some(last_rowid) = last_rowid else {
            return Ok((0, None));
        };
        let mut clock = Self::clock(tx)?;
        let stamp = Self::next_stamp(tx)?;
        let now = wall_ms();
        // Group by row, keeping the first-seen order, with each entry's clock.
        let mut order: Vec<(String, String)> = Vec::new();
        let mut ops: HashMap<(String, String), RowOps> = HashMap::new();
        for (_, tbl, pk, op, cols, old, wall) in &entries {
            let at = clock.tick(stamp::wall_for(*wall, now));
            let captured = Captured::parse(op, cols.as_deref())
                .map_err(|e| Error::Local(format!("outbox entry for {tbl} '{}': {e}", ferry_core::shown(pk))))?;
            let k = (tbl.clone(), pk.clone());
            if !ops.contains_key(&k) {
                order.push(k.clone());
            }
            let row = ops.entry(k).or_default();
            row.0.push((captured, at));
            if old.is_some() {
                row.1.clone_from(old);
            }
        }
        // What is stored of every touched row, read in one query per table.
        let mut stored: HashMap<(String, String), ferry_sqlite::Stored> = HashMap::with_capacity(order.len());
        let mut by_table: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (t, k) in &order {
            by_table.entry(t.as_str()).or_default().push(k.as_str());
        }
        for (t, ks) in by_table {
            if let Some(ts) = tables.get(t) {
                for s in ferry_sqlite::stored(tx, ts, &ks)? {
                    stored.insert((t.to_owned(), s.key.clone()), s);
                }
            }
        }
        // The change record of a row inserted here: the same for every such row of a table
        // (every column replacing nothing, from the empty version), so made once.
        let mut new_row_change: HashMap<&str, (Option<String>, Option<String>)> = HashMap::new();
        for key in order {
            let Some(ts) = tables.get(&key.0) else {
                continue;
            };
            let row_ops = &ops[&key];
            let pk = key.1.as_str();
            let mut found =
                stored.remove(&key).ok_or_else(|| Error::Local(format!("{} '{pk}' was not read back", key.0)))?;
            // A row inserted here and not written since, the bulk of a large outbox: its state
            // is made without copying the values, and its change record once per table.
            let general;
            let (state, change) = if let (true, [(Captured::Insert, at)]) = (found.meta.is_none(), row_ops.0.as_slice())
                && let Some(values) = found.values.take()
            {
                let names = ts.table.data_columns().map(|c| c.name.clone());
                let state = stamp::inserted(names.zip(values), *at);
                let change = match new_row_change.entry(ts.table.name.as_str()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let (base, seen) = stamp::inserted_change(ts.table.data_columns().map(|c| c.name.as_str()));
                        e.insert(change_json(&ts.table, &base, Some(&seen))?)
                    }
                };
                (state, &*change)
            } else {
                let change = Self::stamped(ts, pk, row_ops, found)?;
                general = change_json(&ts.table, &change.base, change.seen.as_ref())?;
                (change.state, &general)
            };
            let dead = (!state.is_alive()).then(|| ferry_sqlite::encode_values(&ts.table, &ts.values_of(&state)));
            let extra =
                Extra { pending: stamp, change: Some((change.0.as_deref(), change.1.as_deref())), ..Extra::default() };
            ferry_sqlite::write_meta(tx, ts, pk, &state, dead.as_deref(), &extra)?;
        }
        tx.execute("DELETE FROM _ferry_outbox WHERE rowid <= ?1", [last_rowid])?;
        set_meta(tx, Key::Clock, &clock.last().to_string())?;
        Ok((count, Some(last_rowid)))
    }

    /// A row's state and change record after its captured writes, from what is stored of
    /// it (`found`).
    fn stamped(
        ts: &TableSql,
        pk: &str,
        (ops, deleted_values): &RowOps,
        found: ferry_sqlite::Stored,
    ) -> Result<stamp::Change> {
        let state = match &found.meta {
            Some(meta) => ferry_sqlite::state_of(&ts.table, meta, None),
            None => RowState::unknown(),
        };
        let current = found.values.map(|vals| ts.table.data_columns().map(|c| c.name.clone()).zip(vals).collect());
        let deleted = match (&current, deleted_values) {
            (None, Some(json)) => Some(
                ferry_sqlite::decode_values(&ts.table, json)
                    .map_err(|e| Error::Local(format!("outbox entry for {} '{pk}': {e}", ts.table.name)))?,
            ),
            _ => None,
        };
        let values = stamp::values_after(current, deleted, &state);
        let before = stamp::Before {
            state,
            base: parse_base(&ts.table, pk, found.base)?,
            seen_recorded: found.seen.map(|j| parse_seen(&ts.table.name, pk, &j)).transpose()?.is_some(),
        };
        Ok(stamp::fold(before, &values, ops))
    }
}

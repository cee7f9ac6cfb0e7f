//! Stamping: captured writes get clocks and become row states with change records.

use std::collections::{BTreeMap, HashMap};

use ferry_core::strategy::RowClocks;
use ferry_core::{Clock, Hlc, RowState, Stamped, Value};
use ferry_sqlite::{Extra, Meta, TableSql};
use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::records::{change_json, parse_base, parse_seen};
use super::{Replica, get_meta, set_meta, wall_ms};
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
/// One captured operation on a row: op, changed columns, old values, its clock.
type RowOp = (String, Option<String>, Option<String>, Hlc);

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
        let stamp = get_meta(tx, "stamp")?.and_then(|s| s.parse::<i64>().ok()).unwrap_or(0) + 1;
        set_meta(tx, "stamp", &stamp.to_string())?;
        Ok(stamp)
    }

    /// Loads a row's local state. A row the bookkeeping holds as alive but that is missing
    /// from the application table was deleted without capture (for example by `INSERT OR
    /// REPLACE` through a unique index of the application's, which fires no delete trigger):
    /// that delete is recorded now, as a local change. Its column values are gone, so the
    /// tombstone carries none; other replicas keep theirs.
    pub(super) fn load_local(tx: &Connection, ts: &TableSql, pk: &str, clock: &mut Clock) -> Result<Option<(RowState, Meta)>> {
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
        set_meta(tx, "clock", &clock.last().to_string())?;
        Ok(Some((state, meta)))
    }

    /// Stamps inside the caller's transaction. Each entry gets a fresh clock in outbox
    /// order; each touched row's bookkeeping is updated once, with the row's current values
    /// (or, if the row is gone, the last values its delete recorded), and marked pending.
    /// Returns how many outbox entries it took (stamped, or set aside as rejected) and the
    /// rowid of the last.
    pub(super) fn stamp_in(tx: &Transaction<'_>, tables: &HashMap<String, TableSql>, limit: i64) -> Result<(usize, Option<i64>)> {
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
        // A wall time captured while the device's clock ran ahead must not push this
        // replica's clock into the future for good: never stamp later than now.
        let now = wall_ms();
        // Group by row, keeping the first-seen order, with each entry's clock.
        let mut order: Vec<(String, String)> = Vec::new();
        let mut ops: HashMap<(String, String), Vec<RowOp>> = HashMap::new();
        for (_, tbl, pk, op, cols, old, wall) in &entries {
            let at = clock.tick(((*wall).max(0) as u64).min(now));
            let k = (tbl.clone(), pk.clone());
            if !ops.contains_key(&k) {
                order.push(k.clone());
            }
            ops.entry(k).or_default().push((op.clone(), cols.clone(), old.clone(), at));
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
            let found =
                stored.remove(&key).ok_or_else(|| Error::Local(format!("{} '{pk}' was not read back", key.0)))?;
            // A row inserted here and not written since, the bulk of a large outbox: its state
            // is its values, all at the insert's clock (what the general rule makes of it,
            // without copying the values).
            let fresh_insert =
                found.meta.is_none() && found.values.is_some() && matches!(row_ops.as_slice(), [(op, ..)] if op == "I");
            let general;
            let (state, change) = if fresh_insert {
                let names = ts.table.data_columns().map(|c| c.name.clone());
                let state = RowState::inserted(names.zip(found.values.expect("checked")), row_ops[0].3);
                let change = match new_row_change.entry(ts.table.name.as_str()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let base = ts.table.data_columns().map(|c| (c.name.clone(), Hlc::ZERO)).collect();
                        e.insert(change_json(&ts.table, &base, Some(&RowState::unknown().clocks()))?)
                    }
                };
                (state, &*change)
            } else {
                let (state, base, first_seen) = Self::stamped_state(ts, pk, row_ops, found)?;
                general = change_json(&ts.table, &base, first_seen.as_ref())?;
                (state, &general)
            };
            let dead = (!state.is_alive()).then(|| ferry_sqlite::encode_values(&ts.table, &ts.values_of(&state)));
            let extra =
                Extra { pending: stamp, change: Some((change.0.as_deref(), change.1.as_deref())), ..Extra::default() };
            ferry_sqlite::write_meta(tx, ts, pk, &state, dead.as_deref(), &extra)?;
        }
        tx.execute("DELETE FROM _ferry_outbox WHERE rowid <= ?1", [last_rowid])?;
        set_meta(tx, "clock", &clock.last().to_string())?;
        Ok((count, Some(last_rowid)))
    }

    /// A row's state after its captured writes `row_ops`, from what is stored of it
    /// (`found`), with its change record: the base clock of each column written and, for a
    /// first unacknowledged change, the version it started from.
    fn stamped_state(
        ts: &TableSql,
        pk: &str,
        row_ops: &[RowOp],
        found: ferry_sqlite::Stored,
    ) -> Result<(RowState, BTreeMap<String, Hlc>, Option<RowClocks>)> {
        let mut state = match &found.meta {
            Some(meta) => ferry_sqlite::state_of(&ts.table, meta, None),
            None => RowState::unknown(),
        };
        let known = state.exists.at != Hlc::ZERO;
        let current = found.values;
        let last_values: BTreeMap<String, Value> = match &current {
            Some(vals) => ts.table.data_columns().map(|c| c.name.clone()).zip(vals.iter().cloned()).collect(),
            None => match row_ops.iter().rev().find_map(|o| o.2.as_ref()) {
                Some(json) => ferry_sqlite::decode_values(&ts.table, json)
                    .map_err(|e| Error::Local(format!("outbox entry for {} '{pk}': {e}", ts.table.name)))?,
                None => state.cols.iter().map(|(c, s)| (c.clone(), s.value.clone())).collect(),
            },
        };
        // What the local writer had seen of each column it changed: the clock of the
        // value replaced by the first change not yet acknowledged by the server.
        let mut base = parse_base(&ts.table, pk, found.base)?;
        let recorded_seen = found.seen.map(|j| parse_seen(&ts.table.name, pk, &j)).transpose()?;
        // The version the first unacknowledged change started from.
        let first_seen = recorded_seen.is_none().then(|| state.clocks());
        let mut saw = |state: &RowState, cols: &mut dyn Iterator<Item = &String>| {
            for c in cols {
                base.entry(c.clone()).or_insert_with(|| state.cols.get(c).map_or(Hlc::ZERO, |s| s.at));
            }
        };
        for (op, cols, _, at) in row_ops {
            match op.as_str() {
                // An update of a row Ferry never tracked (it predates capture) is its first
                // appearance: record the whole row, as an insert.
                "I" | "U" if op == "I" || (!known && state.exists.at == Hlc::ZERO) => {
                    saw(&state, &mut last_values.keys());
                    state.insert(last_values.clone(), *at);
                }
                "D" => state.delete(*at),
                _ => {
                    let names: Vec<String> = cols
                        .as_deref()
                        .map(serde_json::from_str)
                        .transpose()
                        .map_err(|e| Error::Local(format!("outbox entry for {} '{pk}': {e}", ts.table.name)))?
                        .unwrap_or_default();
                    saw(&state, &mut names.iter());
                    let changed = names.into_iter().filter_map(|c| last_values.get(&c).map(|v| (c, v.clone())));
                    state.update(changed, *at);
                }
            }
        }
        for (col, s) in state.cols.iter_mut() {
            if let Some(v) = last_values.get(col) {
                s.value = v.clone();
            }
        }
        Ok((state, base, first_seen))
    }

}

//! Applying pulled pages: each row meets what the replica holds of it.

use ferry_core::RowState;
use ferry_sqlite::Extra;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use ferry_policy::pull::{self, Action, Found, Settler};

use super::conflicts::Resolvers;
use super::records::{read_seen, register_json, state_from_json, state_json_row, take_held, write_seen};
use super::{Key, Replica, get_meta, set_meta, wall_ms};
use crate::error::{Error, Result};

/// A pulled row to merge in.
#[derive(Clone, Debug)]
pub struct PulledRow {
    pub table: String,
    pub key: String,
    pub state: RowState,
}

/// What applying a pulled page did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub received: usize,
    pub changed: usize,
    pub conflicts: usize,
    /// Rows removed because they left what this device's user may read.
    pub removed: usize,
    /// Rows that break a rule, set aside (`_ferry_pull_refused`).
    pub set_aside: usize,
}

impl Replica {
    /// Merges a pulled page and moves the cursor, in one transaction. Local changes not yet
    /// stamped are stamped first, so the merge sees them.
    pub fn apply(&mut self, rows: &[PulledRow], cursor: &str) -> Result<Applied> {
        self.apply_with(rows, cursor, &Resolvers::default())
    }

    /// As [`Replica::apply`], settling conflicts with local unpushed changes by `resolvers`.
    pub fn apply_with(&mut self, rows: &[PulledRow], cursor: &str, resolvers: &Resolvers) -> Result<Applied> {
        self.apply_page(rows, &[], Key::Cursor, cursor, resolvers)
    }

    /// As [`Replica::apply_with`], storing the cursor under `cursor_key` (a selective sync
    /// keeps one cursor per selection of tables).
    ///
    /// `refused` are the page's rows that break a rule (see [`ferry_protocol::DecodedPage`]):
    /// they are set aside in `_ferry_pull_refused`, in the same transaction, and so is a row
    /// whose clock is further ahead than the drift limit (with its state, for
    /// [`Replica::retry_pulled`]); the rest of the page applies. A row that applies clears its
    /// set-aside entry.
    pub fn apply_page(
        &mut self,
        rows: &[PulledRow],
        refused: &[ferry_protocol::RefusedPull],
        cursor_key: Key<'_>,
        cursor: &str,
        resolvers: &Resolvers,
    ) -> Result<Applied> {
        self.apply_rows(rows, refused, &[], Some((cursor_key, cursor)), resolvers, wall_ms())
    }

    /// As [`Replica::apply_page`], also removing `removed` (table, key): rows that left what
    /// this device's user may read (a `read` rule, a membership changed). They are removed
    /// here only, nothing is pushed for them; a local change to one not yet accepted by the
    /// server is set aside (`_ferry_failed`, code `left_reach`) with the reason.
    pub fn apply_page_removing(
        &mut self,
        rows: &[PulledRow],
        refused: &[ferry_protocol::RefusedPull],
        removed: &[(String, String)],
        cursor_key: Key<'_>,
        cursor: &str,
        resolvers: &Resolvers,
    ) -> Result<Applied> {
        self.apply_rows(rows, refused, removed, Some((cursor_key, cursor)), resolvers, wall_ms())
    }

    /// Applies again the pulled rows set aside only because their clock was too far ahead of
    /// this device's: the row is sound, and once this device's time has caught up (or been
    /// corrected) it applies and its entry clears. The cursor has moved past those rows, so
    /// without this they would wait for the row's next change. Rows still too far ahead stay
    /// set aside; the cursor does not move.
    pub fn retry_pulled(&mut self, resolvers: &Resolvers) -> Result<Applied> {
        self.retry_pulled_at(resolvers, wall_ms())
    }

    fn retry_pulled_at(&mut self, resolvers: &Resolvers, now: u64) -> Result<Applied> {
        let Some(schema) = self.schema.as_ref() else { return Ok(Applied::default()) };
        let mut stmt = self
            .conn
            .prepare("SELECT tbl, pk, state FROM _ferry_pull_refused WHERE state IS NOT NULL ORDER BY tbl, pk")?;
        let kept =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        let (mut rows, mut refused) = (Vec::new(), Vec::new());
        for (table, key, json) in kept {
            let json: String = json;
            let decoded = serde_json::from_str::<ferry_protocol::WireRow>(&json)
                .map_err(|e| ferry_protocol::DecodeError(e.to_string()))
                .and_then(|w| ferry_protocol::decode_row(schema, &w));
            match decoded {
                Ok((_, state)) => rows.push(PulledRow { table, key, state }),
                // The schema changed under it: it now waits, as a refused row, for a newer version.
                Err(e) => refused.push(ferry_protocol::RefusedPull { table, key, reason: e.0 }),
            }
        }
        drop(stmt);
        if rows.is_empty() && refused.is_empty() {
            return Ok(Applied::default());
        }
        self.apply_rows(&rows, &refused, &[], None, resolvers, now)
    }

    /// [`Replica::apply_page`] at wall time `now`; `cursor` (its key and value) is stored with
    /// the rows when given.
    fn apply_rows(
        &mut self,
        rows: &[PulledRow],
        refused: &[ferry_protocol::RefusedPull],
        removed: &[(String, String)],
        cursor: Option<(Key<'_>, &str)>,
        resolvers: &Resolvers,
        now: u64,
    ) -> Result<Applied> {
        let schema = self.schema.clone().ok_or_else(|| Error::Local("no schema installed; sync first".into()))?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::stamp_in(&tx, &self.tables, -1)?;
        let mut clock = Self::clock(&tx)?;
        let mut fresh_stamp = None;
        tx.execute("INSERT INTO _ferry_apply (busy) VALUES (1)", [])?;
        let mut applied = Applied { received: rows.len() + refused.len(), ..Applied::default() };
        if get_meta(&tx, Key::Resync)?.is_some() {
            // A full re-sync: what the server still has.
            let mut seen = tx.prepare_cached("INSERT OR IGNORE INTO _ferry_resync (tbl, pk) VALUES (?1, ?2)")?;
            for r in rows {
                seen.execute(params![r.table, r.key])?;
            }
            for r in refused {
                seen.execute(params![r.table, r.key])?;
            }
        }
        let any_refused: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM _ferry_refused)", [], |r| r.get(0))?;
        let any_set_aside: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM _ferry_pull_refused)", [], |r| r.get(0))?;
        // `state`: the row as pulled, kept when the row is sound and only this device's clock
        // keeps it out; a refused row keeps none and waits for a newer version.
        let set_aside = |table: &str, key: &str, message: &str, state: Option<String>| -> Result<()> {
            tx.prepare_cached(
                "INSERT INTO _ferry_pull_refused (tbl, pk, message, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tbl, pk) DO UPDATE SET message = excluded.message, state = excluded.state,
                   refused_at = excluded.refused_at",
            )?
            .execute(params![table, key, message, state])?;
            Ok(())
        };
        for r in refused {
            set_aside(&r.table, &r.key, &r.reason, None)?;
        }
        applied.set_aside = refused.len();
        for row in rows {
            let ts = self.tables.get(&row.table).ok_or_else(|| {
                Error::Schema(format!("table '{}' is not in this replica's schema; sync to update it", row.table))
            })?;
            if let Err(message) = pull::admit(&mut clock, &row.table, &row.key, &row.state, now) {
                set_aside(&row.table, &row.key, &message, Some(state_json_row(&ts.table, &row.key, &row.state)))?;
                applied.set_aside += 1;
                continue;
            }
            if any_set_aside {
                tx.prepare_cached("DELETE FROM _ferry_pull_refused WHERE tbl = ?1 AND pk = ?2")?
                    .execute(params![row.table, row.key])?;
            }
            let local = Self::load_local(&tx, ts, &row.key, &mut clock)?;
            // A change the server refused as stale waits beside the server's current version.
            let refused_current = match &local {
                Some(_) if any_refused => tx
                    .prepare_cached("SELECT current FROM _ferry_refused WHERE tbl = ?1 AND pk = ?2")?
                    .query_row(params![row.table, row.key], |r| r.get::<_, String>(0))
                    .optional()?
                    .map(|json| state_from_json(&schema, &json))
                    .transpose()?,
                _ => None,
            };
            let pending = local.as_ref().map_or(0, |(_, meta)| meta.pending);
            let seen = if pending > 0 { read_seen(&tx, &ts.table.name, &row.key)? } else { None };
            let found = match (&local, &refused_current) {
                (None, _) => Found::Nothing,
                (Some(_), Some(current)) => Found::Refused { current },
                (Some((state, _)), None) => Found::Row { state, pending: pending > 0, seen: seen.as_ref() },
            };
            let resolver = resolvers.for_table(&ts.table.name);
            let core_resolver = resolver.as_core();
            let meeting = pull::Meeting {
                table: &ts.table.name,
                key: &row.key,
                pulled: &row.state,
                found,
                settler: Settler::of(ts.table.options.conflict),
                resolver: &core_resolver,
                now_ms: now,
            };
            match pull::meet(&meeting, &mut clock) {
                Action::Insert => {
                    ferry_sqlite::store_state(&tx, ts, &row.key, &row.state, &Extra::default())?;
                    applied.changed += 1;
                }
                Action::JoinRefused { current } => {
                    tx.prepare_cached("UPDATE _ferry_refused SET current = ?3 WHERE tbl = ?1 AND pk = ?2")?
                        .execute(params![row.table, row.key, state_json_row(&ts.table, &row.key, &current)])?;
                }
                Action::Hold => {
                    let mut held = take_held(&tx, &schema, &row.table, &row.key)?.unwrap_or_default();
                    held.merge(&row.state);
                    tx.prepare_cached("INSERT INTO _ferry_held (tbl, pk, state) VALUES (?1, ?2, ?3)")?
                        .execute(params![row.table, row.key, state_json_row(&ts.table, &row.key, &held)])?;
                }
                Action::Write(write) => {
                    let before = &local.as_ref().expect("a write meets a local row").0;
                    if let Some(c) = &write.conflict {
                        let mut conflicts = tx.prepare_cached(
                            "INSERT INTO _ferry_conflicts
                               (tbl, pk, col, local_value, local_at, remote_value, remote_at, resolved_by, kind, local, remote)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                        )?;
                        let local = state_json_row(&ts.table, &row.key, before);
                        let remote = state_json_row(&ts.table, &row.key, &row.state);
                        for f in &c.fields {
                            let (lv, la) = register_json(&ts.table, before, f);
                            let (rv, ra) = register_json(&ts.table, &row.state, f);
                            conflicts.execute(params![
                                row.table,
                                row.key,
                                f,
                                lv,
                                la,
                                rv,
                                ra,
                                resolver.name(),
                                c.kind.name(),
                                local,
                                remote
                            ])?;
                            applied.conflicts += 1;
                        }
                    }
                    if let Some(seen) = &write.seen {
                        write_seen(&tx, &ts.table.name, &row.key, seen)?;
                    }
                    if write.stores() {
                        let pending =
                            if write.push { *fresh_stamp.get_or_insert(Self::next_stamp(&tx)?) } else { pending };
                        ferry_sqlite::store_state(
                            &tx,
                            ts,
                            &row.key,
                            &write.state,
                            &Extra { pending, ..Extra::default() },
                        )?;
                        applied.changed += usize::from(write.changed);
                    }
                }
            }
        }
        for (table, key) in removed {
            let Some(ts) = self.tables.get(table) else { continue };
            let Some((_, meta)) = Self::load_local(&tx, ts, key, &mut clock)? else { continue };
            if meta.pending > 0 {
                let message = format!(
                    "{table} '{key}' left what this device's user may read (the table's read rule, or a membership, changed on the server): the row was removed here and this device's change to it was set aside, not pushed"
                );
                tx.prepare_cached(
                    "INSERT INTO _ferry_failed (tbl, pk, stamp, status, code, message) VALUES (?1, ?2, ?3, 403, 'left_reach', ?4)
                     ON CONFLICT (tbl, pk) DO UPDATE SET stamp = excluded.stamp, status = excluded.status,
                       code = excluded.code, message = excluded.message, failed_at = excluded.failed_at",
                )?
                .execute(params![table, key, meta.pending, message])?;
                applied.set_aside += 1;
            }
            Self::forget(&tx, ts, key)?;
            applied.removed += 1;
        }
        tx.execute("DELETE FROM _ferry_apply", [])?;
        set_meta(&tx, Key::Clock, &clock.last().to_string())?;
        if let Some((cursor_key, cursor)) = cursor {
            set_meta(&tx, cursor_key, cursor)?;
        }
        tx.commit()?;
        Ok(applied)
    }
}

impl Replica {
    /// Removes a row here with all its bookkeeping, recording nothing to push (the caller
    /// holds `_ferry_apply`).
    pub(super) fn forget(tx: &rusqlite::Connection, ts: &ferry_sqlite::TableSql, key: &str) -> Result<()> {
        ts.delete(tx, key)?;
        for sql in [
            "DELETE FROM _ferry_rows WHERE tbl = ?1 AND pk = ?2",
            "DELETE FROM _ferry_held WHERE tbl = ?1 AND pk = ?2",
            "DELETE FROM _ferry_refused WHERE tbl = ?1 AND pk = ?2",
            "DELETE FROM _ferry_pull_refused WHERE tbl = ?1 AND pk = ?2",
        ] {
            tx.prepare_cached(sql)?.execute(params![ts.table.name, key])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::hlc::MAX_DRIFT_MS;
    use ferry_core::schema::Schema;
    use ferry_core::{Hlc, SiteId, Value};

    const KEY: &str = "0190f5a2-7c1e-7d3a-9b1f-2c3d4e5f6a7b";

    fn replica(dir: &tempfile::TempDir) -> Replica {
        let schema =
            Schema::parse("CREATE TABLE notes (id uuid PRIMARY KEY, title text);", &Default::default()).unwrap();
        let mut replica = Replica::open(&dir.path().join("r.db")).unwrap();
        replica.install_schema(&ferry_protocol::SchemaResponse::from_schema(&schema)).unwrap();
        replica
    }

    fn note(title: &str, wall_ms: u64) -> PulledRow {
        let state =
            RowState::inserted([("title".to_owned(), Value::Text(title.into()))], Hlc::new(wall_ms, 0, SiteId(7)));
        PulledRow { table: "notes".into(), key: KEY.into(), state }
    }

    fn titles(replica: &Replica) -> Vec<String> {
        let mut stmt = replica.connection().prepare("SELECT title FROM notes ORDER BY title").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(|t| t.unwrap()).collect()
    }

    /// A row whose clock is ahead of this device's by more than the drift limit is set aside
    /// with its state while the rest of the page and the cursor go on; once this device's
    /// time allows (it caught up, or was corrected), a later sync applies it and clears the
    /// entry, without the row changing on the server and without moving the cursor.
    #[test]
    fn a_row_ahead_of_this_devices_clock_is_kept_and_applied_once_time_allows() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(&dir);
        let now = wall_ms();
        let ahead = now + 2 * MAX_DRIFT_MS;
        let other = PulledRow { key: "0190f5a2-7c1e-7d3a-9b1f-000000000001".into(), ..note("other", now) };
        let applied = replica
            .apply_rows(&[note("ahead", ahead), other], &[], &[], Some((Key::Cursor, "7")), &Resolvers::default(), now)
            .unwrap();
        assert_eq!((applied.set_aside, applied.changed), (1, 1));
        assert_eq!(titles(&replica), ["other"]);
        assert_eq!(replica.meta(Key::Cursor).unwrap().as_deref(), Some("7"));
        let kept = replica.refused_pulls().unwrap();
        assert_eq!((kept.len(), kept[0].key.as_str()), (1, KEY));
        assert!(kept[0].message.contains("ahead of this replica's wall clock"), "{kept:?}");

        // Still too far ahead: it stays, nothing applies.
        let retried = replica.retry_pulled_at(&Resolvers::default(), now).unwrap();
        assert_eq!((retried.set_aside, retried.changed), (1, 0));
        assert_eq!(replica.status().unwrap().refused_pulls, 1);

        // This device's time has caught up: it applies, and the entry clears.
        let retried = replica.retry_pulled_at(&Resolvers::default(), ahead).unwrap();
        assert_eq!((retried.set_aside, retried.changed), (0, 1));
        assert_eq!(titles(&replica), ["ahead", "other"]);
        assert_eq!(replica.status().unwrap().refused_pulls, 0);
        assert_eq!(replica.meta(Key::Cursor).unwrap().as_deref(), Some("7"));
    }

    /// A replica whose set-aside table predates the kept state gains the column on opening.
    #[test]
    fn a_replica_from_before_kept_states_gains_the_column() {
        let dir = tempfile::tempdir().unwrap();
        drop(replica(&dir));
        let old = rusqlite::Connection::open(dir.path().join("r.db")).unwrap();
        old.execute_batch("ALTER TABLE _ferry_pull_refused DROP COLUMN state").unwrap();
        drop(old);
        let mut replica = replica(&dir);
        let now = wall_ms();
        let applied = replica
            .apply_page(&[note("ahead", now + 2 * MAX_DRIFT_MS)], &[], Key::Cursor, "1", &Resolvers::default())
            .unwrap();
        assert_eq!(applied.set_aside, 1);
    }

    /// A row refused as breaking a rule keeps no state: it is not tried again by itself, and
    /// waits for the row's next version, which applies and clears it.
    #[test]
    fn a_refused_row_waits_for_a_newer_version_which_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(&dir);
        let refused = ferry_protocol::RefusedPull {
            table: "notes".into(),
            key: KEY.into(),
            reason: format!("notes '{KEY}': column 'title' has a value but the zero clock"),
        };
        let applied = replica.apply_page(&[], &[refused], Key::Cursor, "3", &Resolvers::default()).unwrap();
        assert_eq!(applied.set_aside, 1);
        let retried = replica.retry_pulled(&Resolvers::default()).unwrap();
        assert_eq!(retried, Applied::default());
        assert_eq!(replica.refused_pulls().unwrap().len(), 1);

        replica.apply_page(&[note("mended", wall_ms())], &[], Key::Cursor, "4", &Resolvers::default()).unwrap();
        assert_eq!(titles(&replica), ["mended"]);
        assert!(replica.refused_pulls().unwrap().is_empty());
    }

    /// A push whose answer was lost is sent again under the same batch id while its rows
    /// keep their pending marks, and the server answers it from its record. Values a resolver
    /// writes in between are a new change: the row gets a new mark, so they are pushed.
    #[test]
    fn values_a_resolver_writes_get_a_new_pending_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(&dir);
        replica.connection().execute("INSERT INTO notes (id, title) VALUES (?1, 'mine')", [KEY]).unwrap();
        let sent = replica.pending(10).unwrap();
        let resolvers = Resolvers::default().table("notes", super::super::ClientResolver::LocalWins);
        // Clearly newer than the local write, so the resolver (not the clock) keeps "mine".
        let applied = replica.apply_with(&[note("theirs", wall_ms() + 60_000)], "1", &resolvers).unwrap();
        assert_eq!(applied.conflicts, 1);
        let again = replica.pending(10).unwrap();
        assert_eq!(titles(&replica), ["mine"]);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].stamp, sent[0].stamp, "the resolver's write kept the old mark");
    }
}

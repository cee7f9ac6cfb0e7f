//! Conflicts on the device: client-side resolvers, the replica's own conflict log, and
//! changes the server refused as stale, kept until someone settles them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ferry_core::Value;
use ferry_core::strategy::Resolver;
use ferry_sqlite::Extra;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use ferry_policy::settle;

use super::records::{read_seen, state_from_json, state_json_row, version_json, write_seen};
use super::{Key, Replica, set_meta, wall_ms};
use crate::error::{Error, Result};

/// A field a client-side resolver settled (values as JSON text; `*` is the row's existence).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LocalConflict {
    pub id: i64,
    pub table: String,
    pub key: String,
    pub field: String,
    pub local_value: Option<String>,
    pub local_at: String,
    pub remote_value: Option<String>,
    pub remote_at: String,
    /// The resolver (`newest-wins`, `local-wins`, `remote-wins`, `callback`); empty for
    /// entries from before resolvers existed (newest-wins).
    pub resolved_by: Option<String>,
    pub detected_at: String,
    /// `update-update`, `delete-update` (the pulled version deleted a row changed here) or
    /// `update-delete` (the pulled version changed a row deleted here).
    pub kind: String,
    /// Both full versions (wire form, with clocks), when recorded.
    pub local: serde_json::Value,
    pub remote: serde_json::Value,
}

/// A local change the server refused as stale (`reject-stale`): both versions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Refused {
    pub id: i64,
    pub table: String,
    pub key: String,
    /// The server's current version (wire form).
    pub current: serde_json::Value,
    /// The local version, with the unpushed change (wire form).
    pub local: serde_json::Value,
    pub message: String,
    pub refused_at: String,
}

/// A client-side resolver: how a pulled change settles against a local change not yet
/// pushed, for the fields both changed.
#[derive(Clone, Default)]
pub enum ClientResolver {
    /// The later clock wins, field by field (what the server's `lww` does too).
    #[default]
    NewestWins,
    /// The local value wins: it is written again with a fresh clock and pushed.
    LocalWins,
    /// The pulled value wins: the local change to that field is dropped.
    RemoteWins,
    /// The application decides (see [`ferry_core::strategy::Resolver::Callback`]).
    Callback(Arc<ResolveFn>),
}

/// A resolver callback: given both versions and the contested fields, the values to keep,
/// or `None` to delete the row when existence is contested.
pub type ResolveFn = dyn Fn(&ResolveInput<'_>) -> Option<BTreeMap<String, Value>> + Send + Sync;
pub use ferry_core::strategy::ResolveInput;

impl ClientResolver {
    /// The core's form of this resolver, borrowing its callback.
    pub fn as_core(&self) -> Resolver<'_> {
        match self {
            ClientResolver::NewestWins => Resolver::NewestWins,
            ClientResolver::LocalWins => Resolver::LocalWins,
            ClientResolver::RemoteWins => Resolver::RemoteWins,
            ClientResolver::Callback(f) => Resolver::Callback(&**f),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ClientResolver::NewestWins => "newest-wins",
            ClientResolver::LocalWins => "local-wins",
            ClientResolver::RemoteWins => "remote-wins",
            ClientResolver::Callback(_) => "callback",
        }
    }
}

/// The resolver of each table (and the one for the rest).
#[derive(Clone, Default)]
pub struct Resolvers {
    pub default: ClientResolver,
    pub tables: HashMap<String, ClientResolver>,
}

impl std::fmt::Debug for Resolvers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables: BTreeMap<&str, &str> = self.tables.iter().map(|(t, r)| (t.as_str(), r.name())).collect();
        f.debug_struct("Resolvers").field("default", &self.default.name()).field("tables", &tables).finish()
    }
}

impl Resolvers {
    /// Sets `table`'s resolver.
    pub fn table(mut self, table: &str, resolver: ClientResolver) -> Resolvers {
        self.tables.insert(table.to_owned(), resolver);
        self
    }

    pub fn for_table(&self, table: &str) -> &ClientResolver {
        self.tables.get(table).unwrap_or(&self.default)
    }
}

impl Replica {
    /// The fields this replica's client-side resolvers settled when a pulled change met a
    /// local change not yet pushed, newest first; each with both values.
    pub fn local_conflicts(&self) -> Result<Vec<LocalConflict>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, tbl, pk, col, local_value, local_at, remote_value, remote_at, resolved_by, detected_at,
                    kind, local, remote
             FROM _ferry_conflicts ORDER BY id DESC",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(LocalConflict {
                    id: r.get(0)?,
                    table: r.get(1)?,
                    key: r.get(2)?,
                    field: r.get(3)?,
                    local_value: r.get(4)?,
                    local_at: r.get(5)?,
                    remote_value: r.get(6)?,
                    remote_at: r.get(7)?,
                    resolved_by: r.get(8)?,
                    detected_at: r.get(9)?,
                    kind: r.get::<_, Option<String>>(10)?.unwrap_or_else(|| "update-update".to_owned()),
                    local: version_json(r.get(11)?),
                    remote: version_json(r.get(12)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Local changes the server refused as stale, oldest first.
    pub fn refused(&self) -> Result<Vec<Refused>> {
        let mut stmt =
            self.conn.prepare("SELECT id, tbl, pk, current, message, refused_at FROM _ferry_refused ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Refused {
                    id: r.get(0)?,
                    table: r.get(1)?,
                    key: r.get(2)?,
                    current: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    local: serde_json::Value::Null,
                    message: r.get(4)?,
                    refused_at: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for mut r in rows {
            if let Some(ts) = self.tables.get(&r.table)
                && let Some((state, _)) = ferry_sqlite::load_state(&self.conn, ts, &r.key)?
            {
                r.local =
                    serde_json::to_value(ferry_protocol::encode_row(&ts.table, &r.key, &state)).unwrap_or_default();
            }
            out.push(r);
        }
        Ok(out)
    }

    /// Settles a refused change: `keep_local` writes the local values again on top of the
    /// server's current version (pushed at the next sync, which then no longer counts as
    /// stale); otherwise the server's current version replaces the local change.
    ///
    /// # Errors
    /// [`Error::Local`] naming the id when no refused change has it.
    pub fn settle_refused(&mut self, id: i64, keep_local: bool) -> Result<()> {
        let schema = self.schema.clone().ok_or_else(|| Error::Local("no schema installed; sync first".into()))?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: Option<(String, String, String)> = tx
            .query_row("SELECT tbl, pk, current FROM _ferry_refused WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((table, key, current)) = found else {
            return Err(Error::Local(format!(
                "no refused change with id {id}; `ferry conflicts refused --db …` shows the ids"
            )));
        };
        let ts =
            self.tables.get(&table).ok_or_else(|| Error::Schema(format!("table '{table}' is not in the schema")))?;
        let current = state_from_json(&schema, &current)?;
        let mut clock = Self::clock(&tx)?;
        let now = wall_ms();
        let _ = clock.observe(current.max_clock(), now);
        let Some((local, _)) = Self::load_local(&tx, ts, &key, &mut clock)? else {
            return Err(Error::Local(format!("{table} '{key}' is missing from the replica")));
        };
        tx.execute("INSERT INTO _ferry_apply (busy) VALUES (1)", [])?;
        if keep_local {
            let seen = read_seen(&tx, &table, &key)?.unwrap_or_default();
            let (state, seen) = settle::keep_local(&local, &seen, &current, &mut clock, now);
            let stamp = Self::next_stamp(&tx)?;
            ferry_sqlite::store_state(&tx, ts, &key, &state, &Extra { pending: stamp, ..Extra::default() })?;
            write_seen(&tx, &table, &key, &seen)?;
        } else {
            // The local change is dropped: it stays in the replica's conflict view.
            let (local_json, current_json) =
                (state_json_row(&ts.table, &key, &local), state_json_row(&ts.table, &key, &current));
            tx.execute(
                "INSERT INTO _ferry_conflicts
                   (tbl, pk, col, local_value, local_at, remote_value, remote_at, resolved_by, kind, local, remote)
                 VALUES (?1, ?2, '*', ?3, ?4, ?5, ?6, 'settled: server', 'update-update', ?7, ?8)",
                params![
                    table,
                    key,
                    local.exists.value.to_string(),
                    local.max_clock().to_string(),
                    current.exists.value.to_string(),
                    current.max_clock().to_string(),
                    local_json,
                    current_json
                ],
            )?;
            ferry_sqlite::store_state(&tx, ts, &key, &current, &Extra::default())?;
            tx.execute(
                "UPDATE _ferry_rows SET base = NULL, seen = NULL WHERE tbl = ?1 AND pk = ?2",
                params![table, key],
            )?;
        }
        tx.execute("DELETE FROM _ferry_refused WHERE id = ?1", [id])?;
        tx.execute("DELETE FROM _ferry_apply", [])?;
        set_meta(&tx, Key::Clock, &clock.last().to_string())?;
        tx.commit()?;
        Ok(())
    }
}

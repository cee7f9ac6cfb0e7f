//! The device's subscriptions: kept in the replica, renewed by each sync that names them,
//! dropped when unnamed for longer than their time to live (the server then takes their rows
//! away, as removals).

use rusqlite::params;

use super::{Replica, wall_ms};
use crate::error::Result;

impl Replica {
    /// The subscriptions a sync that names `named` pulls with: those kept and named within
    /// `ttl_ms`, and `named`, sorted. Nothing is written: [`Replica::keep_subscriptions`]
    /// does, once the server has taken them.
    pub fn subscriptions(&self, named: &[String], ttl_ms: u64) -> Result<Vec<String>> {
        let since = (wall_ms() as i64).saturating_sub(ttl_ms as i64);
        let mut active = self
            .conn
            .prepare("SELECT subscription FROM _ferry_subscriptions WHERE used_ms >= ?1")?
            .query_map([since], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        active.extend(named.iter().map(|s| s.trim().to_owned()));
        active.sort();
        active.dedup();
        Ok(active)
    }

    /// After a sync the server answered: renews the subscriptions `named` (adding new ones)
    /// and drops those no sync has named for `ttl_ms`.
    pub fn keep_subscriptions(&mut self, named: &[String], ttl_ms: u64) -> Result<()> {
        let now = wall_ms() as i64;
        let tx = self.conn.transaction()?;
        for s in named {
            tx.execute(
                "INSERT INTO _ferry_subscriptions (subscription, used_ms) VALUES (?1, ?2)
                 ON CONFLICT (subscription) DO UPDATE SET used_ms = excluded.used_ms",
                params![s.trim(), now],
            )?;
        }
        tx.execute("DELETE FROM _ferry_subscriptions WHERE used_ms < ?1", [now.saturating_sub(ttl_ms as i64)])?;
        tx.commit()?;
        Ok(())
    }
}

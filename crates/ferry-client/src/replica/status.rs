//! What `ferry status` shows of a replica.

use super::{Key, Replica};
use crate::error::Result;

/// What `ferry status` shows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    /// Rows with local changes the server has not acknowledged.
    pub pending: u64,
    /// Captured writes not yet given clocks (for example, made by another process).
    pub unstamped: u64,
    pub last_sync: Option<String>,
    pub cursor: String,
    pub conflicts: u64,
    /// Captured writes set aside because they cannot be synced (see `_ferry_rejected`).
    pub rejected: u64,
    pub user_id: Option<String>,
    pub server: Option<String>,
    pub store_id: Option<String>,
    pub site_id: String,
    pub schema_version: Option<String>,
    pub tables: Vec<String>,
    /// Local changes the server refused as stale, kept and marked conflicted until settled.
    pub conflicted: u64,
    /// Local changes the server refused as invalid, set aside with its answer
    /// (`ferry queue --db …`); the rest of the queue moved on.
    pub failed: u64,
    /// Rows the server sent that break a rule, set aside (`ferry queue --db …`); the pull
    /// went on without them.
    pub refused_pulls: u64,
    /// The connection state last reported by a running engine (`ferry sync --watch`):
    /// CONNECTED, DEGRADED, DISCONNECTED, RECONNECTING, OFFLINE_ONLY, or STOPPED.
    pub connection: Option<String>,
    /// Why the engine stopped, when a failure that trying again cannot mend stopped it (a
    /// revoked token, a replica of another user, a table the server does not have).
    pub stopped_because: Option<String>,
    /// The file queue: files to upload or download, bytes pending.
    pub files: FileQueue,
}

impl Replica {
    /// The state a running engine last reported; an engine process that is gone without
    /// saying so (killed) reads as STOPPED.
    fn connection_state(&self) -> Result<Option<String>> {
        let state = self.meta(Key::EngineState)?;
        let pid = self.meta(Key::EnginePid)?.and_then(|p| p.parse::<u32>().ok());
        Ok(match (state, pid) {
            (Some(s), Some(pid)) if s != "STOPPED" && !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                Some("STOPPED".to_owned())
            }
            (s, _) => s,
        })
    }

    /// Records a finished sync.
    pub fn record_sync(&self) -> Result<()> {
        self.conn.execute(
            "INSERT INTO _ferry_meta (key, value) VALUES (?1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [Key::LastSync.name()],
        )?;
        Ok(())
    }

    /// Rows with local changes the server has not acknowledged (stamped or not).
    ///
    /// # Errors
    /// When the replica cannot be read.
    pub fn pending_count(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM (SELECT tbl, pk FROM _ferry_rows WHERE pending > 0 UNION SELECT tbl, pk FROM _ferry_outbox)",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    pub fn status(&self) -> Result<Status> {
        let count = |sql: &str| -> Result<u64> { Ok(self.conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64) };
        Ok(Status {
            pending: self.pending_count()?,
            unstamped: count("SELECT count(*) FROM _ferry_outbox")?,
            conflicted: count("SELECT count(*) FROM _ferry_refused")?,
            failed: count("SELECT count(*) FROM _ferry_failed")?,
            refused_pulls: count("SELECT count(*) FROM _ferry_pull_refused")?,
            connection: self.connection_state()?,
            stopped_because: self.meta(Key::EngineStoppedBecause)?.filter(|why| !why.is_empty()),
            files: self.file_queue_totals()?,
            last_sync: self.meta(Key::LastSync)?,
            cursor: self.meta(Key::Cursor)?.unwrap_or_else(|| "0".into()),
            conflicts: count("SELECT count(*) FROM _ferry_conflicts")?,
            rejected: count("SELECT count(*) FROM _ferry_rejected")?,
            user_id: self.meta(Key::UserId)?,
            server: self.meta(Key::Server)?,
            store_id: self.meta(Key::StoreId)?,
            site_id: self.meta(Key::Site)?.unwrap_or_default(),
            schema_version: self.meta(Key::SchemaVersion)?,
            tables: self
                .schema
                .as_ref()
                .map(|s| s.table_names().iter().map(|t| t.to_string()).collect())
                .unwrap_or_default(),
        })
    }
}

/// The file queue's totals, for `ferry status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FileQueue {
    /// Files to move, both ways.
    pub queued: u64,
    pub uploads: u64,
    pub downloads: u64,
    /// Bytes still to move, as far as known (a download's size is known once the server
    /// has been asked).
    pub bytes_pending: u64,
    /// Queued files whose last attempt failed.
    pub failing: u64,
    pub paused: bool,
}

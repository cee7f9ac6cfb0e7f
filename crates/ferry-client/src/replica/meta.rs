//! The replica's bookkeeping values (`_ferry_meta`), by typed key.

use std::borrow::Cow;

use rusqlite::{Connection, OptionalExtension};

/// A key of `_ferry_meta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// This replica's site id: the writer its clocks name.
    Site,
    /// The last clock handed out.
    Clock,
    /// The last pending mark handed out.
    Stamp,
    /// The server's schema this replica installed (its `/v1/schema` answer), and its version.
    Schema,
    SchemaVersion,
    /// The pull cursor of a sync of every table.
    Cursor,
    /// The pull cursor of a sync of these tables only (sorted, without duplicates): each
    /// selection pulls from its own place.
    TablesCursor(&'a [String]),
    /// Who this replica belongs to, and the server store it syncs with (a cursor means
    /// nothing against another store); the server's address last used.
    UserId,
    StoreId,
    Server,
    /// A pushed batch whose answer has not come: its id and its rows' fingerprint.
    UnansweredBatch,
    /// When the last sync finished.
    LastSync,
    /// What a running engine last reported: its state, its process, and why it stopped
    /// when a failure that retrying cannot mend stopped it.
    EngineState,
    EnginePid,
    EngineStoppedBecause,
    /// File transfers paused (`1`), and a counter a command bumps to wake the worker.
    FilesPaused,
    FilesTrigger,
    /// A full re-sync under way: the cursor key it restarted (see `Replica::start_resync`).
    Resync,
    /// A first hydrate from the server's snapshot under way: the snapshot's id, the next
    /// chunk to apply and the selection of tables (`*` for every table), space-separated.
    Snapshot,
}

impl Key<'_> {
    /// The key as stored.
    pub fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Key::Site => "site",
            Key::Clock => "clock",
            Key::Stamp => "stamp",
            Key::Schema => "schema",
            Key::SchemaVersion => "schema_version",
            Key::Cursor => "cursor",
            Key::TablesCursor(tables) => return Cow::Owned(format!("cursor:{}", tables.join(","))),
            Key::UserId => "user_id",
            Key::StoreId => "store_id",
            Key::Server => "server",
            Key::UnansweredBatch => "unanswered_batch",
            Key::LastSync => "last_sync",
            Key::EngineState => "engine_state",
            Key::EnginePid => "engine_pid",
            Key::EngineStoppedBecause => "engine_stopped_because",
            Key::FilesPaused => "files_paused",
            Key::FilesTrigger => "files_trigger",
            Key::Resync => "resync",
            Key::Snapshot => "snapshot",
        })
    }
}

pub(crate) fn get(conn: &Connection, key: Key<'_>) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM _ferry_meta WHERE key = ?1")?
        .query_row([key.name()], |r| r.get(0))
        .optional()
}

pub(crate) fn set(conn: &Connection, key: Key<'_>, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO _ferry_meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(rusqlite::params![key.name(), value])?;
    Ok(())
}

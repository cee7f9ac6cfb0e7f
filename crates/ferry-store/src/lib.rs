//! The server's stores: one [`Store`] trait, and the embedded SQLite store (the default,
//! zero set-up: one file in the data directory).
//!
//! A store keeps the synced tables as ordinary tables (so other programs can read them),
//! the clocks of every row, a change feed (the embedded store numbers changes in its one
//! writer's commit order; the PostgreSQL store orders them by transaction snapshots, since
//! concurrent transactions commit out of number order: docs/design.md), users and device
//! tokens (hashed), and the record of applied push batches. It merges pushed rows with
//! `ferry-core`'s rule and enforces ownership. It knows nothing of HTTP or JSON bodies.

mod conflicts;
mod postgres;
mod rules;
mod scope;
mod sqlite;

use std::future::Future;

use ferry_core::schema::{Schema, Table};
use ferry_core::strategy::{Decision, PushContext, RowClocks, decide_push};
use ferry_core::{RowState, Value};

pub use conflicts::ConflictFilter;
pub use ferry_protocol::{ConflictRecord, ConflictSide, DeviceRecord, FullSyncRun, PeerStatus, SyncLogEntry};
pub use postgres::PgStore;
pub use scope::Scope;
pub use sqlite::SqliteStore;

/// The device a request comes from, as its token identified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub user_name: String,
    pub device_id: String,
    pub device_name: String,
    /// The token may use the admin endpoints (`/v1/admin/…`).
    pub admin: bool,
    /// The device's role (`ferry token create --role`), for `authoritative` tables.
    pub role: Option<String>,
    /// The request comes from another Ferry server linked as a peer (a token with a server
    /// role, [`SERVER_ROLES`], asking for it): it reads every row of every synced table,
    /// its pushes relay other writers' changes (sharing and write rules were checked where
    /// they were made), and it is never sent back what it brought itself.
    pub peer: bool,
}

/// The roles of servers (`[server] role` in `ferry.toml`): a device token with one of them
/// is the credential another server links with as a peer.
pub const SERVER_ROLES: [&str; 2] = ["main", "cloud"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
}

/// A device token, shown once when created; the store keeps only its hash.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub device_id: String,
    pub token: String,
}

/// One row of a push, decoded and checked against the schema.
#[derive(Clone, Debug)]
pub struct IncomingRow {
    pub table: String,
    pub key: String,
    pub state: RowState,
    /// The clocks of the version the device's change started from; `None` when unknown,
    /// taken as the pushed state itself (nothing unseen, so no conflict).
    pub seen: Option<ferry_core::strategy::RowClocks>,
    /// Apply only if the stored row's version ([`RowState::version`]) is still this one;
    /// otherwise the row is refused with [`Refusal::VersionChanged`] (`If-Match`).
    pub if_version: Option<String>,
}

impl IncomingRow {
    /// A pushed row with no version information (nothing unseen, no precondition).
    pub fn new(table: &str, key: &str, state: RowState) -> IncomingRow {
        IncomingRow { table: table.to_owned(), key: key.to_owned(), state, seen: None, if_version: None }
    }
}

/// Why a pushed row was refused while the rest of its batch applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `reject-stale`: the change was made on an older version than the stored one.
    Stale,
    /// The stored version is not the one the request named (`If-Match`).
    VersionChanged,
}

/// A pushed row that was not applied, with the stored version.
#[derive(Clone, Debug, PartialEq)]
pub struct RefusedRow {
    pub table: String,
    pub key: String,
    pub current: RowState,
    pub reason: Refusal,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PushOutcome {
    pub received: usize,
    pub changed: usize,
    pub replayed: bool,
    /// When the caller's cursor was the feed's end before the batch: the feed's end after it.
    pub cursor: Option<String>,
    /// Rows refused one by one, with the stored version; the rest of the batch applied.
    pub refused: Vec<RefusedRow>,
}

/// How many conflicts of a table, decided by a strategy, are open or resolved
/// ([`Store::conflict_counts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictCount {
    pub table: String,
    pub strategy: String,
    pub open: bool,
    pub count: u64,
}

/// The SQL of [`Store::conflict_counts`], for both stores.
pub(crate) const CONFLICT_COUNTS_SQL: &str =
    "SELECT tbl, strategy, resolved_at IS NULL, count(*) FROM _ferry_conflicts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";

/// A store's connections ([`Store::pool_use`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUse {
    /// How many it may open.
    pub max: usize,
    /// How many are open.
    pub open: usize,
    /// How many are running a request.
    pub in_use: usize,
    /// Requests waiting for one.
    pub waiting: usize,
}

/// One step of a restore ([`Store::restore`]).
#[derive(Debug)]
pub enum RestoreStep {
    /// Rows to merge, as the restoring peer's push.
    Rows(Vec<IncomingRow>),
    /// Everything was sent: commit.
    Commit,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Rows received.
    pub rows: u64,
    /// Rows that changed (the rest were already as sent, or newer here).
    pub changed: u64,
    /// Whether it was committed (else rolled back: the store is as it was).
    pub committed: bool,
}

/// One row of a pull page.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedRow {
    pub table: String,
    pub key: String,
    pub state: RowState,
}

#[derive(Clone, Debug)]
pub struct PullPage {
    pub rows: Vec<FeedRow>,
    /// Rows (table, key) that left what the user may read: the device removes them, locally.
    pub removed: Vec<(String, String)>,
    /// Where the next pull starts. Opaque: each store has its own form.
    pub cursor: String,
    pub more: bool,
}

/// A change committed to the store, for the realtime stream: whose rows it touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The owners of the changed rows of tables without a `read` rule (`None` for rows of
    /// tables without an owner, which everyone reads); `None` altogether when unknown (a
    /// write by another process).
    pub owners: Option<Vec<Option<String>>>,
    /// The changed rows of tables with a `read` rule: (table, reach).
    pub reaches: Vec<(String, String)>,
    /// The tables the change touched (a change to a table that `read` rules' subqueries read
    /// may change who reads what).
    pub tables: Vec<String>,
    /// The device whose push this was, which already has the change; `None` otherwise.
    pub origin: Option<String>,
}

impl Notice {
    /// Everyone may care (unknown writer).
    pub fn anyone() -> Notice {
        Notice { owners: None, reaches: Vec::new(), tables: Vec::new(), origin: None }
    }

    /// Whether this change is news for a device of this user: it may read something the
    /// change touched (`scope`: what the `read` rules' subqueries select for the user), and
    /// the change is not the device's own push.
    pub fn concerns(&self, user_id: &str, device_id: &str, schema: &Schema, scope: &Scope) -> bool {
        if self.origin.as_deref() == Some(device_id) {
            return false;
        }
        let Some(owners) = &self.owners else { return true };
        owners.iter().any(|x| x.as_deref().is_none_or(|u| u == user_id))
            || self.reaches.iter().any(|(t, reach)| schema.table(t).is_some_and(|t| scope.admits(t, reach, user_id)))
    }

    /// Whether the change may have changed what users' `read` rules let them read.
    pub fn moves_scopes(&self, schema: &Schema) -> bool {
        let read = scope::scope_tables(schema);
        !read.is_empty() && (self.owners.is_none() || self.tables.iter().any(|t| read.contains(&t.as_str())))
    }

    fn of(tally: &mut Tally, origin: Option<&str>) -> Notice {
        Notice {
            owners: Some(std::mem::take(&mut tally.owners).into_iter().collect()),
            reaches: std::mem::take(&mut tally.reaches).into_iter().collect(),
            tables: std::mem::take(&mut tally.tables).into_iter().collect(),
            origin: origin.map(str::to_owned),
        }
    }

    /// A change to one row.
    fn of_row(table: &Table, key: &str, state: &RowState, owner: Option<String>, origin: Option<&str>) -> Notice {
        let mut tally = Tally::new();
        tally.note(table, key, state, owner);
        Notice::of(&mut tally, origin)
    }
}

/// How many notices a slow stream subscriber may fall behind before it is told "changed"
/// once for all of them.
const NOTICE_BUFFER: usize = 1024;

/// Store errors, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request is malformed or breaks a schema rule (400).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The named thing already exists (409).
    #[error("{0}")]
    Exists(String),
    /// The store cannot serve now; retry later (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The cursor is older than the compaction horizon (410 `cursor_expired`): deletions it
    /// has not seen may be gone; start over with a full re-sync.
    #[error("{0}")]
    Expired(String),
    /// A bug or corrupt local data (500).
    #[error("internal store error: {0}")]
    Internal(String),
}

impl From<ferry_sqlite::Error> for StoreError {
    fn from(e: ferry_sqlite::Error) -> Self {
        match e {
            ferry_sqlite::Error::Sqlite(e) => e.into(),
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What the server needs from a store. Every method is one transaction: it applies whole
/// or not at all.
pub trait Store: Send + Sync + 'static {
    /// What syncs: the schema's synced tables without their local-only columns
    /// ([`Schema::synced`]). Everything the store keeps, checks and answers is in it.
    fn schema(&self) -> &Schema;

    /// The whole schema, local-only tables and columns included: what devices create.
    fn device_schema(&self) -> &Schema;

    /// This store's permanent id. Cursors are only meaningful against the store that gave
    /// them out, so clients remember it and refuse to mix stores.
    fn id(&self) -> &str;

    /// Creates a user. Errors with [`StoreError::Exists`] if the name is taken.
    fn add_user(&self, name: &str) -> impl Future<Output = Result<User>> + Send;

    /// Registers a device for a user (by name or id) and returns its new bearer token;
    /// `admin` tokens may also use the admin endpoints; `role` names the device's role for
    /// `authoritative` tables.
    fn create_device(
        &self,
        user: &str,
        device: &str,
        admin: bool,
        role: Option<&str>,
    ) -> impl Future<Output = Result<NewToken>> + Send;

    /// Registers an ordinary device (no admin rights, no role); see [`Store::create_device`].
    fn create_token(&self, user: &str, device: &str) -> impl Future<Output = Result<NewToken>> + Send {
        self.create_device(user, device, false, None)
    }

    /// Revokes the live devices `device` names: a device id, or with `user` (a name or id)
    /// that user's devices of that name (each token created for it). Their tokens stop
    /// working at once; their site ids stay theirs. Returns the revoked devices' ids.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] naming the device (and user) when none is live.
    fn revoke_devices(&self, user: Option<&str>, device: &str) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Which of `device_ids` are not live devices (revoked, or unknown): one query however
    /// many ids, so that a server can watch all its open streams' devices cheaply.
    fn revoked_among(&self, device_ids: &[String]) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The devices (of the user with this name or id, when given), by user name, oldest first.
    /// An unknown user is [`StoreError::NotFound`].
    fn devices(&self, user: Option<&str>) -> impl Future<Output = Result<Vec<DeviceRecord>>> + Send;

    /// Records that a device made a request now (the server's token check calls it, at most
    /// once a minute per device; nothing else records it).
    fn device_seen(&self, device_id: &str) -> impl Future<Output = Result<()>> + Send;

    /// The device a bearer token belongs to, or `None` for an unknown or revoked token.
    fn authenticate(&self, token: &str) -> impl Future<Output = Result<Option<Principal>>> + Send;

    /// Merges a batch of rows from `who`. A batch id seen before from the same device is
    /// answered from the record without applying anything. On any refused row nothing is
    /// stored.
    /// `cursor` is the caller's pull cursor, if it sent one (see [`PushOutcome::cursor`]).
    fn push(
        &self,
        who: &Principal,
        batch_id: &str,
        cursor: Option<&str>,
        rows: Vec<IncomingRow>,
    ) -> impl Future<Output = Result<PushOutcome>> + Send;

    /// One row as `who` may read it: `None` when it never existed or belongs to another
    /// user (a deleted row is returned, as a tombstone).
    fn get_row(&self, who: &Principal, table: &str, key: &str)
    -> impl Future<Output = Result<Option<RowState>>> + Send;

    /// Which of `hashes` a file column of a row `who` may read holds: files are as private
    /// as the rows that reference them.
    fn file_refs(
        &self,
        who: &Principal,
        hashes: &[String],
    ) -> impl Future<Output = Result<std::collections::BTreeSet<String>>> + Send;

    /// Every hash some file column holds (for the server's status).
    fn referenced_files(&self) -> impl Future<Output = Result<std::collections::BTreeSet<String>>> + Send;

    /// Changes committed from now on, by this process or (PostgreSQL: any server process
    /// and direct SQL; embedded store: another process) by others.
    fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice>;

    /// The conflict log, newest first.
    fn conflicts(&self, filter: ConflictFilter) -> impl Future<Output = Result<Vec<ConflictRecord>>> + Send;

    /// One entry of the conflict log.
    fn conflict(&self, id: i64) -> impl Future<Output = Result<Option<ConflictRecord>>> + Send;

    /// How many entries the conflict log holds, by table, strategy and state.
    fn conflict_counts(&self) -> impl Future<Output = Result<Vec<ConflictCount>>> + Send;

    /// Resolves an open conflict by a person's choice: the kept version's values of the
    /// conflict's fields are written as a new change (a fresh clock, so it reaches every
    /// replica), and the entry is marked resolved by `manual`. Errors with
    /// [`StoreError::NotFound`] for an unknown id and [`StoreError::Exists`] when it is
    /// already resolved.
    fn resolve_conflict(&self, id: i64, keep: ConflictSide) -> impl Future<Output = Result<ConflictRecord>> + Send;

    /// Up to `limit` rows that changed after `cursor` and that `who` may read, in feed order.
    /// `cursor` is `""` or `"0"` for the start, else a cursor this store gave out; anything
    /// else is [`StoreError::Invalid`].
    fn pull(&self, who: &Principal, cursor: &str, limit: usize) -> impl Future<Output = Result<PullPage>> + Send {
        self.pull_tables(who, cursor, limit, None)
    }

    /// As [`Store::pull`], only rows of `tables` (every table when `None`); a cursor from one
    /// selection of tables is only meaningful for the same selection.
    fn pull_tables(
        &self,
        who: &Principal,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
    ) -> impl Future<Output = Result<PullPage>> + Send {
        self.pull_subscribed(who, cursor, limit, tables, &[])
    }

    /// As [`Store::pull_tables`], narrowed by the device's `subscriptions` (`TABLE WHERE
    /// PREDICATE`, tables with a `read` rule only): of a table it subscribes to, the device
    /// reads only rows some subscription covers, and rows move in and out as its
    /// subscriptions change. A bad subscription is [`StoreError::Invalid`] naming it.
    fn pull_subscribed(
        &self,
        who: &Principal,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
        subscriptions: &[String],
    ) -> impl Future<Output = Result<PullPage>> + Send;

    /// Every row of every table, whoever owns it, a page at a time (cursors as for
    /// [`Store::pull`]). For operators' commands (`ferry audit`), never for devices.
    fn scan(&self, cursor: &str, limit: usize) -> impl Future<Output = Result<PullPage>> + Send;

    /// What the `read` rules' subqueries select for a user now (empty without such rules).
    fn scope(&self, user_id: &str) -> impl Future<Output = Result<Scope>> + Send;

    /// Removes history older than `before_ms` (a wall time in milliseconds): tombstones of
    /// rows deleted before it, the old reaches and batch records only cursors older than them
    /// use. Cursors that have not seen the newest removed tombstone are refused from then on
    /// ([`StoreError::Expired`]). Works a chunk per transaction: writers wait at most for one.
    fn compact(&self, before_ms: u64) -> impl Future<Output = Result<Compacted>> + Send;

    /// The newest bound a compaction removed tombstones before (a wall time in ms; 0 when
    /// never compacted): an integrity check leaves out tombstones either side may have
    /// removed.
    fn compacted_before(&self) -> impl Future<Output = Result<u64>> + Send;

    /// The dashboard's admin password, as its hash (a PHC string: `ferry admin passwd`), when
    /// one is set.
    fn admin_password(&self) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Sets the admin password's hash (`None`: no password; signing in takes a token).
    fn set_admin_password(&self, hash: Option<&str>) -> impl Future<Output = Result<()>> + Send;

    /// The feed's position now, as a cursor: a peer reading on from it gets every change
    /// committed after this call (and may get some committed before again). A catch-up by
    /// difference takes it before it compares, and the link reads on from it.
    fn feed_position(&self) -> impl Future<Output = Result<String>> + Send;

    /// Every row of `table`, alive or a tombstone (tombstones decided before
    /// `tombstones_from_ms` left out), as digest entries: what an integrity check compares.
    /// [`StoreError::Invalid`] for a table the schema does not sync.
    fn row_digests(
        &self,
        table: &str,
        tombstones_from_ms: u64,
    ) -> impl Future<Output = Result<Vec<ferry_core::digest::Entry>>> + Send;

    /// The stored states of `keys` in `table` (keys never seen left out), whoever owns them:
    /// for a peer repairing differences, never for devices.
    fn states(&self, table: &str, keys: Vec<String>) -> impl Future<Output = Result<Vec<(String, RowState)>>> + Send;

    /// Every row of `tables` (tombstones too) as of one consistent snapshot, sent to `out` a
    /// batch at a time (each of one table), whoever owns them: a full sync's snapshot. Returns
    /// the feed cursor of that snapshot (a peer that restored it reads on from there). Stops
    /// with [`StoreError::Unavailable`] when `out` is closed.
    fn export(
        &self,
        tables: Vec<String>,
        out: tokio::sync::mpsc::Sender<Vec<FeedRow>>,
    ) -> impl Future<Output = Result<String>> + Send;

    /// The rows `who` (a device) may read in `tables` (every table when `None`), tombstones
    /// too, as of one consistent snapshot: what its pull from the start would give (owner,
    /// `read` rules, no subscriptions), read inside one read transaction by what it may read
    /// now, in no particular order, sent to `out` a batch of one table (at most `page` rows)
    /// at a time. Returns the cursor that snapshot ends at (under `read` rules naming the
    /// scope it was served under): a pull from it gets every change committed after. A
    /// device's first hydrate (`POST /v1/snapshot`) and catch-up (`POST /v1/catch-up`).
    /// Stops with [`StoreError::Unavailable`] when `out` is closed; [`StoreError::Invalid`]
    /// for a peer or an unknown table.
    fn feed_snapshot(
        &self,
        who: &Principal,
        tables: Option<Vec<String>>,
        page: usize,
        out: tokio::sync::mpsc::Sender<Vec<FeedRow>>,
    ) -> impl Future<Output = Result<String>> + Send;

    /// Merges the rows `steps` brings as `who`'s push (a peer's), through the merge rules, all
    /// in one transaction: committed when [`RestoreStep::Commit`] arrives, rolled back when
    /// `steps` ends without it (a cancelled restore leaves the store as it was).
    fn restore(
        &self,
        who: &Principal,
        steps: tokio::sync::mpsc::Receiver<RestoreStep>,
    ) -> impl Future<Output = Result<Restored>> + Send;

    /// Sets this server's role (`[server] role`), once, at start-up: under `authoritative`
    /// for that role, values written on this side win over what a peer brings.
    fn set_role(&self, role: &str);

    /// This server's role, when set.
    fn role(&self) -> Option<&str>;

    /// How busy the store's connections are now (`/metrics`).
    fn pool_use(&self) -> PoolUse;

    /// Every user, by name.
    fn users(&self) -> impl Future<Output = Result<Vec<User>>> + Send;

    /// Adds the users another server has that this one lacks, with the same ids (so owner
    /// columns and sharing rules mean the same on both). Returns how many were added and,
    /// for each refused, why (its name belongs to another id here).
    fn adopt_users(&self, users: Vec<User>) -> impl Future<Output = Result<(usize, Vec<String>)>> + Send;

    /// For a link's far side (`device`: the peer's device here), the version of each row last
    /// known to be held by both sides, where one is recorded: what a change made since on
    /// either side started from.
    fn peer_bases(
        &self,
        device: &str,
        keys: Vec<(String, String)>,
    ) -> impl Future<Output = Result<std::collections::HashMap<(String, String), RowClocks>>> + Send;

    /// Records that the peer `device` holds these versions of rows (at least).
    fn save_peer_bases(
        &self,
        device: &str,
        rows: Vec<(String, String, RowClocks)>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// As [`Store::save_peer_bases`] for as many rows as `rows` brings, a batch at a time, in
    /// one transaction (a full sync's snapshot: both sides hold at least its versions):
    /// committed when `rows` ends. Returns how many were recorded.
    fn save_peer_bases_from(
        &self,
        device: &str,
        rows: tokio::sync::mpsc::Receiver<Vec<(String, String, RowClocks)>>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// How many rows of `tables` the peer `who` has yet to read after `cursor` (its feed's
    /// backlog: the link's lag in changes).
    fn peer_backlog(
        &self,
        who: &Principal,
        cursor: &str,
        tables: &[String],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Records a link's state (by its name).
    fn save_link(&self, status: PeerStatus) -> impl Future<Output = Result<()>> + Send;

    /// Every link's last recorded state, by name.
    fn links(&self) -> impl Future<Output = Result<Vec<PeerStatus>>> + Send;

    /// Asks the link `peer` to sync everything again from the start, both ways, at its next
    /// run (`ferry peer resync`). [`StoreError::NotFound`] when no such link has run.
    fn request_resync(&self, peer: &str) -> impl Future<Output = Result<()>> + Send;

    /// Whether a full re-sync of `peer` was asked for since last taken (and takes it).
    fn take_resync(&self, peer: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Adds an entry to the sync log, dropping entries older than `keep_ms`; returns its id.
    fn log_sync(&self, entry: SyncLogEntry, keep_ms: u64) -> impl Future<Output = Result<i64>> + Send;

    /// The sync log (of one peer, when given), newest first.
    fn sync_log(&self, peer: Option<&str>, limit: usize) -> impl Future<Output = Result<Vec<SyncLogEntry>>> + Send;

    /// Rows (tombstones included) of `tables`: what a full sync's snapshot will hold.
    fn count_rows(&self, tables: Vec<String>) -> impl Future<Output = Result<u64>> + Send;

    /// Records a full sync's state (by its id), keeping whether a cancel was asked for.
    fn save_full_sync(&self, run: FullSyncRun) -> impl Future<Output = Result<()>> + Send;

    /// The full syncs recorded, newest first.
    fn full_syncs(&self, limit: usize) -> impl Future<Output = Result<Vec<FullSyncRun>>> + Send;

    /// One full sync, with whether a cancel was asked for.
    fn full_sync(&self, id: &str) -> impl Future<Output = Result<Option<FullSyncRun>>> + Send;

    /// Asks the full sync `id` to stop (its process sees it at its next report).
    /// [`StoreError::NotFound`] when no such run is recorded.
    fn cancel_full_sync(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Tells the link `peer` where to read on from, one way (`out`: this store's feed; `in`:
    /// the peer's) at its next run: after a full sync, what the snapshot held is not sent
    /// again.
    fn set_link_start(&self, peer: &str, way: &str, cursor: &str) -> impl Future<Output = Result<()>> + Send;

    /// The starts set for `peer` since last taken, as (way, cursor) (and takes them).
    fn take_link_starts(&self, peer: &str) -> impl Future<Output = Result<Vec<(String, String)>>> + Send;
}

/// What [`Store::compact`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    pub tombstones: u64,
    pub exits: u64,
    pub batches: u64,
    /// The feed position cursors must have reached (the embedded store's sequence number;
    /// PostgreSQL's transaction id).
    pub horizon: i64,
}

/// Rows per batch of a snapshot ([`Store::export`]).
const EXPORT_ROWS: usize = 2000;

/// What a device's snapshot reads (`Store::feed_snapshot`): the selected tables, and whether
/// any table has a `read` rule (then its cursor names the scope). Peers are refused.
fn snapshot_of(schema: &Schema, who: &Principal, tables: Option<&[String]>) -> Result<(Vec<String>, bool)> {
    if who.peer {
        return Err(StoreError::Invalid("a peer takes a full sync's snapshot, not a device's".into()));
    }
    Ok((selected_tables(schema, tables)?, scope::has_read_rules(schema)))
}

/// Keys gathered by table into batches of at most `page` (a device's snapshot loads each
/// batch's states at once).
pub(crate) struct KeyBatches {
    page: usize,
    by_table: std::collections::HashMap<String, Vec<String>>,
}

impl KeyBatches {
    pub(crate) fn new(page: usize) -> KeyBatches {
        KeyBatches { page: page.max(1), by_table: Default::default() }
    }

    /// Adds `key` of `table`; returns the table's batch once it is full.
    pub(crate) fn add(&mut self, table: String, key: String) -> Option<(String, Vec<String>)> {
        let keys = self.by_table.entry(table.clone()).or_default();
        keys.push(key);
        (keys.len() >= self.page).then(|| (table, std::mem::take(keys)))
    }

    /// The batches not full yet.
    pub(crate) fn rest(self) -> impl Iterator<Item = (String, Vec<String>)> {
        self.by_table.into_iter().filter(|(_, keys)| !keys.is_empty())
    }
}

/// Rows a compaction deletes per transaction.
const COMPACT_CHUNK: usize = 1000;

/// The smallest clock text of a wall time: clocks before it sort below it (16 hex digits of
/// `wall_ms << 16`, then the site).
fn clock_bound(before_ms: u64) -> String {
    format!("{:016x}", before_ms << 16)
}

/// The refusal of a cursor the compaction horizon has made too old.
fn expired(cursor: &str, horizon: &str) -> StoreError {
    StoreError::Expired(format!(
        "cursor '{}' is older than this server's compaction horizon ({horizon}): deletions it has not seen were removed; start over with a full re-sync (cursor=0; a device does it by itself, keeping its pending changes; a peer: see docs/peering.md, \"A peer behind the horizon\")",
        ferry_core::shown(cursor)
    ))
}

/// A stored peer base's clocks ([`RowClocks::from_json`]).
fn clocks_of_text(text: &str) -> Result<RowClocks> {
    RowClocks::from_json(text)
        .map_err(|e| StoreError::Internal(format!("stored peer base '{}': {e}", ferry_core::shown(text))))
}

/// The tables a pull covers: a checked selection, or all of the schema's.
fn selected_tables(schema: &Schema, tables: Option<&[String]>) -> Result<Vec<String>> {
    match tables {
        None => Ok(schema.table_names().iter().map(|t| t.to_string()).collect()),
        Some(list) => {
            for t in list {
                if schema.table(t).is_none() {
                    return Err(StoreError::Invalid(format!(
                        "unknown table '{t}' in the selection; the schema has: {}",
                        schema.table_names().join(", ")
                    )));
                }
            }
            Ok(list.to_vec())
        }
    }
}

/// The refusal for a table the store does not keep: unknown, or local-only.
fn unknown_table(schema: &Schema, name: &str) -> StoreError {
    if schema.table(name).is_some_and(|t| t.options.local_only) {
        return StoreError::Invalid(format!(
            "table '{name}' is local_only: it stays on devices and never syncs; remove local_only in ferry.toml to sync it"
        ));
    }
    StoreError::Invalid(format!("unknown table '{name}'; the schema has: {}", schema.table_names().join(", ")))
}

/// The file columns of `schema`, as (table, column, owner column).
fn file_columns(schema: &Schema) -> Vec<(&Table, &str, Option<&str>)> {
    schema
        .tables
        .iter()
        .flat_map(|t| t.options.files.iter().map(move |f| (t, f.as_str(), t.options.owner.as_deref())))
        .collect()
}

/// `CREATE INDEX` for each file column, so a file request finds its rows at once.
fn file_indexes(schema: &Schema) -> String {
    use ferry_core::schema::quote;
    file_columns(schema)
        .iter()
        .map(|(t, col, _)| {
            let name = quote(&format!("_ferry_file_{}_{col}", t.name));
            format!("CREATE INDEX IF NOT EXISTS {name} ON {} ({});\n", quote(&t.name), quote(col))
        })
        .collect()
}

/// A new random bearer token: `fry_` and 64 hex digits (256 bits).
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Internal(format!("no randomness: {e}")))?;
    Ok(format!("fry_{}", ferry_core::to_hex(&bytes)))
}

/// The stored form of a token: SHA-256, hex. Tokens carry 256 random bits, so a fast hash
/// is enough (a password hash would only slow every request).
fn token_hash(token: &str) -> String {
    use sha2::Digest;
    ferry_core::to_hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// The user id in a row's owner column, if the table has one and the row holds it.
fn owner_of(table: &Table, state: &RowState) -> Option<String> {
    let col = table.options.owner.as_ref()?;
    match state.cols.get(col).map(|s| &s.value) {
        Some(Value::Text(s)) => Some(s.clone()),
        _ => None,
    }
}

/// A user or device name, trimmed; 1 to 200 characters.
fn check_name(kind: &str, name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(StoreError::Invalid(format!("{kind} name '{name}' must be 1 to 200 characters")));
    }
    Ok(name.to_owned())
}

/// Either store, chosen at start-up (`ferry serve` without `--database` uses the embedded
/// store; with a `postgres://` URL, PostgreSQL).
#[derive(Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl AnyStore {
    /// Opens PostgreSQL when `database` is given, else the embedded store in `data_dir`.
    ///
    /// # Errors
    /// As [`SqliteStore::open`] and [`PgStore::open`]; a `database` that is not a
    /// `postgres://` URL is [`StoreError::Invalid`].
    pub async fn open(database: Option<&str>, data_dir: &std::path::Path, schema: Schema) -> Result<AnyStore> {
        match database {
            None => Ok(AnyStore::Sqlite(SqliteStore::open(data_dir, schema)?)),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(AnyStore::Postgres(PgStore::open(url, schema).await?))
            }
            Some(other) => Err(StoreError::Invalid(format!(
                "database '{other}' is not a postgres:// URL; leave it out for the embedded store in data_dir"
            ))),
        }
    }

    /// A short description for logs: the kind of store and where it is.
    pub fn describe(&self) -> &'static str {
        match self {
            AnyStore::Sqlite(_) => "embedded SQLite store",
            AnyStore::Postgres(_) => "PostgreSQL store",
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call,
            AnyStore::Postgres($s) => $call,
        }
    };
}

impl Store for AnyStore {
    fn schema(&self) -> &Schema {
        delegate!(self, s => s.schema())
    }

    fn device_schema(&self) -> &Schema {
        delegate!(self, s => s.device_schema())
    }

    fn id(&self) -> &str {
        delegate!(self, s => s.id())
    }

    async fn add_user(&self, name: &str) -> Result<User> {
        delegate!(self, s => s.add_user(name).await)
    }

    async fn create_device(&self, user: &str, device: &str, admin: bool, role: Option<&str>) -> Result<NewToken> {
        delegate!(self, s => s.create_device(user, device, admin, role).await)
    }

    async fn revoke_devices(&self, user: Option<&str>, device: &str) -> Result<Vec<String>> {
        delegate!(self, s => s.revoke_devices(user, device).await)
    }

    async fn revoked_among(&self, device_ids: &[String]) -> Result<Vec<String>> {
        delegate!(self, s => s.revoked_among(device_ids).await)
    }

    async fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRecord>> {
        delegate!(self, s => s.devices(user).await)
    }

    async fn device_seen(&self, device_id: &str) -> Result<()> {
        delegate!(self, s => s.device_seen(device_id).await)
    }

    async fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        delegate!(self, s => s.authenticate(token).await)
    }

    async fn push(
        &self,
        who: &Principal,
        batch_id: &str,
        cursor: Option<&str>,
        rows: Vec<IncomingRow>,
    ) -> Result<PushOutcome> {
        delegate!(self, s => s.push(who, batch_id, cursor, rows).await)
    }

    async fn pull_subscribed(
        &self,
        who: &Principal,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
        subscriptions: &[String],
    ) -> Result<PullPage> {
        delegate!(self, s => s.pull_subscribed(who, cursor, limit, tables, subscriptions).await)
    }

    async fn scan(&self, cursor: &str, limit: usize) -> Result<PullPage> {
        delegate!(self, s => s.scan(cursor, limit).await)
    }

    async fn scope(&self, user_id: &str) -> Result<Scope> {
        delegate!(self, s => s.scope(user_id).await)
    }

    async fn compact(&self, before_ms: u64) -> Result<Compacted> {
        delegate!(self, s => s.compact(before_ms).await)
    }

    async fn compacted_before(&self) -> Result<u64> {
        delegate!(self, s => s.compacted_before().await)
    }

    async fn admin_password(&self) -> Result<Option<String>> {
        delegate!(self, s => s.admin_password().await)
    }

    async fn set_admin_password(&self, hash: Option<&str>) -> Result<()> {
        delegate!(self, s => s.set_admin_password(hash).await)
    }

    async fn feed_position(&self) -> Result<String> {
        delegate!(self, s => s.feed_position().await)
    }

    async fn row_digests(&self, table: &str, tombstones_from_ms: u64) -> Result<Vec<ferry_core::digest::Entry>> {
        delegate!(self, s => s.row_digests(table, tombstones_from_ms).await)
    }

    async fn states(&self, table: &str, keys: Vec<String>) -> Result<Vec<(String, RowState)>> {
        delegate!(self, s => s.states(table, keys).await)
    }

    async fn export(&self, tables: Vec<String>, out: tokio::sync::mpsc::Sender<Vec<FeedRow>>) -> Result<String> {
        delegate!(self, s => s.export(tables, out).await)
    }

    async fn feed_snapshot(
        &self,
        who: &Principal,
        tables: Option<Vec<String>>,
        page: usize,
        out: tokio::sync::mpsc::Sender<Vec<FeedRow>>,
    ) -> Result<String> {
        delegate!(self, s => s.feed_snapshot(who, tables, page, out).await)
    }

    async fn count_rows(&self, tables: Vec<String>) -> Result<u64> {
        delegate!(self, s => s.count_rows(tables).await)
    }

    async fn save_full_sync(&self, run: FullSyncRun) -> Result<()> {
        delegate!(self, s => s.save_full_sync(run).await)
    }

    async fn full_syncs(&self, limit: usize) -> Result<Vec<FullSyncRun>> {
        delegate!(self, s => s.full_syncs(limit).await)
    }

    async fn full_sync(&self, id: &str) -> Result<Option<FullSyncRun>> {
        delegate!(self, s => s.full_sync(id).await)
    }

    async fn cancel_full_sync(&self, id: &str) -> Result<()> {
        delegate!(self, s => s.cancel_full_sync(id).await)
    }

    async fn set_link_start(&self, peer: &str, way: &str, cursor: &str) -> Result<()> {
        delegate!(self, s => s.set_link_start(peer, way, cursor).await)
    }

    async fn take_link_starts(&self, peer: &str) -> Result<Vec<(String, String)>> {
        delegate!(self, s => s.take_link_starts(peer).await)
    }

    async fn restore(&self, who: &Principal, steps: tokio::sync::mpsc::Receiver<RestoreStep>) -> Result<Restored> {
        delegate!(self, s => s.restore(who, steps).await)
    }

    fn set_role(&self, role: &str) {
        delegate!(self, s => s.set_role(role))
    }

    fn role(&self) -> Option<&str> {
        delegate!(self, s => s.role())
    }

    fn pool_use(&self) -> PoolUse {
        delegate!(self, s => s.pool_use())
    }

    async fn users(&self) -> Result<Vec<User>> {
        delegate!(self, s => s.users().await)
    }

    async fn adopt_users(&self, users: Vec<User>) -> Result<(usize, Vec<String>)> {
        delegate!(self, s => s.adopt_users(users).await)
    }

    async fn peer_bases(
        &self,
        device: &str,
        keys: Vec<(String, String)>,
    ) -> Result<std::collections::HashMap<(String, String), RowClocks>> {
        delegate!(self, s => s.peer_bases(device, keys).await)
    }

    async fn save_peer_bases(&self, device: &str, rows: Vec<(String, String, RowClocks)>) -> Result<()> {
        delegate!(self, s => s.save_peer_bases(device, rows).await)
    }

    async fn save_peer_bases_from(
        &self,
        device: &str,
        rows: tokio::sync::mpsc::Receiver<Vec<(String, String, RowClocks)>>,
    ) -> Result<u64> {
        delegate!(self, s => s.save_peer_bases_from(device, rows).await)
    }

    async fn peer_backlog(&self, who: &Principal, cursor: &str, tables: &[String]) -> Result<u64> {
        delegate!(self, s => s.peer_backlog(who, cursor, tables).await)
    }

    async fn save_link(&self, status: PeerStatus) -> Result<()> {
        delegate!(self, s => s.save_link(status).await)
    }

    async fn links(&self) -> Result<Vec<PeerStatus>> {
        delegate!(self, s => s.links().await)
    }

    async fn request_resync(&self, peer: &str) -> Result<()> {
        delegate!(self, s => s.request_resync(peer).await)
    }

    async fn take_resync(&self, peer: &str) -> Result<bool> {
        delegate!(self, s => s.take_resync(peer).await)
    }

    async fn log_sync(&self, entry: SyncLogEntry, keep_ms: u64) -> Result<i64> {
        delegate!(self, s => s.log_sync(entry, keep_ms).await)
    }

    async fn sync_log(&self, peer: Option<&str>, limit: usize) -> Result<Vec<SyncLogEntry>> {
        delegate!(self, s => s.sync_log(peer, limit).await)
    }

    async fn get_row(&self, who: &Principal, table: &str, key: &str) -> Result<Option<RowState>> {
        delegate!(self, s => s.get_row(who, table, key).await)
    }

    async fn file_refs(&self, who: &Principal, hashes: &[String]) -> Result<std::collections::BTreeSet<String>> {
        delegate!(self, s => s.file_refs(who, hashes).await)
    }

    async fn referenced_files(&self) -> Result<std::collections::BTreeSet<String>> {
        delegate!(self, s => s.referenced_files().await)
    }

    fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        delegate!(self, s => s.notices())
    }

    async fn conflicts(&self, filter: ConflictFilter) -> Result<Vec<ConflictRecord>> {
        delegate!(self, s => s.conflicts(filter).await)
    }

    async fn conflict(&self, id: i64) -> Result<Option<ConflictRecord>> {
        delegate!(self, s => s.conflict(id).await)
    }

    async fn conflict_counts(&self) -> Result<Vec<ConflictCount>> {
        delegate!(self, s => s.conflict_counts().await)
    }

    async fn resolve_conflict(&self, id: i64, keep: ConflictSide) -> Result<ConflictRecord> {
        delegate!(self, s => s.resolve_conflict(id, keep).await)
    }
}

/// One pushed row after the table's strategy decided.
pub(crate) struct Merged {
    state: RowState,
    /// The stored state changes.
    changed: bool,
    /// The device lacks something the result holds: it must pull the row.
    kept_newer: bool,
    owner: Option<String>,
    /// The stored row's reach before the push (tables with a `read` rule): whoever could
    /// read it then must hear of the change too.
    was_reach: Option<String>,
    /// The conflict to log, with the stored state before the push; `open` for `manual`.
    conflict: Option<(ferry_core::strategy::Contest, RowState)>,
    open: bool,
    /// The change was refused: nothing is stored and `state` is the stored state.
    refused: Option<Refusal>,
    /// The sites of the pushed registers the store did not hold: the device's own, recorded.
    sites: Vec<ferry_core::SiteId>,
}

/// What a batch's rows did, gathered the same way by every store: the refused rows, the
/// sites of the device's new writes, the owners of changed rows (for the stream), and
/// whether the device holds everything the store now does.
pub(crate) struct Tally {
    pub refused: Vec<RefusedRow>,
    pub sites: Vec<ferry_core::SiteId>,
    pub owners: std::collections::BTreeSet<Option<String>>,
    pub reaches: std::collections::BTreeSet<(String, String)>,
    pub tables: std::collections::BTreeSet<String>,
    pub all_known: bool,
}

/// A merged row the store must write: its state, owner and reach ([`scope::reach_of`]).
pub(crate) struct Write {
    pub state: RowState,
    pub owner: Option<String>,
    pub reach: Option<String>,
    /// The writer holds exactly this state (nothing of the stored row was kept beside it).
    pub exact: bool,
}

impl Write {
    /// The `origin` to record for this row written by `who`: the device, except for a peer
    /// whose state this is not exactly (the merge kept values it lacks, which it must be
    /// sent: a peer is never sent rows whose origin it is).
    pub fn origin<'a>(&self, who: &'a Principal) -> Option<&'a str> {
        (!who.peer || self.exact).then_some(who.device_id.as_str())
    }
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            refused: Vec::new(),
            sites: Vec::new(),
            owners: Default::default(),
            reaches: Default::default(),
            tables: Default::default(),
            all_known: true,
        }
    }

    /// Notes a changed row for the change's notice; returns its reach.
    fn note(&mut self, table: &Table, key: &str, state: &RowState, owner: Option<String>) -> Option<String> {
        if !self.tables.contains(&table.name) {
            self.tables.insert(table.name.clone());
        }
        match scope::reach_of(table, key, state) {
            Some(reach) => {
                self.reaches.insert((table.name.clone(), reach.clone()));
                Some(reach)
            }
            None => {
                self.owners.insert(owner);
                None
            }
        }
    }

    /// Takes one merged row; returns what the store must write, if anything.
    pub fn take(&mut self, table: &Table, key: &str, merged: Merged) -> Option<Write> {
        if let Some(reason) = merged.refused {
            let row = RefusedRow { table: table.name.clone(), key: key.to_owned(), current: merged.state, reason };
            self.refused.push(row);
            return None;
        }
        for site in merged.sites {
            if !self.sites.contains(&site) {
                self.sites.push(site);
            }
        }
        // The stored row had something the device's lacks: it must pull the row.
        self.all_known &= !merged.kept_newer;
        if !merged.changed {
            return None;
        }
        let reach = self.note(table, key, &merged.state, merged.owner.clone());
        if let Some(was) = merged.was_reach {
            self.reaches.insert((table.name.clone(), was));
        }
        Some(Write { state: merged.state, owner: merged.owner, reach, exact: !merged.kept_newer })
    }

    /// The device a batch's notice names as already holding the change: the writer, except
    /// a peer the merge kept something from (it must hear of the change, and pull).
    pub fn notice_origin<'a>(&self, who: &'a Principal) -> Option<&'a str> {
        (!who.peer || self.all_known).then_some(who.device_id.as_str())
    }

    /// The device may take a cursor past its batch: nothing refused, nothing it lacks.
    pub fn caught_up(&self) -> bool {
        self.all_known && self.refused.is_empty()
    }

    /// The refused rows as the batch record keeps them (`[[table, key], …]`).
    pub fn refused_keys(&self) -> String {
        let keys: Vec<(&str, &str)> = self.refused.iter().map(|r| (r.table.as_str(), r.key.as_str())).collect();
        serde_json::to_string(&keys).expect("strings serialize")
    }
}

/// What a store knows when it decides pushed rows: its site ids, the devices holding
/// roles, and the devices the batch's sites are registered to.
pub(crate) struct Deciding {
    pub server_site: ferry_core::SiteId,
    /// This server's own role (`[server] role`): under `authoritative` for that role, the
    /// values written on this side (not brought by a peer) are the authority's.
    pub local_role: Option<String>,
    /// The site ids of devices that hold a role now (not revoked): the device and its role.
    pub role_sites: std::collections::HashMap<ferry_core::SiteId, (String, String)>,
    /// The device each site of the batch's clocks is registered to, where it is one.
    pub site_devices: std::collections::HashMap<ferry_core::SiteId, SiteDevice>,
    pub now_ms: u64,
    /// For each table of the batch with a `write` rule, the values its subqueries select for
    /// the pushing user before the batch: which stored rows the user may change.
    pub write_sets: std::collections::HashMap<String, Vec<Vec<Value>>>,
}

/// The device a site id is registered to (its first write through a push registered it).
pub(crate) struct SiteDevice {
    pub device_id: String,
    pub user_id: String,
    pub name: String,
    pub role: Option<String>,
}

impl SiteDevice {
    /// Whether `who` may write with this site: it is the device, or the same device under
    /// a new token (same user, name and role; a replica keeps its site id across tokens).
    fn admits(&self, who: &Principal) -> bool {
        self.device_id == who.device_id
            || (self.user_id == who.user_id && self.name == who.device_name && self.role == who.role)
    }
}

/// The devices the given sites are registered to: `(site, device id, user id, name, role)`
/// rows of [`SITE_DEVICES_SQL`].
pub(crate) fn site_devices(
    rows: impl IntoIterator<Item = (String, String, String, String, Option<String>)>,
) -> std::collections::HashMap<ferry_core::SiteId, SiteDevice> {
    rows.into_iter()
        .filter_map(|(site, device_id, user_id, name, role)| {
            Some((site.parse().ok()?, SiteDevice { device_id, user_id, name, role }))
        })
        .collect()
}

/// The registered device of sites (`?1`/`$1` is one site id on SQLite, an array on PostgreSQL).
pub(crate) const SITE_DEVICES_SQL: &str = "SELECT s.site, d.id, d.user_id, d.name, d.role FROM _ferry_sites s
    JOIN _ferry_devices d ON d.id = s.device_id WHERE s.site";

/// The distinct site ids in the clocks of `states`, as stored (text).
pub(crate) fn batch_sites<'a>(states: impl Iterator<Item = &'a RowState>) -> Vec<String> {
    let mut sites: Vec<ferry_core::SiteId> = Vec::new();
    for s in states {
        for at in s.cols.values().map(|c| c.at).chain([s.exists.at]) {
            if !sites.contains(&at.site()) {
                sites.push(at.site());
            }
        }
    }
    sites.iter().map(ToString::to_string).collect()
}

/// The site ids of devices holding a role, from `_ferry_sites` joined with live devices.
pub(crate) const ROLE_SITES_SQL: &str = "SELECT s.site, d.id, d.role FROM _ferry_sites s
    JOIN _ferry_devices d ON d.id = s.device_id WHERE d.role IS NOT NULL AND d.revoked_at IS NULL";

impl Deciding {
    /// Builds the map from `(site, device id, role)` rows.
    pub fn role_sites(
        rows: impl IntoIterator<Item = (String, String, String)>,
    ) -> std::collections::HashMap<ferry_core::SiteId, (String, String)> {
        rows.into_iter().filter_map(|(site, device, role)| Some((site.parse().ok()?, (device, role)))).collect()
    }

    /// Checks the sites of the registers a push brings that the store does not hold: a
    /// device's new writes carry its own site, never the server's nor one registered to
    /// another device (which would write under its name: pass values off as the authority's,
    /// or hide a conflict from that device).
    fn check_sites(&self, table: &Table, key: &str, who: &Principal, sites: &[ferry_core::SiteId]) -> Result<()> {
        for site in sites {
            let reserved = *site == self.server_site
                || table.options.authority.as_deref().is_some_and(|r| *site == self.authority_stamp(r));
            if reserved {
                return Err(StoreError::Forbidden(format!(
                    "{} '{key}': a clock carries site {site}, which only the server writes with; a device's changes carry its own site id",
                    table.name
                )));
            }
            if self.site_devices.get(site).is_some_and(|d| !d.admits(who)) {
                return Err(StoreError::Forbidden(format!(
                    "{} '{}': a clock carries site {site}, which belongs to another device; a device's changes carry its own site id",
                    table.name,
                    ferry_core::shown(key)
                )));
            }
        }
        Ok(())
    }

    /// The site id the server stamps a value it keeps for `role` with: fixed per server and
    /// role, so later conflicts still count the value as the role's.
    fn authority_stamp(&self, role: &str) -> ferry_core::SiteId {
        ferry_core::SiteId::named(&format!("{}/{role}", self.server_site))
    }
}

/// Merges a pushed row into its stored state (`stored`: the state and its recorded owner)
/// under the table's conflict strategy, applying the ownership rule on owned tables: a
/// device may touch only rows of its own user, and may not leave a row owned by anyone
/// else. Every store calls this; only the SQL around it differs.
fn merge_pushed(
    table: &Table,
    who: &Principal,
    stored: Option<(RowState, Option<String>)>,
    row: &IncomingRow,
    env: &Deciding,
) -> Result<Merged> {
    let (key, incoming, if_version) = (row.key.as_str(), &row.state, row.if_version.as_deref());
    let own_clocks;
    let seen = match row.seen.as_ref() {
        Some(s) => s,
        None => {
            own_clocks = incoming.clocks();
            &own_clocks
        }
    };
    let here = || format!("{} '{}'", table.name, ferry_core::shown(key));
    // A peer relays changes its own side admitted: this side's device rules do not apply.
    let device = !who.peer;
    if device && table.options.read_only {
        return Err(StoreError::Forbidden(format!(
            "{}: table '{}' is read-only for devices (read_only = true in ferry.toml); only the server's own SQL writes it",
            here(),
            table.name
        )));
    }
    if device
        && table.options.owner.is_some()
        && let Some((_, owner)) = &stored
        && owner.as_deref() != Some(who.user_id.as_str())
    {
        return Err(StoreError::Forbidden(format!(
            "{} belongs to another user; a device may write only its own user's rows",
            here()
        )));
    }
    let was_reach = stored.as_ref().and_then(|(s, _)| scope::reach_of(table, key, s));
    let before = stored.map(|(s, _)| s).unwrap_or_default();
    let sets = env.write_sets.get(&table.name).map_or(&[][..], Vec::as_slice);
    let new_sites = new_sites(&before, incoming);
    if device {
        rules::check_write(table, key, &before, who, sets, "as it is stored (it is not yours to change)")?;
        env.check_sites(table, key, who, &new_sites)?;
    }
    if if_version.is_some_and(|v| v != before.version()) {
        let (changed, kept_newer, owner) = (false, true, owner_of(table, &before));
        let refused = Some(Refusal::VersionChanged);
        let sites = Vec::new();
        return Ok(Merged {
            state: before,
            changed,
            kept_newer,
            owner,
            was_reach,
            conflict: None,
            open: false,
            refused,
            sites,
        });
    }
    let role = table.options.authority.as_deref();
    let stamp = role.map_or(env.server_site, |r| env.authority_stamp(r));
    // A value is the authority's when its writer holds the role, or, against what a peer
    // brings to the server whose own role it is, when it was written on this side. (Between
    // this side's own devices, only the role's holders win.)
    let is_authority = |site: ferry_core::SiteId| {
        role.is_some_and(|r| {
            let holder = env.role_sites.get(&site).map(|(_, s)| s.as_str());
            site == stamp
                || holder == Some(r)
                || (who.peer
                    && env.local_role.as_deref() == Some(r)
                    && holder.is_none_or(|h| !SERVER_ROLES.contains(&h)))
        })
    };
    // No person stands at a link to settle a refusal: between servers, `reject-stale`
    // decides as `manual` (the provisional winner kept, the conflict open for a person).
    let strategy = match table.options.conflict {
        ferry_core::schema::ConflictStrategy::RejectStale if who.peer => ferry_core::schema::ConflictStrategy::Manual,
        s => s,
    };
    let ctx = PushContext {
        strategy,
        writer_is_authority: role.is_some() && who.role.as_deref() == role,
        authority_site: &is_authority,
        server_site: env.server_site,
        authority_stamp: stamp,
        now_ms: env.now_ms,
        relayed: who.peer,
    };
    let (state, conflict, open, restamped, refused) = match decide_push(&before, incoming, seen, &ctx) {
        Decision::Apply { state, conflict, open, restamped } => (state, conflict, open, restamped, None),
        Decision::Reject { conflict } => (before.clone(), Some(conflict), false, false, Some(Refusal::Stale)),
    };
    let changed = state != before;
    // The device must pull when the result holds a register its state lacks.
    let kept_newer = restamped || !state.same_clocks(incoming);
    let owner = owner_of(table, &state);
    if let Some(col) = table.options.owner.as_ref().filter(|_| refused.is_none() && device)
        && owner.as_deref() != Some(who.user_id.as_str())
    {
        return Err(StoreError::Forbidden(format!(
            "{}: owner column '{col}' is {}, not your user id '{}'; a device may write only its own user's rows",
            here(),
            owner.map_or("missing".to_owned(), |o| format!("'{o}'")),
            who.user_id
        )));
    }
    // A live row must hold every NOT NULL column, whatever the registers it merged from
    // (a tombstone's old values, a column never written): no device could pull it otherwise.
    if refused.is_none()
        && changed
        && state.is_alive()
        && let Some(col) =
            table.data_columns().find(|c| c.not_null && state.cols.get(&c.name).is_none_or(|v| v.value.is_null()))
    {
        return Err(StoreError::Invalid(format!(
            "{}: column '{}' is NOT NULL, but the row would be live without a value for it; send the row's values with its insert",
            here(),
            col.name
        )));
    }
    // Rows the table's filter holds true for stay on the server: a device may not make one.
    if let Some(filter) = &table.access.filter
        && device
        && refused.is_none()
        && changed
        && state.is_alive()
        && filter.allows_given(&rules::rule_row(table, key, &state, None), &who.user_id, &[])
    {
        return Err(StoreError::Forbidden(format!(
            "{}: the row matches the table's filter `{}`, and such rows stay on the server; devices may not write them",
            here(),
            filter.source
        )));
    }
    let sites = if refused.is_some() { Vec::new() } else { new_sites };
    Ok(Merged {
        state,
        changed,
        kept_newer,
        owner,
        was_reach,
        conflict: conflict.map(|c| (c, before)),
        open,
        refused,
        sites,
    })
}

/// The sites of the registers `incoming` holds newer than `stored`: writes the store does
/// not have, which only their writer can bring.
fn new_sites(stored: &RowState, incoming: &RowState) -> Vec<ferry_core::SiteId> {
    let mut out: Vec<ferry_core::SiteId> = Vec::new();
    let mut add = |theirs: ferry_core::Hlc, ours: ferry_core::Hlc| {
        if theirs > ours && !out.contains(&theirs.site()) {
            out.push(theirs.site());
        }
    };
    add(incoming.exists.at, stored.exists.at);
    for (c, v) in &incoming.cols {
        add(v.at, stored.cols.get(c).map_or(ferry_core::Hlc::ZERO, |s| s.at));
    }
    out
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The live devices `device` names (see [`Store::revoke_devices`]): `?1`/`$1` the user (name
/// or id, or NULL), `?2`/`$2` the device id or name.
pub(crate) const DEVICES_NAMED: &str = "revoked_at IS NULL AND (id = $2 OR (name = $2 AND user_id IN
    (SELECT id FROM _ferry_users WHERE name = $1 OR id = $1)))";

/// The refusal for a user name or id nobody has.
fn no_user(user: &str) -> StoreError {
    StoreError::NotFound(format!(
        "no user '{}'; `ferry device list` shows every user's devices",
        ferry_core::shown(user)
    ))
}

/// The refusal when [`Store::revoke_devices`] finds no live device.
fn no_device(user: Option<&str>, device: &str) -> StoreError {
    StoreError::NotFound(match user {
        Some(u) => format!(
            "no live device '{}' of user '{}'; it may be revoked already",
            ferry_core::shown(device),
            ferry_core::shown(u)
        ),
        None => format!("no live device with id '{}'; it may be revoked already", ferry_core::shown(device)),
    })
}

/// The refusal of a peer's user whose name another user has here.
fn user_clash(user: &User, here: &str) -> String {
    format!(
        "user '{}' (id {}) is user {here} here: two servers created the same name; rename one (the other side's rows keep their ids)",
        ferry_core::shown(&user.name),
        ferry_core::shown(&user.id)
    )
}

/// The refusal of a re-sync of a link that never ran.
fn no_link(peer: &str) -> StoreError {
    StoreError::NotFound(format!(
        "no link named '{}' has run on this server; `ferry peer status` lists the links",
        ferry_core::shown(peer)
    ))
}

/// The link state and sync log as stored: JSON of the wire types.
fn link_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("link records serialize")
}

fn link_of_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(format!("stored link record: {e}")))
}

/// Whether `rule` (a predicate over `table`'s columns, without subqueries) holds for the row
/// `key` in `state` (a tombstone's last values count).
pub fn row_matches(rule: &ferry_core::rules::Rule, table: &Table, key: &str, state: &RowState) -> bool {
    rule.allows_given(&rules::rule_row(table, key, state, None), "", &[])
}

/// A stored full sync record, with whether a cancel was asked for.
fn full_sync_of(text: &str, cancel: bool) -> Result<FullSyncRun> {
    let mut run: FullSyncRun = link_of_json(text)?;
    run.cancel_requested = cancel;
    Ok(run)
}

fn no_full_sync(id: &str) -> StoreError {
    StoreError::NotFound(format!(
        "no full sync '{}' is recorded; `ferry full-sync history -c ferry.toml` lists them",
        ferry_core::shown(id)
    ))
}

/// A device role, checked: `None` stays `None`.
fn check_role(role: Option<&str>) -> Result<Option<String>> {
    role.map(|r| ferry_core::schema::check_role(r).map(|()| r.to_owned()).map_err(StoreError::Invalid)).transpose()
}

/// The refused rows of a recorded batch, from their stored JSON (`[[table, key], …]`).
fn refused_keys(json: Option<&str>) -> Result<Vec<(String, String)>> {
    json.map_or(Ok(Vec::new()), |j| {
        serde_json::from_str(j).map_err(|e| StoreError::Internal(format!("recorded refused rows: {e}")))
    })
}

//! The replica's bookkeeping tables, and the one list of steps that brings a replica file
//! from any earlier version to this one. [`migrate`] runs every step, each of which does
//! nothing when done already, on every open.

use ferry_core::schema::quote;
use rusqlite::Connection;

/// One step of [`migrate`], in order.
enum Step {
    /// Statements that create what is missing (`IF NOT EXISTS`).
    Create(&'static str),
    /// The outbox, and its rebuild from the first form of its check on `op`.
    Outbox,
    /// A nullable text column added to a table since its first release.
    AddColumn(&'static str, &'static str),
}

const STEPS: &[Step] = &[
    Step::Create(BOOKKEEPING),
    Step::Outbox,
    Step::Create(QUEUE_TABLES),
    Step::Create(FILE_TABLES),
    Step::Create(SUBSCRIPTION_TABLES),
    Step::Create(RESYNC_TABLES),
    Step::AddColumn("_ferry_conflicts", "resolved_by"),
    Step::AddColumn("_ferry_conflicts", "kind"),
    Step::AddColumn("_ferry_conflicts", "local"),
    Step::AddColumn("_ferry_conflicts", "remote"),
    Step::AddColumn("_ferry_pull_refused", "state"),
];

/// Brings the replica's bookkeeping up to date (`_ferry_rows` is `ferry-sqlite`'s, made
/// before).
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    for step in STEPS {
        match step {
            Step::Create(sql) => conn.execute_batch(sql)?,
            Step::Outbox => {
                conn.execute_batch(&outbox_ddl("_ferry_outbox"))?;
                upgrade_outbox(conn)?;
            }
            Step::AddColumn(table, column) => {
                let has: bool = conn.query_row(
                    "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, column],
                    |r| r.get(0),
                )?;
                if !has {
                    conn.execute_batch(&format!("ALTER TABLE {} ADD COLUMN {} TEXT", quote(table), quote(column)))?;
                }
            }
        }
    }
    Ok(())
}

/// The replica's bookkeeping tables (besides `_ferry_rows`).
const BOOKKEEPING: &str = "
CREATE TABLE IF NOT EXISTS _ferry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS _ferry_rejected (
    id INTEGER PRIMARY KEY,
    tbl TEXT NOT NULL,
    pk TEXT,
    op TEXT NOT NULL,
    reason TEXT NOT NULL,
    rejected_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS _ferry_apply (busy INTEGER);
CREATE TABLE IF NOT EXISTS _ferry_conflicts (
    id INTEGER PRIMARY KEY,
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    col TEXT NOT NULL,
    local_value TEXT,
    local_at TEXT NOT NULL,
    remote_value TEXT,
    remote_at TEXT NOT NULL,
    detected_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS _ferry_refused (
    id INTEGER PRIMARY KEY,
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    current TEXT NOT NULL,
    message TEXT NOT NULL,
    refused_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (tbl, pk)
);
CREATE TABLE IF NOT EXISTS _ferry_held (
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (tbl, pk)
);
CREATE INDEX IF NOT EXISTS _ferry_rows_pending ON _ferry_rows(pending) WHERE pending > 0;
";

/// The outbox capture triggers append to, created as `name`. The check on `op` is spelled
/// with `=`: `op IN ('I', 'U', 'D')` makes SQLite build a list for every row a trigger
/// writes, most of what capture costs (see [`upgrade_outbox`]).
pub(crate) fn outbox_ddl(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (
    tbl TEXT NOT NULL,
    pk,
    op TEXT NOT NULL CHECK (op = 'I' OR op = 'U' OR op = 'D'),
    cols TEXT,
    old TEXT,
    wall_ms INTEGER NOT NULL
)"
    )
}

/// Rebuilds an outbox made with the slower check on `op` (replicas from before it changed),
/// keeping its entries and their order, in one transaction with the capture triggers that
/// write to it (dropped first, so that renaming the new table finds nothing pointing at a
/// missing one, then made again as they were). Does nothing for a current outbox.
fn upgrade_outbox(conn: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    let old: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = '_ferry_outbox' AND sql LIKE '%op IN (%'",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let triggers: Vec<(String, String)> = tx
        .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND sql LIKE '%_ferry_outbox%'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, _) in &triggers {
        tx.execute_batch(&format!("DROP TRIGGER {}", quote(name)))?;
    }
    tx.execute_batch(&format!(
        "{};
         INSERT INTO _ferry_outbox_new (rowid, tbl, pk, op, cols, old, wall_ms)
           SELECT rowid, tbl, pk, op, cols, old, wall_ms FROM _ferry_outbox;
         DROP TABLE _ferry_outbox;
         ALTER TABLE _ferry_outbox_new RENAME TO _ferry_outbox;",
        outbox_ddl("_ferry_outbox_new")
    ))?;
    for (_, sql) in &triggers {
        tx.execute_batch(sql)?;
    }
    tx.commit()
}

const QUEUE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS _ferry_failed (
    id INTEGER PRIMARY KEY,
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    stamp INTEGER NOT NULL,
    status INTEGER NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    failed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (tbl, pk)
);
CREATE TABLE IF NOT EXISTS _ferry_pull_refused (
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    message TEXT NOT NULL,
    refused_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    state TEXT,
    PRIMARY KEY (tbl, pk)
);
CREATE TABLE IF NOT EXISTS _ferry_history (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    outcome TEXT NOT NULL CHECK (outcome IN ('completed', 'failed')),
    pushed INTEGER NOT NULL,
    pulled INTEGER NOT NULL,
    set_aside INTEGER NOT NULL,
    error TEXT
);
";

/// The device's subscriptions (`ferry sync --subscribe`): each as given, and when a sync last
/// named it (milliseconds); one unnamed for longer than its time to live is dropped.
const SUBSCRIPTION_TABLES: &str = "
CREATE TABLE IF NOT EXISTS _ferry_subscriptions (
    subscription TEXT PRIMARY KEY,
    used_ms INTEGER NOT NULL
);
";

/// A full re-sync under way (the server's compaction horizon passed this replica's cursor):
/// the keys the server has sent since it began. Rows it never sends are gone there.
const RESYNC_TABLES: &str = "
CREATE TABLE IF NOT EXISTS _ferry_resync (
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    PRIMARY KEY (tbl, pk)
) WITHOUT ROWID;
";

const FILE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS _ferry_files (
    hash TEXT PRIMARY KEY,
    uploaded INTEGER NOT NULL DEFAULT 0,
    size INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS _ferry_file_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    direction TEXT NOT NULL CHECK (direction IN ('up', 'down')),
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    millis INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'mismatch', 'failed', 'paused')),
    error TEXT
);
";

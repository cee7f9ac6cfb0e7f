//! A replica made before the outbox's check on `op` was rewritten (`op IN (…)` made SQLite
//! build a list for every captured write) is upgraded when opened: its waiting entries keep
//! their order and capture goes on.

use std::collections::BTreeMap;

use ferry_client::Replica;
use ferry_core::schema::Schema;
use ferry_protocol::SchemaResponse;

const OLD_OUTBOX: &str = "CREATE TABLE _ferry_outbox (
    tbl TEXT NOT NULL,
    pk,
    op TEXT NOT NULL CHECK (op IN ('I', 'U', 'D')),
    cols TEXT,
    old TEXT,
    wall_ms INTEGER NOT NULL
)";

fn key(i: u32) -> String {
    format!("01900000-0000-7000-8000-{i:012}")
}

fn outbox(conn: &rusqlite::Connection) -> Vec<(i64, String)> {
    conn.prepare("SELECT rowid, pk FROM _ferry_outbox ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn an_outbox_with_the_old_check_is_rebuilt_keeping_its_entries_and_capture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let schema = Schema::parse("CREATE TABLE notes (id uuid PRIMARY KEY, title text);", &BTreeMap::new()).unwrap();
    let mut replica = Replica::open(&path).unwrap();
    replica.install_schema(&SchemaResponse::from_schema(&schema)).unwrap();
    for i in [3, 1, 2] {
        replica.connection().execute("INSERT INTO notes (id, title) VALUES (?1, 'n')", [key(i)]).unwrap();
    }
    drop(replica);

    // Make it as an older Ferry left it: the old check, the same entries and triggers.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let before = outbox(&conn);
    let triggers: Vec<String> = conn
        .prepare("SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'notes'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(!triggers.is_empty());
    conn.execute_batch(&format!(
        "BEGIN;
         DROP TRIGGER _ferry_ins_notes; DROP TRIGGER _ferry_upd_notes; DROP TRIGGER _ferry_key_notes; DROP TRIGGER _ferry_del_notes;
         ALTER TABLE _ferry_outbox RENAME TO _ferry_outbox_was;
         {OLD_OUTBOX};
         INSERT INTO _ferry_outbox (rowid, tbl, pk, op, cols, old, wall_ms) SELECT rowid, tbl, pk, op, cols, old, wall_ms FROM _ferry_outbox_was;
         DROP TABLE _ferry_outbox_was;
         {};
         COMMIT;",
        triggers.join(";\n")
    ))
    .unwrap();
    drop(conn);

    let mut replica = Replica::open(&path).unwrap();
    let sql: String = replica
        .connection()
        .query_row("SELECT sql FROM sqlite_schema WHERE name = '_ferry_outbox'", [], |r| r.get(0))
        .unwrap();
    assert!(!sql.contains("op IN"), "the outbox was not rebuilt: {sql}");
    assert_eq!(outbox(replica.connection()), before, "entries and their order kept");
    replica.connection().execute("INSERT INTO notes (id, title) VALUES (?1, 'n')", [key(4)]).unwrap();
    assert_eq!(outbox(replica.connection()).len(), 4, "capture goes on");
    let err = replica
        .connection()
        .execute("INSERT INTO _ferry_outbox (tbl, pk, op, wall_ms) VALUES ('notes', 'x', 'X', 0)", [])
        .unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
    let pending: Vec<String> = replica.pending(10).unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(pending.len(), 4);
}

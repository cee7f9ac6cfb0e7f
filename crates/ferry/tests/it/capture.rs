//! Capture at the edges: other programs' SQLite, wide tables, exact reals, tables that
//! existed before Ferry, rebuilt tables, deletes that fire no trigger.

use std::process::Command;

use crate::*;

/// Runs SQL with the system's SQLite 3.40 (the `sqlite3` shell, else Python's module), the
/// way another program sharing the replica would.
fn system_sqlite(db: &std::path::Path, sql: &str) {
    let ok = match Command::new("sqlite3").arg(db).arg(sql).status() {
        Ok(s) => s.success(),
        Err(_) => Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
            ])
            .arg(db)
            .arg(sql)
            .status()
            .unwrap()
            .success(),
    };
    assert!(ok, "system SQLite refused: {sql}");
}

#[test]
fn a_table_wider_than_sqlite_340s_function_argument_limit_is_captured_by_the_system_sqlite() {
    let env = Env::new();
    let cols: Vec<String> = (1..=150).map(|i| format!("c{i} text")).collect();
    std::fs::write(env.path("schema.sql"), format!("CREATE TABLE wide (id uuid PRIMARY KEY, {});", cols.join(", ")))
        .unwrap();
    std::fs::write(env.path("ferry.toml"), "[server]\nschema = \"schema.sql\"\n").unwrap();
    env.add_user("ann");
    let (a, b) = (env.token("ann", "a"), env.token("ann", "b"));
    let server = env.serve();
    env.sync(&server, "a.db", &a);
    let id = uuid();
    let db = env.path("a.db");
    system_sqlite(&db, &format!("INSERT INTO wide (id, c1, c150) VALUES ('{id}', 'first', 'last');"));
    system_sqlite(&db, &format!("UPDATE wide SET c75 = 'middle', c150 = 'LAST' WHERE id = '{id}';"));
    system_sqlite(&db, &format!("INSERT INTO wide (id, c2) VALUES ('{}', 'gone soon');", uuid()));
    system_sqlite(&db, "DELETE FROM wide WHERE c2 = 'gone soon';");
    env.sync(&server, "a.db", &a);
    env.sync(&server, "b.db", &b);
    let row: (String, String, String) = env
        .db("b.db")
        .query_row("SELECT c1, c75, c150 FROM wide", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    assert_eq!(row, ("first".into(), "middle".into(), "LAST".into()));
    let n: i64 = env.db("b.db").query_row("SELECT count(*) FROM wide", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn reals_travel_bit_for_bit() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    let values = [479.60756426982596_f64, 985.6906946328695, 0.1 + 0.2, 1e-300, f64::MAX];
    let mut ids = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let id = insert_jump(&phone, &p.user, i as i64, "float");
        phone.execute("UPDATE jump_log SET freefall_seconds = ?1 WHERE id = ?2", rusqlite::params![v, id]).unwrap();
        ids.push(id);
    }
    p.sync_phone();
    p.sync_laptop();
    // A delete keeps the values in the tombstone exactly too (the trigger writes them).
    let laptop = p.env.db("laptop.db");
    laptop.execute("DELETE FROM jump_log WHERE id = ?1", [&ids[0]]).unwrap();
    p.sync_laptop();
    p.sync_phone();
    for (id, v) in ids.iter().zip(values).skip(1) {
        for db in [&phone, &laptop] {
            let got: f64 =
                db.query_row("SELECT freefall_seconds FROM jump_log WHERE id = ?1", [id], |r| r.get(0)).unwrap();
            assert_eq!(got.to_bits(), v.to_bits(), "{v}");
        }
    }
    // The deleted row's tombstone holds the exact value on both sides: written by the
    // laptop's delete trigger, and received by the phone.
    for db in [&phone, &laptop] {
        let dead: String = db.query_row("SELECT dead FROM _ferry_rows WHERE pk = ?1", [&ids[0]], |r| r.get(0)).unwrap();
        let dead: serde_json::Value = serde_json::from_str(&dead).unwrap();
        let got: f64 = dead["freefall_seconds"].as_str().unwrap().parse().unwrap();
        assert_eq!(got.to_bits(), values[0].to_bits(), "{dead}");
    }
    assert_eq!(jumps(&phone), jumps(&laptop));
}

#[test]
fn rows_that_existed_before_the_first_sync_are_adopted_and_synced() {
    let p = Pair::new();
    // A third file whose application created the table and rows before Ferry ever ran.
    let ddl: String = p
        .env
        .db("laptop.db")
        .query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jump_log'", [], |r| r.get(0))
        .unwrap();
    let old = p.env.db("old.db");
    old.execute_batch(&ddl).unwrap();
    let kept = insert_jump(&old, &p.user, 1, "written before ferry");
    let edited = insert_jump(&old, &p.user, 2, "also before ferry");
    drop(old);
    let token = p.env.token("alice", "old-app");
    let status = p.env.sync(&p.server, "old.db", &token);
    assert_eq!(status["pending"], 0);
    p.env.db("old.db").execute("UPDATE jump_log SET notes = 'edited after adoption' WHERE id = ?1", [&edited]).unwrap();
    p.env.sync(&p.server, "old.db", &token);
    p.sync_laptop();
    let rows = jumps(&p.env.db("laptop.db"));
    assert!(rows.iter().any(|r| r.0 == kept && r.2.as_deref() == Some("written before ferry")), "{rows:?}");
    assert!(rows.iter().any(|r| r.0 == edited && r.2.as_deref() == Some("edited after adoption")), "{rows:?}");
}

#[test]
fn capture_dropped_by_a_table_rebuild_is_reinstalled_and_nothing_written_meanwhile_is_missed() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    let first = insert_jump(&phone, &p.user, 1, "before rebuild");
    p.sync_phone();
    // SQLite's documented way to change a table: new table, copy, drop, rename.
    let ddl: String = phone
        .query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jump_log'", [], |r| r.get(0))
        .unwrap();
    phone
        .execute_batch(&format!(
            "BEGIN; {}; INSERT INTO jump_log_new SELECT * FROM jump_log; DROP TABLE jump_log;
             ALTER TABLE jump_log_new RENAME TO jump_log; COMMIT;",
            ddl.replacen("\"jump_log\"", "jump_log_new", 1)
        ))
        .unwrap();
    let triggers: i64 = phone
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'jump_log'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(triggers, 0, "the rebuild dropped the capture triggers");
    let during = insert_jump(&phone, &p.user, 2, "written while capture was gone");
    p.sync_phone();
    let after = insert_jump(&phone, &p.user, 3, "written after repair");
    p.sync_phone();
    p.sync_laptop();
    let ids: Vec<String> = jumps(&p.env.db("laptop.db")).into_iter().map(|r| r.0).collect();
    for id in [first, during, after] {
        assert!(ids.contains(&id), "{id} missing on the laptop: {ids:?}");
    }
}

#[test]
fn a_row_removed_by_insert_or_replace_through_an_application_index_is_deleted_everywhere() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    // The application allows one profile per user, with its own unique index.
    phone.execute_batch("CREATE UNIQUE INDEX one_profile ON profiles(user_id)").unwrap();
    let (p1, p2) = (uuid(), uuid());
    phone.execute("INSERT INTO profiles (id, user_id, display_name) VALUES (?1, ?2, 'first')", [&p1, &p.user]).unwrap();
    p.sync_phone();
    p.sync_laptop();
    // REPLACE removes p1 through the index; SQLite fires no delete trigger for that.
    phone
        .execute(
            "INSERT OR REPLACE INTO profiles (id, user_id, display_name) VALUES (?1, ?2, 'second')",
            [&p2, &p.user],
        )
        .unwrap();
    p.sync_phone();
    // The laptop edits the old profile meanwhile; the delete still wins, and the phone's
    // pull does not trip over its unique index.
    p.env.db("laptop.db").execute("UPDATE profiles SET email = 'x@example.com' WHERE id = ?1", [&p1]).unwrap();
    p.sync_laptop();
    p.sync_phone();
    p.sync_laptop();
    for db in ["phone.db", "laptop.db"] {
        let ids: Vec<String> = p
            .env
            .db(db)
            .prepare("SELECT id FROM profiles")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ids, vec![p2.clone()], "{db}");
    }
}

#[test]
fn a_write_with_a_key_that_is_not_text_is_set_aside_and_the_rest_syncs() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    phone
        .execute(
            "INSERT INTO jump_log (id, user_id, jump_number, jumped_at) VALUES (randomblob(16), ?1, 1, '2026-11-21T10:00:00Z')",
            [&p.user],
        )
        .unwrap();
    let good = insert_jump(&phone, &p.user, 2, "fine");
    let status = p.sync_phone();
    assert_eq!(status["rejected"], 1);
    let reason: String = phone.query_row("SELECT reason FROM _ferry_rejected", [], |r| r.get(0)).unwrap();
    assert!(reason.contains("the primary key is blob"), "{reason}");
    p.sync_laptop();
    assert_eq!(jumps(&p.env.db("laptop.db")).into_iter().map(|r| r.0).collect::<Vec<_>>(), vec![good]);
}

//! The push queue read in batches while earlier batches are still out (as a pipelined push
//! reads it): every pending row comes exactly once, also when reading a batch re-stamps one
//! of its rows.

use std::collections::BTreeMap;

use ferry_client::Replica;
use ferry_core::schema::Schema;
use ferry_protocol::SchemaResponse;

/// A replica in `dir` with the schema `ddl` installed.
fn replica(dir: &tempfile::TempDir, ddl: &str) -> Replica {
    let schema = Schema::parse(ddl, &BTreeMap::new()).unwrap();
    let mut replica = Replica::open(&dir.path().join("r.db")).unwrap();
    replica.install_schema(&SchemaResponse::from_schema(&schema)).unwrap();
    replica
}

fn key(i: u32) -> String {
    format!("01900000-0000-7000-8000-{i:012}")
}

#[test]
fn batches_read_one_after_another_give_every_row_once_even_when_one_is_restamped() {
    let dir = tempfile::tempdir().unwrap();
    let mut replica = replica(&dir, "CREATE TABLE notes (id uuid PRIMARY KEY, title text);");
    for i in 1..=7 {
        replica.connection().execute("INSERT INTO notes (id, title) VALUES (?1, 'n')", [key(i)]).unwrap();
    }
    replica.stamp().unwrap();
    // Row 2 disappears without the capture triggers seeing it (as an `INSERT OR REPLACE`
    // through an application's unique index does): reading its batch records the delete
    // under a new stamp.
    replica
        .connection()
        .execute_batch(&format!(
            "INSERT INTO _ferry_apply (busy) VALUES (1); DELETE FROM notes WHERE id = '{}'; DELETE FROM _ferry_apply;",
            key(2)
        ))
        .unwrap();

    let (mut seen, mut end) = (Vec::new(), None);
    loop {
        let (rows, next) = replica.pending_after(2, None, end.as_ref()).unwrap();
        if rows.is_empty() {
            break;
        }
        seen.extend(rows.into_iter().map(|r| (r.key, r.state.is_alive())));
        end = next;
    }
    let mut keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    let expected: Vec<String> = (1..=7).map(key).collect();
    assert_eq!(keys, expected.iter().map(String::as_str).collect::<Vec<_>>(), "each row once: {seen:?}");
    assert!(seen.iter().any(|(k, alive)| *k == key(2) && !alive), "row 2 goes as a delete: {seen:?}");
}

/// A large outbox stamped chunk by chunk while batches are read (as a push does): a row
/// with a write still waiting in the unstamped part is not read with its newer values under
/// its older clocks; it comes once, after that write is stamped, with it.
#[test]
fn a_row_written_again_later_in_a_large_outbox_is_read_once_its_last_write_is_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let mut replica = replica(&dir, "CREATE TABLE notes (id uuid PRIMARY KEY, title text);");
    let n = 3 * ferry_client::replica::STAMP_CHUNK as u32;
    {
        let conn = replica.connection();
        conn.execute_batch("BEGIN").unwrap();
        for i in 1..=n {
            conn.execute("INSERT INTO notes (id, title) VALUES (?1, 'first')", [key(i)]).unwrap();
        }
        // Row 1's second write lands in the last chunk.
        conn.execute("UPDATE notes SET title = 'second' WHERE id = ?1", [key(1)]).unwrap();
        conn.execute_batch("COMMIT").unwrap();
    }
    let mut stamping = replica.start_stamping().unwrap();
    assert!(stamping.is_some(), "{n} entries are more than one chunk");
    let (mut seen, mut end) = (Vec::new(), None);
    loop {
        let (rows, next) = replica.pending_while_stamping(500, None, end.as_ref(), stamping.as_mut()).unwrap();
        if rows.is_empty() && stamping.is_none() {
            break;
        }
        for r in rows {
            if r.key == key(1) {
                assert!(stamping.is_none(), "row 1 read while its second write was not stamped");
                assert_eq!(r.state.cols["title"].value, ferry_core::Value::Text("second".into()));
            }
            seen.push(r.key);
        }
        end = next.or(end);
        if let Some(s) = stamping.as_mut()
            && !replica.stamp_next(s).unwrap()
        {
            stamping = None;
        }
    }
    assert_eq!(seen.len(), n as usize, "every row once");
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), n as usize, "no row twice");
}

/// A row inserted and not written since (stamped by the fast path for bulk inserts) reads
/// back as the general rule makes it: every column at the insert's clock, each replacing
/// nothing, from an empty version.
#[test]
fn a_freshly_inserted_row_is_stamped_whole_with_every_column_new() {
    let dir = tempfile::tempdir().unwrap();
    let mut replica = replica(&dir, "CREATE TABLE notes (id uuid PRIMARY KEY, title text, n integer);");
    replica.connection().execute("INSERT INTO notes (id, title) VALUES (?1, 'hello')", [key(1)]).unwrap();
    let rows = replica.pending(10).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let at = row.state.exists.at;
    assert!(row.state.is_alive() && at != ferry_core::Hlc::ZERO);
    assert_eq!(row.state.cols["title"].value, ferry_core::Value::Text("hello".into()));
    assert_eq!(row.state.cols["n"].value, ferry_core::Value::Null);
    assert!(row.state.cols.values().all(|c| c.at == at), "{:?}", row.state);
    let zero: BTreeMap<String, ferry_core::Hlc> =
        [("title".to_owned(), ferry_core::Hlc::ZERO), ("n".to_owned(), ferry_core::Hlc::ZERO)].into();
    assert_eq!(row.base, zero);
    assert_eq!(row.seen, Some(ferry_core::RowState::unknown().clocks()));
}

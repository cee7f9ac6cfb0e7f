//! A full sync's restore into PostgreSQL copies the rows the store holds nothing of (`COPY`,
//! the table locked against other writers) and merges the rest: what it copies reads back
//! exactly as sent, whatever the values, and no writer slips in between.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_core::{Hlc, RowState, SiteId, Value};
use ferry_store::{IncomingRow, PgStore, Principal, RestoreStep, Store};

use crate::pg_capture::{connect, device};
use crate::suite::{at, key};

fn schema() -> ferry_core::schema::Schema {
    ferry_core::schema::Schema::parse(
        "CREATE TABLE m (id uuid PRIMARY KEY, t text, n integer, b bigint, r real, f boolean,
           at timestamptz, d date, doc jsonb, pic bytea);",
        &BTreeMap::new(),
    )
    .unwrap()
}

fn row(i: u32, values: &[(&str, Value)], t: Hlc) -> IncomingRow {
    let state = RowState::inserted(values.iter().map(|(c, v)| ((*c).to_owned(), v.clone())), t);
    IncomingRow { table: "m".into(), key: key(i), state, seen: None, if_version: None }
}

async fn peer(store: &PgStore) -> Principal {
    let mut p = device(store, "main-server", "main").await;
    p.peer = true;
    p
}

async fn restore(store: &PgStore, who: &Principal, steps: Vec<RestoreStep>) -> ferry_store::Restored {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let sending = async move {
        for s in steps {
            tx.send(s).await.unwrap();
        }
    };
    let (done, ()) = tokio::join!(store.restore(who, rx), sending);
    done.unwrap()
}

#[tokio::test]
async fn rows_copied_in_read_back_exactly_as_sent() {
    let store = PgStore::open(&ferry_pgtemp::PgCluster::fresh_db(), schema()).await.unwrap();
    let who = peer(&store).await;
    let text = |s: &str| Value::Text(s.into());
    let mut sent = vec![
        row(
            1,
            &[
                ("t", text("tab\there, new\nline, back\\slash, \\N and \r return")),
                ("n", Value::Integer(-2_147_483_648)),
                ("b", Value::Integer(i64::MAX)),
                ("r", Value::Real(0.1)),
                ("f", Value::Integer(1)),
                ("at", text("2026-12-06T05:30:00.123+01:00")),
                ("d", text("2026-12-06")),
                ("doc", text("{\"b\": [1, 2], \"a\": \"x\\ty\"}")),
                ("pic", Value::Blob(vec![0, 0x5c, 0xff, b'\t', b'\n'])),
            ],
            at(1, 7),
        ),
        row(2, &[("t", Value::Null), ("r", Value::Real(1e300)), ("f", Value::Integer(0))], at(2, 7)),
        row(3, &[("r", Value::Real(f64::INFINITY)), ("pic", Value::Blob(Vec::new())), ("t", text(""))], at(3, 7)),
        row(4, &[("r", Value::Real(-2.5e-300)), ("t", text("ünïcödé ✓"))], at(4, 7)),
    ];
    // A tombstone the store never heard of is copied too, with its last values.
    let mut gone = row(5, &[("t", text("deleted\tbefore"))], at(5, 7));
    gone.state.delete(at(6, 7));
    sent.push(gone);
    // Columns written at another time than the rest of the row keep their own clocks.
    sent[1].state.update([("n".to_owned(), Value::Integer(7))], at(9, 8));
    let done = restore(&store, &who, vec![RestoreStep::Rows(sent.clone()), RestoreStep::Commit]).await;
    assert!(done.committed);
    assert_eq!((done.rows, done.changed), (5, 5));
    let keys: Vec<String> = sent.iter().map(|r| r.key.clone()).collect();
    let back: BTreeMap<String, RowState> = store.states("m", keys).await.unwrap().into_iter().collect();
    for r in &sent {
        assert_eq!(back.get(&r.key), Some(&r.state), "{} read back as sent", r.key);
    }
    // The same rows pulled by a device, through the application table and its texts.
    let ann = device(&store, "ann", "phone").await;
    let (pulled, _) = crate::pg_capture::pull_all(&store, &ann, "").await;
    for r in &sent {
        assert_eq!(pulled.get(&r.key), Some(&r.state), "{} pulled as sent", r.key);
    }
    // What the peer brought is its own: not sent back to it.
    let (theirs, _) = crate::pg_capture::pull_all(&store, &who, "").await;
    assert!(theirs.is_empty(), "{theirs:?}");
}

#[tokio::test]
async fn an_application_row_without_bookkeeping_is_merged_over_not_copied_beside() {
    let url = ferry_pgtemp::PgCluster::fresh_db();
    let store = PgStore::open(&url, schema()).await.unwrap();
    let who = peer(&store).await;
    // Written with the capture off: the row has no bookkeeping yet.
    let db = connect(&url).await;
    db.batch_execute(&format!(
        "BEGIN; SET LOCAL ferry.applying = 'on'; INSERT INTO m (id, t) VALUES ('{}', 'untracked'); COMMIT;",
        key(1)
    ))
    .await
    .unwrap();
    let sent = vec![row(1, &[("t", Value::Text("restored".into()))], at(1, 7)), row(2, &[], at(2, 7))];
    let done = restore(&store, &who, vec![RestoreStep::Rows(sent), RestoreStep::Commit]).await;
    assert!(done.committed);
    let t: String = db.query_one(&format!("SELECT t FROM m WHERE id = '{}'", key(1)), &[]).await.unwrap().get(0);
    assert_eq!(t, "restored");
    let n: i64 = db.query_one("SELECT count(*) FROM m", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_wait_for_a_table_being_restored_and_then_merge_with_it() {
    let url = ferry_pgtemp::PgCluster::fresh_db();
    let store = PgStore::open(&url, schema()).await.unwrap();
    let who = peer(&store).await;
    let ann = device(&store, "ann", "phone").await;
    let db = connect(&url).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let restoring = {
        let (store, who) = (store.clone(), who.clone());
        tokio::spawn(async move { store.restore(&who, rx).await.unwrap() })
    };
    // The restore has copied key 1 in (not committed) when ann pushes a newer version of it.
    let old = row(1, &[("t", Value::Text("restored".into())), ("n", Value::Integer(1))], at(1, 7));
    tx.send(RestoreStep::Rows(vec![old])).await.unwrap();
    tx.send(RestoreStep::Rows(vec![row(2, &[], at(2, 7))])).await.unwrap();
    // A step received is not yet a step done: the pushes start once the restore holds the
    // table's lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let held: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                 WHERE c.relname = 'm' AND l.mode = 'ExclusiveLock' AND l.granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if held > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the restore never locked the table");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let site = SiteId(0xa11c);
    let mut newer = row(1, &[("t", Value::Text("pushed".into()))], Hlc::new(1_700_000_000_050, 0, site));
    newer.state.cols.retain(|c, _| c == "t");
    let other = row(9, &[("t", Value::Text("another row".into()))], Hlc::new(1_700_000_000_060, 0, site));
    let push = |batch: &'static str, r: IncomingRow| {
        let (store, ann) = (store.clone(), ann.clone());
        tokio::spawn(async move { store.push(&ann, batch, None, vec![r]).await })
    };
    let (pushing, elsewhere) = (push("b1", newer), push("b2", other));
    // Both pushes wait for the restore's lock, even the one of a row it does not hold;
    // then the restore commits.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting >= 2 {
            break;
        }
        assert!(!elsewhere.is_finished(), "a push went through while the table was being restored");
        assert!(std::time::Instant::now() < deadline, "the pushes never waited for the restore");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tx.send(RestoreStep::Commit).await.unwrap();
    assert!(restoring.await.unwrap().committed);
    pushing.await.unwrap().unwrap();
    elsewhere.await.unwrap().unwrap();
    let back = store.states("m", vec![key(1)]).await.unwrap();
    let state = &back[0].1;
    assert_eq!(state.cols["t"].value, Value::Text("pushed".into()), "the newer push wins");
    assert_eq!(state.cols["n"].value, Value::Integer(1), "the restored column stays");
}

//! The PostgreSQL store beside other applications: pushes racing direct SQL writes, the
//! capture triggers under other roles and altered tables, TRUNCATE, owner changes.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_core::{RowState, Value};

use crate::suite::{at, key, note};
use ferry_store::{PgStore, Principal, Store};
use tokio_postgres::{Client, NoTls};

pub async fn connect(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

pub async fn device(store: &PgStore, user: &str, name: &str) -> Principal {
    let _ = store.add_user(user).await;
    let token = store.create_token(user, name).await.unwrap();
    store.authenticate(&token.token).await.unwrap().unwrap()
}

pub async fn pull_all(store: &PgStore, who: &Principal, from: &str) -> (BTreeMap<String, RowState>, String) {
    let mut out = BTreeMap::new();
    let mut cursor = from.to_owned();
    loop {
        let page = store.pull(who, &cursor, 100).await.unwrap();
        cursor = page.cursor;
        out.extend(page.rows.into_iter().map(|r| (r.key, r.state)));
        if !page.more {
            return (out, cursor);
        }
    }
}

/// Waits until `n` other sessions of this database wait for a lock: the pushes started
/// beside a held transaction have reached it (a push that gives way after its lock timeout
/// and retries waits again, so the count is looked at often).
async fn until_waiting_for_locks(db: &Client, n: i64) {
    until_waiting_for_locks_or(db, n, || false).await
}

/// As [`until_waiting_for_locks`], or until `done` holds (a push that needed no lock the
/// held transaction has, and finished).
async fn until_waiting_for_locks_or(db: &Client, n: i64, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if done() {
            return;
        }
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{n} push(es) never waited for the held lock within 20 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn setup() -> (String, PgStore, Principal, Client) {
    let url = ferry_pgtemp::PgCluster::fresh_db();
    let store = PgStore::open(&url, crate::schema()).await.unwrap();
    let ann = device(&store, "ann", "phone").await;
    let db = connect(&url).await;
    (url, store, ann, db)
}

async fn body(db: &Client, k: &str) -> String {
    db.query_one("SELECT body FROM notes WHERE id = $1::text::uuid", &[&k]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_that_waits_for_a_direct_update_does_not_undo_it() {
    let (url, store, ann, db) = setup().await;
    let base = note(1, &ann.user_id, "base", at(1, 1));
    store.push(&ann, "b1", None, vec![base.clone()]).await.unwrap();
    let mut direct = connect(&url).await;
    let tx = direct.transaction().await.unwrap();
    tx.execute("UPDATE notes SET body = 'direct' WHERE id = $1::text::uuid", &[&key(1)]).await.unwrap();
    let mut upd = base.clone();
    upd.state.update([("n".to_owned(), Value::Integer(7))], at(2, 1));
    let (s, a) = (store.clone(), ann.clone());
    let push = tokio::spawn(async move { s.push(&a, "b2", None, vec![upd]).await });
    until_waiting_for_locks(&db, 1).await;
    tx.commit().await.unwrap();
    push.await.unwrap().unwrap();
    assert_eq!(body(&db, &key(1)).await, "direct");
    let n: Option<i32> =
        db.query_one("SELECT n FROM notes WHERE id = $1::text::uuid", &[&key(1)]).await.unwrap().get(0);
    assert_eq!(n, Some(7), "both column writes survive");
    let (rows, _) = pull_all(&store, &ann, "").await;
    assert_eq!(rows[&key(1)].cols["body"].value, Value::Text("direct".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_racing_a_direct_insert_of_the_same_key_merges_with_it() {
    let (url, store, ann, db) = setup().await;
    let mut direct = connect(&url).await;
    let tx = direct.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO notes (id, user_id, body) VALUES ($1::text::uuid, $2::text::uuid, 'direct')",
        &[&key(2), &ann.user_id],
    )
    .await
    .unwrap();
    // The pushed insert's clock (2023) is older than the direct insert's (now).
    let row = note(2, &ann.user_id, "pushed", at(1, 1));
    let (s, a) = (store.clone(), ann.clone());
    let push = tokio::spawn(async move { s.push(&a, "p", None, vec![row]).await });
    until_waiting_for_locks(&db, 1).await;
    tx.commit().await.unwrap();
    push.await.unwrap().unwrap();
    assert_eq!(body(&db, &key(2)).await, "direct", "the newer direct insert wins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pushes_creating_the_same_key_keep_the_newer_one() {
    let (url, store, _ann, db) = setup().await;
    let phone = device(&store, "ann", "phone2").await;
    let laptop = device(&store, "ann", "laptop").await;
    // Hold the batch record's table so that the phone's push stops at its last statement, its
    // row written and not committed (it gives way after the push's lock timeout and retries).
    let mut holder = connect(&url).await;
    let hold = holder.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE _ferry_batches IN SHARE MODE").await.unwrap();
    let newer = note(3, &phone.user_id, "from phone (newer)", at(100, 1));
    let older = note(3, &laptop.user_id, "from laptop (older)", at(50, 2));
    let (s1, p1) = (store.clone(), phone.clone());
    let a = tokio::spawn(async move { s1.push(&p1, "a", None, vec![newer]).await });
    until_waiting_for_locks(&db, 1).await;
    let (s2, p2) = (store.clone(), laptop.clone());
    let b = tokio::spawn(async move { s2.push(&p2, "b", None, vec![older]).await });
    // The laptop's push either waits behind the phone's or is through already.
    until_waiting_for_locks_or(&db, 2, || b.is_finished()).await;
    hold.commit().await.unwrap();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(body(&db, &key(3)).await, "from phone (newer)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_multi_row_updates_never_fail_because_of_concurrent_pushes() {
    let (url, store, ann, _db) = setup().await;
    let rows: Vec<_> = (0..100).map(|i| note(1000 + i, &ann.user_id, "x", at(1, 1))).collect();
    store.push(&ann, "seed", None, rows).await.unwrap();
    let direct = connect(&url).await;
    // The updates go on until pushes have succeeded while they ran (at least 40 updates),
    // so the two overlap however the machine schedules them.
    let pushed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = pushed.clone();
    let updates = tokio::spawn(async move {
        let mut failures = Vec::new();
        let mut runs = 0;
        while runs < 40 || (seen.load(std::sync::atomic::Ordering::SeqCst) < 5 && runs < 5_000) {
            if let Err(e) = direct.execute("UPDATE notes SET n = coalesce(n, 0) + 1", &[]).await {
                failures.push(e.as_db_error().map_or(e.to_string(), |d| d.message().to_owned()));
            }
            runs += 1;
        }
        failures
    });
    let mut i = 0u64;
    while !updates.is_finished() {
        let rows = [(i * 7) % 100, (i * 13 + 5) % 100, (i * 31 + 11) % 100]
            .iter()
            .map(|&k| {
                let mut r = note(1000 + k as u32, &ann.user_id, "x", at(1, 1));
                r.state.update([("body".to_owned(), Value::Text(format!("p{i}")))], at(10 + i, 1));
                r
            })
            .collect();
        if store.push(&ann, &format!("p{i}"), None, rows).await.is_ok() {
            pushed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        i += 1;
    }
    let failures = updates.await.unwrap();
    assert!(failures.is_empty(), "the application's own statements failed: {failures:?}");
    let pushed = pushed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(pushed >= 5, "only {pushed} of {i} pushes went through while the updates ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncate_turns_every_row_into_a_tombstone() {
    let (_url, store, ann, db) = setup().await;
    store.push(&ann, "1", None, vec![note(5, &ann.user_id, "x", at(1, 1))]).await.unwrap();
    let (_, cursor) = pull_all(&store, &ann, "").await;
    db.batch_execute("TRUNCATE notes").await.unwrap();
    let (after, _) = pull_all(&store, &ann, &cursor).await;
    assert!(!after[&key(5)].is_alive(), "devices hear of the truncation");
    assert_eq!(after[&key(5)].cols["body"].value, Value::Text("x".into()), "the tombstone keeps the values");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capture_works_for_other_roles_other_search_paths_and_altered_tables() {
    let (url, store, ann, db) = setup().await;
    store.push(&ann, "1", None, vec![note(6, &ann.user_id, "x", at(1, 1))]).await.unwrap();
    let (_, cursor) = pull_all(&store, &ann, "").await;
    // An application role with rights on its table only, and another search_path.
    let role = format!("app_{}", std::process::id());
    db.batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO {role};"
    ))
    .await
    .unwrap();
    let app = connect(&url.replacen("postgres@", &format!("{role}@"), 1)).await;
    app.batch_execute("SET search_path = pg_catalog").await.unwrap();
    app.execute(
        "INSERT INTO public.notes (id, user_id, body) VALUES ($1::text::uuid, $2::text::uuid, 'by the app role')",
        &[&key(7), &ann.user_id],
    )
    .await
    .unwrap();
    app.execute("UPDATE public.notes SET body = 'edited by the app role' WHERE id = $1::text::uuid", &[&key(6)])
        .await
        .unwrap();
    // The application alters the table under Ferry: its own statements keep working.
    db.batch_execute("ALTER TABLE notes DROP COLUMN n").await.unwrap();
    app.execute("DELETE FROM public.notes WHERE id = $1::text::uuid", &[&key(7)]).await.unwrap();
    let alive: bool = db.query_one("SELECT alive FROM _ferry_rows WHERE pk = $1", &[&key(7)]).await.unwrap().get(0);
    assert!(!alive, "the delete was captured");
    // Ferry itself now reads a table that no longer matches its schema, and says so.
    let err = store.pull(&ann, &cursor, 100).await.unwrap_err().to_string();
    assert!(err.contains("changed under Ferry"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_writes_breaking_the_schema_are_refused_with_the_column_named() {
    let (_url, _store, _ann, db) = setup().await;
    // Tables adopted from an application may lack the schema's constraints; the capture
    // enforces them.
    db.batch_execute("ALTER TABLE notes ALTER COLUMN user_id DROP NOT NULL").await.unwrap();
    let err =
        db.execute("INSERT INTO notes (id, body) VALUES ($1::text::uuid, 'no owner')", &[&key(8)]).await.unwrap_err();
    let msg = err.as_db_error().unwrap().message().to_owned();
    assert!(msg.contains("notes.user_id is NOT NULL"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_moved_to_another_cluster_serves_every_row_again_and_cursors_start_over() {
    use ferry_pgtemp::PgCluster;
    let (a, b) = (PgCluster::start().unwrap(), PgCluster::start().unwrap());
    let url_a = a.create_db("app").unwrap();
    let store = PgStore::open(&url_a, crate::schema()).await.unwrap();
    let ann = device(&store, "ann", "phone").await;
    let rows: Vec<_> = (0..5).map(|i| note(100 + i, &ann.user_id, "before the move", at(1, 1))).collect();
    store.push(&ann, "1", None, rows).await.unwrap();
    let (_, old_cursor) = pull_all(&store, &ann, "").await;
    drop(store);
    // Move: dump from cluster a, restore into cluster b (whose transaction ids are unrelated).
    let file = b.dir().join("app.sql");
    a.dump("app", &file).unwrap();
    let url_b = b.create_db("app").unwrap();
    b.restore("app", &file).unwrap();
    let store = PgStore::open(&url_b, crate::schema()).await.unwrap();
    let (fresh, _) = pull_all(&store, &ann, "").await;
    assert_eq!(fresh.len(), 5, "a new device receives every row");
    let (again, cursor) = pull_all(&store, &ann, &old_cursor).await;
    assert_eq!(again.len(), 5, "an old cursor starts over");
    store.push(&ann, "2", None, vec![note(200, &ann.user_id, "after the move", at(2, 1))]).await.unwrap();
    let (new, _) = pull_all(&store, &ann, &cursor).await;
    assert_eq!(new.keys().collect::<Vec<_>>(), vec![&key(200)], "and then continues normally");
}

/// Autovacuum analyzes a growing table a minute late at best; without statistics the
/// planner read each batch's stored rows by scanning the whole table. A store that has
/// written enough rows analyzes the tables it wrote itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_analyzes_the_tables_it_grew() {
    let (_url, store, ann, db) = setup().await;
    let analyzed = async |table: &str| -> bool {
        db.query_one("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = $1", &[&table])
            .await
            .unwrap()
            .get(0)
    };
    assert!(!analyzed("_ferry_rows").await && !analyzed("notes").await, "a new store is not analyzed yet");
    for batch in 0..12u32 {
        let rows = (0..1000).map(|i| note(batch * 1000 + i, &ann.user_id, "bulk", at(1, 1))).collect();
        store.push(&ann, &format!("b{batch}"), None, rows).await.unwrap();
    }
    let started = std::time::Instant::now();
    while !(analyzed("_ferry_rows").await && analyzed("notes").await) {
        assert!(started.elapsed() < Duration::from_secs(30), "12 000 rows pushed, and no ANALYZE ran within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let estimate: f64 =
        db.query_one("SELECT reltuples::float8 FROM pg_class WHERE relname = 'notes'", &[]).await.unwrap().get(0);
    assert!(estimate >= 10_000.0, "the planner's row estimate for notes is {estimate}, expected about 12 000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_writes_over_the_limits_or_of_nan_are_refused_like_pushes() {
    let url = ferry_pgtemp::PgCluster::fresh_db();
    let schema = ferry_core::schema::Schema::parse(
        "CREATE TABLE m (id text PRIMARY KEY, r real, t text, doc jsonb, pic bytea);",
        &BTreeMap::new(),
    )
    .unwrap();
    let store = PgStore::open(&url, schema).await.unwrap();
    let ann = device(&store, "ann", "phone").await;
    let db = connect(&url).await;
    let refused = |sql: &'static str, words: &'static str| {
        let db = &db;
        async move {
            let err = db.batch_execute(sql).await.unwrap_err();
            let msg = err.as_db_error().unwrap().message().to_owned();
            assert!(msg.contains(words), "{sql}: {msg}");
        }
    };
    refused("INSERT INTO m (id, r) VALUES ('nan', 'NaN')", "m.r is NaN").await;
    refused("INSERT INTO m (id, r) VALUES ('neg', '-0')", "m.r is -0").await;
    refused("INSERT INTO m (id) VALUES (repeat('k', 1025))", "a key may be at most 1024 bytes").await;
    refused("INSERT INTO m (id, t) VALUES ('big', repeat('v', 1048577))", "a value may be at most 1048576").await;
    refused(
        "INSERT INTO m (id, pic) VALUES ('pic', decode(repeat('00', 1048577), 'hex'))",
        "m.pic holds 1048577 bytes",
    )
    .await;
    // At the limits, and infinities, the writes go through and reach devices bit for bit.
    db.batch_execute(
        "INSERT INTO m (id, r, t, pic) VALUES (repeat('k', 1024), 'Infinity', repeat('v', 1048576), decode(repeat('00', 1048576), 'hex'));
         INSERT INTO m (id, r) VALUES ('minus', '-Infinity'), ('zero', '0');",
    )
    .await
    .unwrap();
    let (rows, _) = pull_all(&store, &ann, "0").await;
    let real = |k: &str| match rows[k].cols["r"].value {
        Value::Real(r) => r,
        ref other => panic!("{k}: {other:?}"),
    };
    assert_eq!(real(&"k".repeat(1024)), f64::INFINITY);
    assert_eq!(real("minus"), f64::NEG_INFINITY);
    assert_eq!(real("zero").to_bits(), 0f64.to_bits());
    assert_eq!(rows.len(), 3, "nothing of the refused writes was captured");
}

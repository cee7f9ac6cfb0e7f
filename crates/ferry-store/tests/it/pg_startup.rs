//! Opening the PostgreSQL store (`ferry serve`, `ferry user add`, `ferry token create`)
//! beside an application's transaction that is held open: the open waits for it when it must
//! change a table, changes nothing when everything is current, and never aborts it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_core::Value;
use ferry_core::schema::Schema;
use ferry_store::{PgStore, Result};
use tokio_postgres::Client;

use crate::pg_capture::{connect, device, pull_all};
use crate::suite::key;

/// The shared test schema with a column more in `notes`, as after a schema change.
fn schema_with_mood() -> Schema {
    Schema::parse(
        "CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid NOT NULL, body text, n integer, mood text);
         CREATE TABLE tags (id uuid PRIMARY KEY, name text NOT NULL);",
        &BTreeMap::new(),
    )
    .unwrap()
}

/// An application's connection in a transaction that has written to `notes` (as `BEGIN;
/// UPDATE notes …` in psql), and its backend's pid.
async fn hold(url: &str, update: &str) -> (Client, i32) {
    let app = connect(url).await;
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    app.batch_execute("BEGIN").await.unwrap();
    app.batch_execute(update).await.unwrap();
    (app, pid)
}

async fn insert_note(app: &Client, i: u32, body: &str) {
    app.execute(
        "INSERT INTO notes (id, user_id, body) VALUES ($1::text::uuid, $2::text::uuid, $3)",
        &[&key(i), &key(999), &body],
    )
    .await
    .unwrap_or_else(|e| panic!("the application's insert failed: {}", e.as_db_error().map_or("", |d| d.message())));
}

/// Waits until some other backend waits for a lock that backend `pid` holds.
async fn until_someone_waits_for(db: &Client, pid: i32) {
    let started = Instant::now();
    loop {
        let waiting: bool = db
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))", &[&pid])
            .await
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the open never waited for the application's transaction");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn finished(open: tokio::task::JoinHandle<Result<PgStore>>) -> PgStore {
    tokio::time::timeout(Duration::from_secs(60), open)
        .await
        .expect("the open still waits a minute after the application's transaction ended")
        .unwrap()
        .expect("the open failed")
}

/// The reproduction: the application holds a transaction that wrote to `notes` and
/// writes to it again while the open waits for it. Before, the open held `_ferry_rows`
/// (`CREATE INDEX IF NOT EXISTS`) while it waited for `notes`, and the application's second
/// write waited for `_ferry_rows` through the capture trigger: a deadlock that aborted one
/// of them.
async fn open_beside_a_transaction_that_writes_twice(url: &str, schema: Schema, first_write: &str) -> PgStore {
    let db = connect(url).await;
    let (app, pid) = hold(url, first_write).await;
    let open = tokio::spawn({
        let url = url.to_owned();
        async move { PgStore::open(&url, schema).await }
    });
    until_someone_waits_for(&db, pid).await;
    insert_note(&app, 2, "written while the store opened").await;
    app.batch_execute("COMMIT").await.expect("the application's transaction commits");
    finished(open).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_open_waits_for_an_application_transaction_and_adopts_its_rows() {
    let url = ferry_pgtemp::PgCluster::fresh_db();
    let db = connect(&url).await;
    // The application's own table, made before Ferry ever opened the database.
    db.batch_execute("CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid NOT NULL, body text, n integer)")
        .await
        .unwrap();
    insert_note(&db, 1, "before ferry").await;
    let update = format!("UPDATE notes SET body = 'edited before ferry' WHERE id = '{}'", key(1));
    let store = open_beside_a_transaction_that_writes_twice(&url, crate::schema_shared(), &update).await;
    let ann = device(&store, "ann", "phone").await;
    let (rows, _) = pull_all(&store, &ann, "").await;
    let body = |i| rows[&key(i)].cols["body"].value.clone();
    assert_eq!(body(1), Value::Text("edited before ferry".into()));
    assert_eq!(body(2), Value::Text("written while the store opened".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_that_adds_a_column_waits_for_an_application_transaction_and_aborts_nothing() {
    let url = ferry_pgtemp::PgCluster::fresh_db();
    drop(PgStore::open(&url, crate::schema_shared()).await.unwrap());
    // An UPDATE that matches no row locks the table without writing to `_ferry_rows`, so the
    // open got `_ferry_rows` before it waited for `notes`.
    let update = format!("UPDATE notes SET body = 'nobody' WHERE id = '{}'", key(404));
    let store = open_beside_a_transaction_that_writes_twice(&url, schema_with_mood(), &update).await;
    let ann = device(&store, "ann", "phone").await;
    let (rows, _) = pull_all(&store, &ann, "").await;
    assert_eq!(rows[&key(2)].cols["body"].value, Value::Text("written while the store opened".into()));
    assert_eq!(rows[&key(2)].cols["mood"].value, Value::Null, "the new column is there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_after_an_upgrade_reinstalls_capture_without_aborting_an_application_transaction() {
    // First writes that leave `_ferry_rows` alone, and one that writes to it through the capture.
    for (row, first) in [(404, "nobody"), (1, "edited")] {
        let url = ferry_pgtemp::PgCluster::fresh_db();
        drop(PgStore::open(&url, crate::schema_shared()).await.unwrap());
        let db = connect(&url).await;
        insert_note(&db, 1, "committed").await;
        // A database last opened by a Ferry that recorded no fingerprints of its DDL: the
        // bookkeeping and every table's capture are installed again.
        db.batch_execute("DELETE FROM _ferry_store WHERE key LIKE 'ddl %'").await.unwrap();
        let update = format!("UPDATE notes SET body = '{first}' WHERE id = '{}'", key(row));
        let store = open_beside_a_transaction_that_writes_twice(&url, crate::schema_shared(), &update).await;
        let ann = device(&store, "ann", "phone").await;
        let (rows, _) = pull_all(&store, &ann, "").await;
        let body = if row == 1 { first } else { "committed" };
        assert_eq!(rows[&key(1)].cols["body"].value, Value::Text(body.into()));
        assert_eq!(rows[&key(2)].cols["body"].value, Value::Text("written while the store opened".into()));
    }
}

/// The catalog rows of everything in the database's schema, with the transaction that last
/// wrote each: any DDL (a trigger or function replaced, an index or column added) changes it.
async fn catalog_versions(db: &Client) -> String {
    db.query_one(
        "SELECT string_agg(v, ', ' ORDER BY v) FROM (
           SELECT 'class ' || relname || ' ' || xmin::text AS v FROM pg_class
             WHERE relnamespace = 'public'::regnamespace
           UNION ALL SELECT 'column ' || attrelid::regclass::text || '.' || attname || ' ' || xmin::text
             FROM pg_attribute WHERE attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
           UNION ALL SELECT 'trigger ' || tgname || ' ' || xmin::text FROM pg_trigger
             WHERE tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
           UNION ALL SELECT 'function ' || proname || ' ' || xmin::text FROM pg_proc
             WHERE pronamespace = 'public'::regnamespace) x",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_a_current_database_does_no_ddl_and_never_waits_for_an_application() {
    let url = ferry_pgtemp::PgCluster::fresh_db();
    let store = PgStore::open(&url, crate::schema_shared()).await.unwrap();
    let ann = device(&store, "ann", "phone").await;
    drop(store);
    let db = connect(&url).await;
    insert_note(&db, 1, "committed").await;
    let before = catalog_versions(&db).await;
    // The application holds every lock its writes to `notes` take, the capture's on
    // `_ferry_rows` included, and holds them until the open has returned: any DDL on either
    // table would wait for it for ever.
    let (app, _) = hold(&url, &format!("UPDATE notes SET body = 'edited' WHERE id = '{}'", key(1))).await;
    let store = tokio::time::timeout(Duration::from_secs(30), PgStore::open(&url, crate::schema_shared()))
        .await
        .expect("the open waited for the application's transaction")
        .unwrap();
    assert_eq!(catalog_versions(&db).await, before, "the open changed the catalog");
    insert_note(&app, 2, "written after the open").await;
    app.batch_execute("COMMIT").await.expect("the application's transaction commits");
    let (rows, _) = pull_all(&store, &ann, "").await;
    assert_eq!(rows[&key(1)].cols["body"].value, Value::Text("edited".into()));
    assert_eq!(rows[&key(2)].cols["body"].value, Value::Text("written after the open".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_dropped_behind_ferrys_back_is_installed_again_at_the_next_open() {
    let url = ferry_pgtemp::PgCluster::fresh_db();
    let store = PgStore::open(&url, crate::schema_shared()).await.unwrap();
    let ann = device(&store, "ann", "phone").await;
    drop(store);
    let db = connect(&url).await;
    db.batch_execute("DROP TRIGGER _ferry_capture ON notes").await.unwrap();
    let store = PgStore::open(&url, crate::schema_shared()).await.unwrap();
    insert_note(&db, 3, "captured again").await;
    let (rows, _) = pull_all(&store, &ann, "").await;
    assert_eq!(rows[&key(3)].cols["body"].value, Value::Text("captured again".into()));
}

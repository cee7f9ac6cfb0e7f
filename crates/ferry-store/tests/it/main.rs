//! The store suite: one set of tests that every [`Store`] implementation must pass. Each
//! test is a generic function over the store; `suite!` instantiates them for a store.

mod feed;
mod peering;
mod pg_capture;
mod pg_refusals;
mod pg_restore;
mod pg_startup;
mod rules;
mod sharing;
mod suite;

use std::collections::BTreeMap;

use ferry_core::schema::{ConflictStrategy, Schema, TableOptions};
use ferry_store::{PgStore, SqliteStore};

/// The test schema without the `tags` table, as after a schema change that dropped it.
pub fn schema_without_tags() -> Schema {
    let mut opts = BTreeMap::new();
    opts.insert("notes".to_owned(), TableOptions { owner: Some("user_id".into()), ..TableOptions::default() });
    Schema::parse("CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid NOT NULL, body text, n integer);", &opts)
        .unwrap()
}

/// Rows of a table that left the schema stay out of pulls instead of failing them.
pub async fn rows_of_a_dropped_table_are_skipped<S: ferry_store::Store>(before: S, after: impl AsyncFnOnce() -> S) {
    use ferry_core::{Hlc, RowState, SiteId, Value};
    let user = before.add_user("ann").await.unwrap();
    let token = before.create_token(&user.id, "phone").await.unwrap();
    let ann = before.authenticate(&token.token).await.unwrap().unwrap();
    let tag = ferry_store::IncomingRow {
        table: "tags".into(),
        key: "01900000-0000-7000-8000-0000000000aa".into(),
        state: RowState::inserted([("name".to_owned(), Value::Text("x".into()))], Hlc::new(1, 0, SiteId(1))),
        seen: None,
        if_version: None,
    };
    before.push(&ann, "t", None, vec![tag]).await.unwrap();
    drop(before);
    let store = after().await;
    let page = store.pull(&ann, "", 100).await.unwrap();
    assert!(page.rows.is_empty(), "no rows of the dropped table");
}

/// The test schema with `notes` shared instead of owned.
pub fn schema_shared() -> Schema {
    Schema::parse(
        "CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid NOT NULL, body text, n integer);
         CREATE TABLE tags (id uuid PRIMARY KEY, name text NOT NULL);",
        &BTreeMap::new(),
    )
    .unwrap()
}

/// Turning on `owner` for a table that already has rows makes them private to their owners.
pub async fn the_owner_option_turned_on_later_makes_existing_rows_private<S: ferry_store::Store>(
    before: S,
    after: impl AsyncFnOnce() -> S,
) {
    use ferry_core::{Hlc, RowState, SiteId, Value};
    let mut devices = Vec::new();
    for name in ["ann", "bob"] {
        let user = before.add_user(name).await.unwrap();
        let token = before.create_token(&user.id, "phone").await.unwrap();
        devices.push((user.id, token.token));
    }
    let ann = before.authenticate(&devices[0].1).await.unwrap().unwrap();
    let note = ferry_store::IncomingRow {
        table: "notes".into(),
        key: "01900000-0000-7000-8000-0000000000bb".into(),
        state: RowState::inserted(
            [
                ("user_id".to_owned(), Value::Text(ann.user_id.clone())),
                ("body".to_owned(), Value::Text("diary".into())),
            ],
            Hlc::new(1, 0, SiteId(1)),
        ),
        seen: None,
        if_version: None,
    };
    before.push(&ann, "1", None, vec![note.clone()]).await.unwrap();
    drop(before);
    let store = after().await;
    let bob = store.authenticate(&devices[1].1).await.unwrap().unwrap();
    assert!(store.pull(&bob, "", 100).await.unwrap().rows.is_empty(), "bob no longer reads ann's note");
    assert_eq!(store.pull(&ann, "", 100).await.unwrap().rows.len(), 1);
    let mut edit = note;
    edit.state.update([("n".to_owned(), Value::Integer(1))], Hlc::new(2, 0, SiteId(1)));
    store.push(&ann, "2", None, vec![edit]).await.unwrap();
}

/// `notes` are owned (default strategy, lww); `tags` are shared and resolved by hand.
pub fn schema() -> Schema {
    let mut opts = BTreeMap::new();
    opts.insert("notes".to_owned(), TableOptions { owner: Some("user_id".into()), ..TableOptions::default() });
    opts.insert("tags".to_owned(), TableOptions { conflict: ConflictStrategy::Manual, ..TableOptions::default() });
    let strategy = |conflict| TableOptions { conflict, ..TableOptions::default() };
    opts.insert("stale".to_owned(), strategy(ConflictStrategy::RejectStale));
    opts.insert("whole".to_owned(), strategy(ConflictStrategy::RowLww));
    opts.insert(
        "kit".to_owned(),
        TableOptions { authority: Some("main".into()), ..strategy(ConflictStrategy::Authoritative) },
    );
    Schema::parse(
        "CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid NOT NULL, body text, n integer);
         CREATE TABLE tags (id uuid PRIMARY KEY, name text NOT NULL);
         CREATE TABLE stale (id uuid PRIMARY KEY, a text, b text);
         CREATE TABLE whole (id uuid PRIMARY KEY, a text, b text);
         CREATE TABLE kit (id uuid PRIMARY KEY, a text, b text);
         CREATE TABLE gauge (id uuid PRIMARY KEY, r real);",
        &opts,
    )
    .unwrap()
}

mod sqlite {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SqliteStore,
    }

    fn open() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), schema()).unwrap();
        Fixture { _dir: dir, store }
    }

    crate::suite!(open().store);

    #[tokio::test]
    async fn write_rules_decide_who_changes_which_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), crate::sharing::schema()).unwrap();
        crate::sharing::write_rules_decide_who_changes_which_rows(store).await;
    }

    #[tokio::test]
    async fn read_rules_decide_who_reads_which_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), crate::sharing::read_schema()).unwrap();
        crate::sharing::read_rules_decide_who_reads_which_rows(store).await;
    }

    #[tokio::test]
    async fn rows_of_a_dropped_table_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let before = SqliteStore::open(dir.path(), schema()).unwrap();
        let path = dir.path().to_owned();
        crate::rows_of_a_dropped_table_are_skipped(before, async || {
            SqliteStore::open(&path, schema_without_tags()).unwrap()
        })
        .await;
    }

    #[tokio::test]
    async fn the_owner_option_turned_on_later_makes_existing_rows_private() {
        let dir = tempfile::tempdir().unwrap();
        let before = SqliteStore::open(dir.path(), schema_shared()).unwrap();
        let path = dir.path().to_owned();
        crate::the_owner_option_turned_on_later_makes_existing_rows_private(before, async || {
            SqliteStore::open(&path, schema()).unwrap()
        })
        .await;
    }

    #[tokio::test]
    async fn reopening_keeps_users_rows_and_the_store_id() {
        use ferry_store::Store;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), schema()).unwrap();
        let id = store.id().to_owned();
        store.add_user("ann").await.unwrap();
        drop(store);
        let store = SqliteStore::open(dir.path(), schema()).unwrap();
        assert_eq!(store.id(), id);
        assert!(matches!(store.add_user("ann").await, Err(ferry_store::StoreError::Exists(_))));
    }

    #[test]
    fn an_existing_table_that_differs_from_the_schema_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("ferry.db")).unwrap();
        conn.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, user_id TEXT, body INTEGER)").unwrap();
        drop(conn);
        let err = SqliteStore::open(dir.path(), schema()).err().unwrap().to_string();
        assert!(err.contains("table 'notes' does not match the schema"), "{err}");
        assert!(err.contains("column 'body' is INTEGER in the file but TEXT"), "{err}");
    }
}

mod postgres {
    use super::*;

    async fn open() -> PgStore {
        PgStore::open(&ferry_pgtemp::PgCluster::fresh_db(), schema()).await.unwrap()
    }

    crate::suite!(open().await);

    /// Transaction ids are the cluster's: another database's transaction, open across the
    /// whole test, sits below every snapshot's range of the test's own. Cursors that saw the
    /// removed tombstones must still be served.
    #[tokio::test]
    async fn compaction_judges_cursors_by_its_own_transactions_beside_a_long_one_elsewhere() {
        let other = ferry_pgtemp::PgCluster::fresh_db();
        let (client, conn) = tokio_postgres::connect(&other, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute("BEGIN; SELECT pg_current_xact_id();").await.unwrap();
        let store = open().await;
        crate::peering::compaction_removes_old_tombstones_and_refuses_cursors_it_passed(&store).await;
        client.batch_execute("ROLLBACK").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_rules_decide_who_changes_which_rows() {
        let store = PgStore::open(&ferry_pgtemp::PgCluster::fresh_db(), crate::sharing::schema()).await.unwrap();
        crate::sharing::write_rules_decide_who_changes_which_rows(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_rules_decide_who_reads_which_rows() {
        let store = PgStore::open(&ferry_pgtemp::PgCluster::fresh_db(), crate::sharing::read_schema()).await.unwrap();
        crate::sharing::read_rules_decide_who_reads_which_rows(store).await;
    }

    #[tokio::test]
    async fn the_owner_option_turned_on_later_makes_existing_rows_private() {
        let url = ferry_pgtemp::PgCluster::fresh_db();
        let before = PgStore::open(&url, schema_shared()).await.unwrap();
        crate::the_owner_option_turned_on_later_makes_existing_rows_private(before, async || {
            PgStore::open(&url, schema()).await.unwrap()
        })
        .await;
    }

    #[tokio::test]
    async fn rows_of_a_dropped_table_are_skipped() {
        let url = ferry_pgtemp::PgCluster::fresh_db();
        let before = PgStore::open(&url, schema()).await.unwrap();
        crate::rows_of_a_dropped_table_are_skipped(before, async || {
            PgStore::open(&url, schema_without_tags()).await.unwrap()
        })
        .await;
    }
}

//! The store suite: one set of tests that every [`Store`] implementation must pass. Each
//! test is a generic function over the store; `suite!` instantiates them for a store.

mod feed;
mod pg_capture;
mod suite;

use std::collections::BTreeMap;

use ferry_core::schema::{Schema, TableOptions};
use ferry_store::{PgStore, SqliteStore};

pub fn schema() -> Schema {
    let mut opts = BTreeMap::new();
    opts.insert("notes".to_owned(), TableOptions { owner: Some("user_id".into()) });
    Schema::parse(
        "CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid NOT NULL, body text, n integer);
         CREATE TABLE tags (id uuid PRIMARY KEY, name text NOT NULL);",
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
}

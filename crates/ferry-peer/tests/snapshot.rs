//! A full sync's snapshot against a real (embedded) store.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ferry_core::schema::Schema;
use ferry_core::{Hlc, RowState, SiteId, Value};
use ferry_peer::Failure;
use ferry_peer::full_sync::{Exclude, Snapshot, take_snapshot};
use ferry_store::{IncomingRow, SqliteStore, Store};

/// A snapshot cancelled at its first batch ends, though the export has many batches left to
/// send (it once waited forever for a reader that had stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cancelled_at_its_first_batch_ends_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::parse("CREATE TABLE notes (id text PRIMARY KEY, n integer);", &BTreeMap::new()).unwrap();
    let store = SqliteStore::open(dir.path(), schema.clone()).unwrap();
    let user = store.add_user("ann").await.unwrap();
    let token = store.create_token(&user.id, "phone").await.unwrap();
    let ann = store.authenticate(&token.token).await.unwrap().unwrap();
    // Twelve export batches of 2 000 rows: more than the channel between export and writer holds.
    for part in 0..24 {
        let rows = (0..1000)
            .map(|i| IncomingRow {
                table: "notes".into(),
                key: format!("k{part:02}-{i:04}"),
                state: RowState::inserted([("n".to_owned(), Value::Integer(i))], Hlc::new(1_000 + part, 0, SiteId(1))),
                seen: None,
                if_version: None,
            })
            .collect();
        store.push(&ann, &format!("b{part}"), None, rows).await.unwrap();
    }
    let exclude = Exclude::parse(&schema, &BTreeMap::new()).unwrap();
    let spool = dir.path().join("spool");
    let how = Snapshot { id: "fs-test", compress: false, dir: &spool, exclude: &exclude };
    let cancel = AtomicBool::new(true);
    let taken = tokio::time::timeout(
        Duration::from_secs(30),
        take_snapshot(&store, vec!["notes".into()], &how, &cancel, &|_, _, _| {}),
    )
    .await
    .expect("the snapshot ended");
    assert!(matches!(taken, Err(Failure::Cancelled)), "{:?}", taken.err());
}

//! Values PostgreSQL refuses (a broken application constraint, a key too long to index, JSON
//! nested too deeply, text its type cannot parse) are refused as invalid with Ferry's own
//! words: never an internal error, never PostgreSQL's message, which may quote the value.

use std::collections::BTreeMap;

use ferry_core::schema::Schema;
use ferry_core::{RowState, Value};
use ferry_store::{IncomingRow, PgStore, Principal, Store, StoreError};

use crate::pg_capture::{connect, device};
use crate::suite::at;

fn schema() -> Schema {
    Schema::parse("CREATE TABLE words (id text PRIMARY KEY, body text, doc json, ref uuid);", &BTreeMap::new()).unwrap()
}

fn word(key: &str, col: &str, value: &str) -> IncomingRow {
    IncomingRow {
        table: "words".into(),
        key: key.into(),
        state: RowState::inserted([(col.to_owned(), Value::Text(value.into()))], at(1, 1)),
        seen: None,
        if_version: None,
    }
}

async fn setup() -> (String, PgStore, Principal) {
    let url = ferry_pgtemp::PgCluster::fresh_db();
    let store = PgStore::open(&url, schema()).await.unwrap();
    let ann = device(&store, "ann", "phone").await;
    (url, store, ann)
}

/// Pushes `rows`; the push must be refused as invalid, without `value` (or its start) in the
/// message, and store nothing.
async fn refused(url: &str, store: &PgStore, who: &Principal, rows: Vec<IncomingRow>, value: &str) -> String {
    let err = store.push(who, "b", None, rows).await.unwrap_err();
    let StoreError::Invalid(message) = err else { panic!("expected a refusal as invalid, got {err:?}") };
    let start: String = value.chars().take(12).collect();
    assert!(!message.contains(&start), "the message quotes the value: {message}");
    assert!(message.len() < 300, "a long message: {message}");
    let stored: i64 = connect(url).await.query_one("SELECT count(*) FROM words", &[]).await.unwrap().get(0);
    assert_eq!(stored, 0, "nothing of the batch is stored");
    message
}

/// Text that PostgreSQL's compression cannot shrink.
fn random_text(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(x % 62) as usize])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_application_unique_constraint_is_refused_by_its_name() {
    let (url, store, ann) = setup().await;
    connect(&url).await.batch_execute("ALTER TABLE words ADD CONSTRAINT words_body_key UNIQUE (body)").await.unwrap();
    let secret = "secret body 0042";
    let rows = vec![word("a", "body", secret), word("b", "body", secret)];
    let message = refused(&url, &store, &ann, rows, secret).await;
    assert!(message.contains("table 'words'") && message.contains("'words_body_key'"), "{message}");
    assert!(!message.contains("duplicate key"), "PostgreSQL's words: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_too_long_to_index_is_refused_with_the_limits_named() {
    let (url, store, ann) = setup().await;
    let key = random_text(10_000);
    let message = refused(&url, &store, &ann, vec![word(&key, "body", "x")], &key).await;
    assert!(message.contains("too large") && message.contains("docs/schema.md"), "{message}");
    assert!(!message.contains("btree") && !message.contains("index row"), "PostgreSQL's words: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_too_deeply_is_refused_with_the_limits_named() {
    let (url, store, ann) = setup().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let message = refused(&url, &store, &ann, vec![word("a", "doc", &deep)], &deep).await;
    assert!(message.contains("nested too deeply") && message.contains("docs/schema.md"), "{message}");
    assert!(!message.contains("stack depth"), "PostgreSQL's words: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_postgresql_cannot_parse_is_refused_without_being_quoted() {
    let (url, store, ann) = setup().await;
    let bad = format!("not a uuid {}", random_text(1000));
    let message = refused(&url, &store, &ann, vec![word("a", "ref", &bad)], &bad).await;
    assert!(message.contains("not valid for its column's PostgreSQL type"), "{message}");
    assert!(!message.contains("invalid input syntax"), "PostgreSQL's words: {message}");
}

//! Webhook deliveries against a real (embedded) store and a receiver on a local port.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use ferry_core::schema::Schema;
use ferry_peer::webhooks::{Event, Hooks, Webhook};
use ferry_store::{SqliteStore, Store};

/// A receiver answering every request 500: the `Ferry-Delivery` header of each, as received.
fn failing_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut delivery, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    match name.to_ascii_lowercase().as_str() {
                        "ferry-delivery" => delivery = value.trim().to_owned(),
                        "content-length" => length = value.trim().parse().unwrap(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            conn.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            let _ = tx.send(delivery);
        }
    });
    (url, rx)
}

/// A delivery no attempt of which is answered 2xx: sent once and again after each of the
/// hook's waits, with one delivery id, then written to the sync log as FAILED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_every_attempt_fails_is_logged_failed() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::parse("CREATE TABLE notes (id text PRIMARY KEY);", &BTreeMap::new()).unwrap();
    let store = SqliteStore::open(dir.path(), schema).unwrap();
    let (url, received) = failing_receiver();
    let hooks = Hooks::new(vec![Webhook {
        url: url.clone(),
        secret: "0123456789abcdef".into(),
        events: vec!["alert".into()],
        retry: vec![Duration::from_millis(50), Duration::from_millis(100)],
    }]);
    let event = Event { name: "alert.raised", peer: "cloud".into(), data: serde_json::json!({"kind": "lag"}) };
    tokio::time::timeout(Duration::from_secs(30), hooks.deliver(&store, event, 3_600_000))
        .await
        .expect("three attempts end within seconds");
    let ids: Vec<String> = received.try_iter().collect();
    assert_eq!(ids.len(), 3, "one attempt and one after each wait: {ids:?}");
    assert!(!ids[0].is_empty() && ids.iter().all(|id| *id == ids[0]), "one delivery id: {ids:?}");

    let log = store.sync_log(Some("cloud"), 10).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!((log[0].kind.as_str(), log[0].status.as_str()), ("webhook", "FAILED"));
    let said = log[0].error.as_deref().unwrap_or_default();
    let expected = format!("alert.raised {} to {url}: 3 attempts failed, the last: answered 500", ids[0]);
    assert_eq!(said, expected);
    assert!(log[0].duration_ms >= 150, "the waits were waited: {} ms", log[0].duration_ms);
}

//! The file worker's retry schedule, on tokio's paused clock: no real waiting, exact delays.
//! The server is a real HTTP server on loopback that answers every file check with "missing,
//! and uploads up to 1 byte", so each upload fails at once with the server's 413, before a
//! byte is sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::files::{self, FileEvent, FileOptions};
use ferry_client::{Remote, Replica};
use ferry_core::schema::{Schema, TableOptions};
use ferry_protocol::SchemaResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Serves `/v1/files/check` on `listener`: every asked hash is missing, and the server takes
/// uploads of at most 1 byte. Counts the checks.
async fn serve_checks(listener: tokio::net::TcpListener, checks: Arc<Mutex<u32>>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { return };
        let checks = checks.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    break (end + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let (status, body) = if head.starts_with("POST /v1/files/check ") {
                *checks.lock().unwrap() += 1;
                let asked: ferry_protocol::FileCheckRequest =
                    serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
                let files: Vec<_> =
                    asked.hashes.iter().map(|h| serde_json::json!({"hash": h, "state": "missing"})).collect();
                ("200 OK", serde_json::json!({"files": files, "max_upload_bytes": 1}))
            } else {
                ("404 Not Found", serde_json::json!({"error": "not found", "code": "not_found"}))
            };
            let body = body.to_string();
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(answer.as_bytes()).await;
        });
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_upload_is_retried_by_the_doubling_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let options = BTreeMap::from([(
        "photos".to_owned(),
        TableOptions { files: vec!["image".into()], ..TableOptions::default() },
    )]);
    let schema = Schema::parse("CREATE TABLE photos (id uuid PRIMARY KEY, image text);", &options).unwrap();
    let mut replica = Replica::open(&db).unwrap();
    replica.install_schema(&SchemaResponse::from_schema(&schema)).unwrap();
    let src = dir.path().join("photo.jpg");
    std::fs::write(&src, b"more than one byte").unwrap();
    let (hash, _) = replica.add_file(&src).unwrap();
    replica
        .connection()
        .execute("INSERT INTO photos (id, image) VALUES ('0190a3c4-0000-7000-8000-000000000001', ?1)", [&hash])
        .unwrap();
    drop(replica);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let checks = Arc::new(Mutex::new(0));
    tokio::spawn(serve_checks(listener, checks.clone()));

    let start = Instant::now();
    let attempts: Arc<Mutex<Vec<(Duration, String)>>> = Arc::default();
    let seen = attempts.clone();
    let events = move |e: FileEvent| {
        if let FileEvent::Transferred(t) = e {
            seen.lock().unwrap().push((start.elapsed(), t.error.unwrap_or_default()));
        }
    };
    let opts = FileOptions {
        retry_base: Duration::from_secs(1),
        interval: Duration::from_secs(3600),
        ..FileOptions::default()
    };
    let remote = Remote::new(&url, "fry_x").unwrap();
    // Forty seconds on the paused clock: attempts at 0, 1, 3, 7, 15 and 31 s.
    files::run(&db, &remote, opts, events, tokio::time::sleep(Duration::from_secs(40))).await.unwrap();

    let attempts = attempts.lock().unwrap().clone();
    assert!(attempts.iter().all(|(_, e)| e.contains("413")), "{attempts:?}");
    let at: Vec<Duration> = attempts.iter().map(|(at, _)| *at).collect();
    assert_eq!(at.len(), 6, "{at:?}");
    let waits: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Each wait is the schedule's (1, 2, 4, 8, 16 s), found by the worker's next look (every
    // 250 ms) after it is due.
    for (wait, due) in waits.iter().zip([1, 2, 4, 8, 16]) {
        let due = Duration::from_secs(due);
        assert!(*wait >= due && *wait <= due + Duration::from_millis(300), "waits {waits:?}");
    }
    assert_eq!(*checks.lock().unwrap(), 6, "one check per attempt, none while the file waits its turn");
    let queued = Replica::open(&db).unwrap().file_queue().unwrap();
    assert_eq!(queued[0].attempts, 6);
}

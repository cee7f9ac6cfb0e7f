//! What the benchmarks share: a real `ferry serve` on a free loopback port, the example app,
//! and the benchmark's rows. (Each benchmark uses part of it.)
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Starts `ferry serve -c ferry.toml` in `dir`; returns the process and its URL.
pub fn serve(dir: &Path) -> (Child, String) {
    let mut server = Command::new(FERRY)
        .args(["serve", "-c", "ferry.toml", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    (server, url)
}

/// A file of the example app (`examples/skydive/`).
pub fn example(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/skydive").join(file)).unwrap()
}

pub const INSERT: &str = "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, dropzone, exit_altitude_ft, notes, visible_to_connections)
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)";

/// Row `i`: ids are time-ordered like UUID v7, about 125 bytes of values in all.
pub fn row(i: usize) -> (String, String, i64, String, String, i64, String) {
    (
        format!("01900000-0000-7000-8000-{i:012x}"),
        "01900000-0000-7000-8000-00000000a11c".to_owned(),
        i as i64,
        format!("2026-11-{:02}T10:{:02}:00Z", 1 + i % 28, i % 60),
        "Skydive Spa".to_owned(),
        4000,
        "hop and pop".to_owned(),
    )
}

pub fn insert_rows(conn: &mut Connection, n: usize, user: &str) -> Duration {
    let start = Instant::now();
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx.prepare(INSERT).unwrap();
        for i in 0..n {
            let r = row(i);
            stmt.execute(params![r.0, user, r.2, r.3, r.4, r.5, r.6]).unwrap();
        }
    }
    tx.commit().unwrap();
    start.elapsed()
}
